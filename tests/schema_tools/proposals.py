"""Helpers for tests of proposed migrations: run the generated source, lint it."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from statevault.schema_tools import SchemaDiff, diff_schemas, propose_migration

REPO = pathlib.Path(__file__).resolve().parents[2]

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def schema_of(cls: type[Any]) -> dict[str, Any]:
    """The JSON Schema statevault stores for a type."""
    model_json_schema = getattr(cls, "model_json_schema", None)
    if model_json_schema is not None:
        result: dict[str, Any] = model_json_schema()
        return result
    return msgspec.json.schema(cls)


def plain(value: Any) -> Any:
    """A typed value in the plain form a migration receives."""
    return msgspec.to_builtins(value)


def diff_types(old: type[Any], new: type[Any], *, stored: list[Any] | None = None) -> SchemaDiff:
    """The diff between two types; `stored` values (typed) settle narrowing changes."""
    from statevault.schema_tools import collect_field_values  # noqa: PLC0415

    values = None
    if stored is not None:
        values = collect_field_values(schema_of(old), [plain(s) for s in stored])
    return diff_schemas(schema_of(old), schema_of(new), stored_values=values)


def proposal(old: type[Any], new: type[Any], *, stored: list[Any] | None = None) -> str:
    """The migration source proposed from `old` (version 1) to `new` (version 2)."""
    return propose_migration("order", 1, 2, diff_types(old, new, stored=stored))


def function_of(source: str) -> Migration:
    """The migration function a proposed module defines, run without registering it.

    The decorator line is left out so the function's own steps are what runs; the
    module compiles as a whole first, decorator included.
    """
    compile(source, "proposed.py", "exec")
    match = re.search(r"^def (migrate_\w+)\(", source, flags=re.MULTILINE)
    assert match is not None, source
    body = "\n".join(
        line for line in source.splitlines() if not line.startswith("@statevault.migration(")
    )
    namespace: dict[str, Any] = {"__name__": "proposed_migration"}
    exec(compile(body, "proposed.py", "exec"), namespace)
    function: Migration = namespace[match.group(1)]
    return function


def migrate(source: str, state: dict[str, Any]) -> dict[str, Any]:
    return function_of(source)(state)


def confirm_renames(source: str) -> str:
    """The source as a person who confirmed every likely rename would edit it."""
    return source.replace("confirmed=False)", "confirmed=True)")


def ruff(*args: str, source: str) -> subprocess.CompletedProcess[str]:
    try:
        import ruff as _  # noqa: F401, PLC0415
    except ImportError:
        pytest.skip("ruff is not installed (it comes with the lint dependency group)")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            *args,
            "--config",
            str(REPO / "pyproject.toml"),
            "--stdin-filename",
            "proposed_migration.py",
            "-",
        ],
        input=source,
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )


def assert_ruff_clean(source: str) -> None:
    """`ruff check` finds nothing and `ruff format` would change nothing."""
    checked = ruff("check", source=source)
    assert checked.returncode == 0, checked.stdout + checked.stderr + source
    formatted = ruff("format", "--diff", source=source)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
