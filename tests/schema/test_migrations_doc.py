"""The worked example in docs/migrations.md runs and prints what the page shows."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re
import sys
import types

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "migrations.md"


def block(marker: str) -> str:
    """The fenced code block right after `<!-- marker -->` in the page."""
    text = DOC.read_text()
    found = re.search(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.*?)```", text, flags=re.DOTALL)
    assert found is not None, f"no block marked {marker!r} in {DOC}"
    return found.group(1)


def test_worked_example_prints_what_the_page_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real module: msgspec resolves the example's annotations through sys.modules.
    module = types.ModuleType("schema_migrations_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(block("example: migrations"), str(DOC), "exec"), module.__dict__)
    assert printed.getvalue() == block("output: migrations")
