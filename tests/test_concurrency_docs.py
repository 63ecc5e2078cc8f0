"""Every example in docs/concurrency.md runs and prints what the page shows."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "concurrency.md"


def blocks(kind: str) -> dict[str, str]:
    """The fenced blocks right after `<!-- kind: name -->` markers, by name."""
    pattern = rf"<!-- {kind}: ([\w-]+) -->\n```\w*\n(.*?)```"
    return dict(re.findall(pattern, DOC.read_text(), flags=re.DOTALL))


EXAMPLES = blocks("example")


def test_every_example_shows_its_output() -> None:
    assert EXAMPLES
    assert set(blocks("output")) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs(name: str) -> None:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(EXAMPLES[name], f"{DOC}:{name}", "exec"), {"__name__": "__doc_example__"})
    assert printed.getvalue() == blocks("output")[name]
