"""The examples in docs/backends.md run and print what the page shows."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest

from postgres_support import pg_url

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "backends.md"
DOC_URL = "postgresql://postgres@127.0.0.1:5432/test?schema=docs_example"


def blocks(kind: str) -> dict[str, str]:
    """The fenced blocks right after `<!-- kind: name -->` markers, by name."""
    pattern = rf"<!-- {kind}: ([\w-]+) -->\n```\w*\n(.*?)```"
    return dict(re.findall(pattern, DOC.read_text(), flags=re.DOTALL))


@pytest.mark.postgres
def test_postgres_example(pg_schema: str) -> None:
    code = blocks("example")["postgres"]
    assert DOC_URL in code
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        # The test's own server and a fresh schema, in place of the page's.
        exec(compile(code.replace(DOC_URL, pg_url(pg_schema)), f"{DOC}:postgres", "exec"), {})
    assert printed.getvalue() == blocks("output")["postgres"]
