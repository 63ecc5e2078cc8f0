"""`statevault schema list` and `statevault schema show`."""

from __future__ import annotations

import json
import pathlib

import msgspec
from typer.testing import CliRunner

import statevault
from statevault.cli.app import app

runner = CliRunner(env={"COLUMNS": "200"})


class ItemV1(msgspec.Struct):
    sku: str
    qty: int


class OrderV1(msgspec.Struct):
    id: str
    items: list[ItemV1]


class OrderV2(msgspec.Struct):
    id: str
    items: list[ItemV1]
    total_cents: int = 0


def make_vault(tmp_path: pathlib.Path) -> str:
    path = str(tmp_path / "v.db")
    with statevault.open(path) as vault:
        vault.schema("order", OrderV1, version=1)
        vault.run("o-1", schema="order").save(OrderV1("o-1", [ItemV1("A", 1)]))
    with statevault.open(path) as vault:
        vault.schema("order", OrderV2, version=2)
        vault.run("o-2", schema="order").save(OrderV2("o-2", [], 5))
    return path


def test_list_shows_every_stored_version(tmp_path: pathlib.Path) -> None:
    path = make_vault(tmp_path)
    result = runner.invoke(app, ["schema", "list", path])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip().startswith("order")]
    assert len(lines) == 2
    assert "test_schema:OrderV1" in lines[0]
    assert "test_schema:OrderV2" in lines[1]
    result = runner.invoke(app, ["schema", "list", path, "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)["schemas"]
    with statevault.open(path) as vault:
        stored = vault.stored_schemas()
    assert [(s["name"], s["version"], s["fingerprint"]) for s in listed] == [
        (d.name, d.version, d.fingerprint) for d in stored
    ]


def test_show_prints_the_json_schema(tmp_path: pathlib.Path) -> None:
    path = make_vault(tmp_path)
    result = runner.invoke(app, ["schema", "show", path, "order", "--version", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == msgspec.json.schema(OrderV1)
    newest = runner.invoke(app, ["schema", "show", path, "order", "--format", "json-schema"])
    assert newest.exit_code == 0, newest.output
    assert json.loads(newest.output) == msgspec.json.schema(OrderV2)


def test_show_explains_what_is_missing(tmp_path: pathlib.Path) -> None:
    path = make_vault(tmp_path)
    result = runner.invoke(app, ["schema", "show", path, "order", "--version", "7"])
    assert result.exit_code == 2
    assert "stores no schema 'order' version 7" in result.output
    assert "order v1, order v2" in result.output
    result = runner.invoke(app, ["schema", "show", path, "order", "--format", "yaml"])
    assert result.exit_code == 2
    assert "unknown --format 'yaml'" in result.output


def test_list_of_a_vault_without_schemas(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "empty.db")
    with statevault.open(path) as vault:
        vault.run("x").save({"a": 1})
    result = runner.invoke(app, ["schema", "list", path])
    assert result.exit_code == 0
    assert "No schemas stored" in result.output
    missing = runner.invoke(app, ["schema", "list", str(tmp_path / "absent.db")])
    assert missing.exit_code == 2
    assert not (tmp_path / "absent.db").exists()


def test_log_json_names_each_checkpoints_schema(tmp_path: pathlib.Path) -> None:
    path = make_vault(tmp_path)
    result = runner.invoke(app, ["log", path, "o-2", "--json"])
    assert result.exit_code == 0, result.output
    (checkpoint,) = json.loads(result.output)["checkpoints"]
    assert (checkpoint["schema"], checkpoint["schema_version"]) == ("order", 2)
