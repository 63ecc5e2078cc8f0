"""`statevault schema diff` and `statevault schema show --format typescript`."""

from __future__ import annotations

import importlib
import pathlib
import sys
import uuid
from collections.abc import Iterator
from typing import Literal

import msgspec
import pytest
from typer.testing import CliRunner

import statevault
from statevault.cli.app import app
from statevault.schema_tools import to_typescript

runner = CliRunner(env={"COLUMNS": "200"})


class ItemV1(msgspec.Struct):
    sku: str
    qty: int


class OrderV1(msgspec.Struct):
    id: str
    items: list[ItemV1]
    status: str
    total: float


# Version 2, as a user's module holds it: imported by the command through --against.
MODELS = """
from typing import Literal

import msgspec


class ItemV2(msgspec.Struct):
    sku: str
    qty: float
    gift: bool = False


class OrderV2(msgspec.Struct):
    id: str
    items: list[ItemV2]
    status: Literal["open", "paid"]
    total: float
    note: str | None = None


class OrderV2Todo(msgspec.Struct):
    id: str
    items: list[ItemV2]
    status: Literal["open"]
    total_cents: int
"""


class OrderV2(msgspec.Struct):
    id: str
    items: list[ItemV1]
    status: Literal["open", "paid"]


@pytest.fixture
def name() -> str:
    """A schema name of the test's own: module-level migrations are process-wide."""
    return f"order_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def models(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's module of version-2 types in the directory the command runs in."""
    module = f"models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    yield module
    sys.modules.pop(module, None)


def make_vault(tmp_path: pathlib.Path, name: str) -> str:
    path = str(tmp_path / "v.db")
    with statevault.open(path) as vault:
        vault.schema(name, OrderV1, version=1)
        vault.run("o-1", schema=name).save(OrderV1("o-1", [ItemV1("a", 2)], "open", 9.5))
        vault.run("o-2", schema=name).save(OrderV1("o-2", [], "paid", 0.0))
        vault.run("plain").save({"status": "not an order"})
    return path


def test_diff_prints_an_automatic_migration_that_loads_old_runs(
    tmp_path: pathlib.Path, name: str, models: str
) -> None:
    path = make_vault(tmp_path, name)
    result = runner.invoke(app, ["schema", "diff", path, name, "--against", f"{models}:OrderV2"])
    assert result.exit_code == 0, result.output
    source = result.stdout
    assert f'@statevault.migration("{name}", 1, 2)' in source
    assert "TODO(statevault)" not in source
    assert f"Migration of '{name}' v1 -> v2 printed above" in result.stderr
    assert "checked against the states of 2 runs" in result.stderr
    assert "Every step was decided" in result.stderr

    # The printed module, imported for real, registers the migration: old runs load as v2.
    (tmp_path / f"{name}_migration.py").write_text(source)
    importlib.import_module(f"{name}_migration")
    new_types = importlib.import_module(models)
    with statevault.open(path) as vault:
        vault.schema(name, new_types.OrderV2, version=2)
        loaded = vault.run("o-1", schema=name).load()
        assert loaded == new_types.OrderV2("o-1", [new_types.ItemV2("a", 2.0)], "open", 9.5)
        assert isinstance(loaded.items[0].qty, float)
        assert vault.run("o-2", schema=name).load().status == "paid"


def test_diff_writes_the_module_and_lists_todos(
    tmp_path: pathlib.Path, name: str, models: str
) -> None:
    path = make_vault(tmp_path, name)
    target = tmp_path / "proposed.py"
    args = ["schema", "diff", path, name, "--against", f"{models}:OrderV2Todo", "-o", str(target)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    source = target.read_text()
    assert source.count("    # TODO(statevault): ") == 2
    stderr = " ".join(result.stderr.split())
    assert f"written to {target}" in stderr
    assert "2 steps to do before it runs" in stderr
    assert "OrderV2Todo.status: str -> Literal['open']" in stderr
    assert "1 of 2 stored values do not fit: 'paid'" in stderr
    assert "OrderV2Todo.total_cents: new required field with no default" in stderr

    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert "exists; pass --force" in again.stderr
    assert target.read_text() == source
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output


def test_sample_zero_leaves_narrowing_undecided(
    tmp_path: pathlib.Path, name: str, models: str
) -> None:
    path = make_vault(tmp_path, name)
    args = ["schema", "diff", path, name, "--against", f"{models}:OrderV2", "--sample", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "stored values were not checked" in " ".join(result.stderr.split())
    assert "checked against the states of 0 runs" in result.stderr


def test_diff_against_the_same_type_needs_no_migration(
    tmp_path: pathlib.Path, name: str, models: str
) -> None:
    path = make_vault(tmp_path, name)
    result = runner.invoke(app, ["schema", "diff", path, name, "--against", f"{__name__}:OrderV1"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "no migration is needed" in result.stderr


@pytest.mark.parametrize(
    ("against", "message"),
    [
        ("no_colon", "--against takes MODULE:TYPE"),
        ("no_such_module_here:Order", "cannot import 'no_such_module_here'"),
        (f"{__name__}:Missing", "has no 'Missing'"),
        (f"{__name__}:runner", "is a CliRunner, not a class"),
        (f"{__name__}:CliRunner", "a msgspec Struct, dataclass, Pydantic v2 model or TypedDict"),
    ],
)
def test_bad_against_is_a_usage_error(
    tmp_path: pathlib.Path, name: str, against: str, message: str
) -> None:
    path = make_vault(tmp_path, name)
    result = runner.invoke(app, ["schema", "diff", path, name, "--against", against])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert message in " ".join(result.stderr.split())


def test_unknown_schema_name_is_a_usage_error(tmp_path: pathlib.Path, name: str) -> None:
    path = make_vault(tmp_path, name)
    result = runner.invoke(
        app, ["schema", "diff", path, "nope", "--against", f"{__name__}:OrderV2"]
    )
    assert result.exit_code == 2, result.output
    assert "stores no schema" in result.stderr


def test_show_typescript(tmp_path: pathlib.Path, name: str) -> None:
    path = make_vault(tmp_path, name)
    result = runner.invoke(app, ["schema", "show", path, name, "--format", "typescript"])
    assert result.exit_code == 0, result.output
    with statevault.open(path) as vault:
        document = vault.stored_schema(name, 1)
    assert result.stdout == to_typescript(document.json_schema, name, version=1)
    suffix = name.removeprefix("order_")
    root = f"Order{suffix[0].upper()}{suffix[1:]}"  # the schema's name in PascalCase
    assert f"export type {root} = OrderV1;\n" in result.stdout
    assert "export interface OrderV1 {\n" in result.stdout
    assert "  items: ItemV1[];\n" in result.stdout
    assert "  /** integer */\n  qty: number;\n" in result.stdout
