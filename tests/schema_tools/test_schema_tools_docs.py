"""The worked example in docs/schema-tools.md runs, prints what the page shows, and works."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re
import sys
import types
from typing import Any

import msgspec
import pytest
from proposals import function_of

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schema-tools.md"


def block(marker: str) -> str:
    """The fenced code block right after `<!-- marker -->` in the page."""
    text = DOC.read_text()
    found = re.search(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.*?)```", text, flags=re.DOTALL)
    assert found is not None, f"no block marked {marker!r} in {DOC}"
    return found.group(1)


def run_example(monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    # A real module: msgspec resolves the example's annotations through sys.modules.
    module = types.ModuleType("schema_tools_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block("example: schema-diff"), str(DOC), "exec"), module.__dict__)
    return printed.getvalue(), module.__dict__


def test_example_prints_what_the_page_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    printed, _ = run_example(monkeypatch)
    assert printed == block("output: schema-diff")


def test_example_module_migrates_once_its_todos_are_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    printed, namespace = run_example(monkeypatch)
    module = printed[printed.index('"""Migration') :]
    rename, _, total = block("edit: schema-diff").strip("\n").splitlines()
    edited = module.replace(
        '    _rename(state, "customer", "customer_name", confirmed=False)', rename
    ).replace('    _todo("set the new field OrderV2.total_cents")', total)
    assert edited.count(rename) == 1
    assert edited.count(total) == 1
    migrate = function_of(edited)
    results = [msgspec.convert(migrate(dict(s)), namespace["OrderV2"]) for s in namespace["stored"]]
    first = results[0]
    assert (first.customer_name, first.total_cents, first.note) == ("Ada", 950, None)
    assert (first.items[0].qty, first.items[0].gift) == (2.0, False)
    assert [r.status for r in results] == ["open", "paid"]
