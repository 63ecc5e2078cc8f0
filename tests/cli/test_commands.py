"""The read commands (`runs`, `log`, `show`, `verify`) on small vaults, text and JSON."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import pathlib
import random
import sqlite3
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import statevault
from statevault.cli.app import app

# Wide, so that table cells do not wrap in the middle of the words the tests look for.
runner = CliRunner(env={"COLUMNS": "200"})

CEST = dt.timezone(dt.timedelta(hours=2))


@dataclasses.dataclass
class Item:
    sku: str
    qty: int


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


def order_state() -> dict[str, Any]:
    return {
        "step": 2,
        "pair": (1, 2),
        "single": ("only",),
        "tags": {3, 1, 2},
        "placed": dt.datetime(2024, 5, 1, 9, 30, tzinfo=CEST),
        "total": decimal.Decimal("12.50"),
        "blob": bytes(range(40)),
        "grid": np.arange(6, dtype=np.float64).reshape(2, 3),
        "big": np.zeros(5000, dtype=np.int32),
        "items": [Item("MUG-01", 2), Item("LAMP-07", 1)],
        "color": Color.GREEN,
        "a": {"b": [10, 20, 30]},
        "jobs": [{"id": 0}, {"id": 1, "x.y": "dotted"}],
        7: "int key",
    }


@pytest.fixture
def vault_path(tmp_path: pathlib.Path) -> pathlib.Path:
    """A SQLite vault with two runs; `order-42` holds records of classes registered in
    that vault only, so the CLI (which cannot import them) sees `UnknownRecord`s."""
    path = tmp_path / "v.db"
    with statevault.open(path) as vault:
        vault.register(Item, name="shop.Item")
        vault.register(Color, name="shop.Color")
        run = vault.run("order-42")
        run.save({"step": 1, "items": []}, meta={"note": "after fetch"})
        run.save(order_state(), meta={"note": "after pricing", "step": 2})
        vault.run("batch-7").save({"rows": list(range(5))})
    return path


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def assert_clean_error(result: Any, code: int) -> str:
    """The command failed with `code`, one message on stderr, nothing on stdout."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    return str(result.stderr)


# -- runs -------------------------------------------------------------------------------
def test_runs_text(vault_path: pathlib.Path) -> None:
    result = invoke("runs", str(vault_path))
    assert result.exit_code == 0, result.output
    assert "order-42" in result.stdout
    assert "batch-7" in result.stdout
    assert "after pricing" in result.stdout


def test_runs_json(vault_path: pathlib.Path) -> None:
    result = invoke("runs", str(vault_path), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["vault"] == str(vault_path)
    by_id = {row["run_id"]: row for row in data["runs"]}
    assert sorted(by_id) == ["batch-7", "order-42"]
    order = by_id["order-42"]
    assert order["head_seq"] == 2
    assert order["checkpoints"] == 2
    assert order["meta"] == {"note": "after pricing", "step": 2}
    assert order["state_raw_bytes"] > 0
    assert order["stored_bytes_total"] > 0
    assert dt.datetime.fromisoformat(order["saved_at"]).tzinfo is not None


def test_runs_prefix(vault_path: pathlib.Path) -> None:
    result = invoke("runs", str(vault_path), "--prefix", "order", "--json")
    assert [row["run_id"] for row in json.loads(result.stdout)["runs"]] == ["order-42"]
    result = invoke("runs", str(vault_path), "--prefix", "zzz")
    assert result.exit_code == 0
    assert "No runs" in result.stdout


# -- log --------------------------------------------------------------------------------
def test_log_text(vault_path: pathlib.Path) -> None:
    result = invoke("log", str(vault_path), "order-42")
    assert result.exit_code == 0, result.output
    assert "after fetch" in result.stdout
    assert "after pricing" in result.stdout
    assert result.stdout.index("after pricing") < result.stdout.index("after fetch")


def test_log_json(vault_path: pathlib.Path) -> None:
    result = invoke("log", str(vault_path), "order-42", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "order-42"
    seqs = [c["seq"] for c in data["checkpoints"]]
    assert seqs == [2, 1]
    newest = data["checkpoints"][0]
    assert newest["parent"] == 1
    assert len(newest["digest"]) == 64
    assert newest["meta"] == {"note": "after pricing", "step": 2}
    assert newest["raw_bytes"] > 0


def test_log_limit(vault_path: pathlib.Path) -> None:
    result = invoke("log", str(vault_path), "order-42", "--limit", "1", "--json")
    assert [c["seq"] for c in json.loads(result.stdout)["checkpoints"]] == [2]
    assert invoke("log", str(vault_path), "order-42", "--limit", "0").exit_code == 2


def test_log_shows_the_lease_in_force(vault_path: pathlib.Path) -> None:
    with statevault.open(vault_path) as vault, vault.run("order-42").lease(owner="w-7") as lease:
        text = invoke("log", str(vault_path), "order-42")
        data = json.loads(invoke("log", str(vault_path), "order-42", "--json").stdout)
    assert "leased by 'w-7'" in text.stdout
    assert f"fencing token {lease.token}" in text.stdout
    assert data["lease"] == {"owner": "w-7", "token": lease.token, "expires_at": lease.expires_at}
    after = json.loads(invoke("log", str(vault_path), "order-42", "--json").stdout)
    assert after["lease"] is None
    assert "leased by" not in invoke("log", str(vault_path), "order-42").stdout


def test_log_unknown_run(vault_path: pathlib.Path) -> None:
    message = assert_clean_error(invoke("log", str(vault_path), "nope"), 2)
    assert "nope" in message


# -- show -------------------------------------------------------------------------------
def test_show_text_keeps_types(vault_path: pathlib.Path) -> None:
    result = invoke("show", str(vault_path), "order-42")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "checkpoint 2" in out
    assert "(1, 2)" in out
    assert "('only',)" in out
    assert "{1, 2, 3}" in out
    assert "datetime(2024-05-01 09:30:00+02:00)" in out
    assert "Decimal('12.50')" in out
    assert "bytes[40]" in out
    assert "ndarray(dtype=float64, shape=(2, 3))" in out
    assert "ndarray(dtype=int32, shape=(5000))" in out
    assert "shop.Item(sku='MUG-01', qty=2)" in out
    assert "shop.Color.GREEN" in out
    assert "7: 'int key'" in out


def test_show_json(vault_path: pathlib.Path) -> None:
    result = invoke("show", str(vault_path), "order-42", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["pair"] == [1, 2]
    assert data["tags"] == [1, 2, 3]
    assert dt.datetime.fromisoformat(data["placed"]) == dt.datetime(2024, 5, 1, 9, 30, tzinfo=CEST)
    assert data["placed"].endswith("+02:00")
    assert data["total"] == "12.50"
    assert base64.b64decode(data["blob"]) == bytes(range(40))
    assert data["grid"] == {"dtype": "float64", "shape": [2, 3], "data": [[0, 1, 2], [3, 4, 5]]}
    assert data["big"] == {"dtype": "int32", "shape": [5000]}
    assert data["items"][0] == {"$type": "shop.Item", "sku": "MUG-01", "qty": 2}
    assert data["color"] == {"$type": "shop.Color", "name": "GREEN"}
    assert data["7"] == "int key"


def test_show_at_older_checkpoint(vault_path: pathlib.Path) -> None:
    result = invoke("show", str(vault_path), "order-42", "--at", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"step": 1, "items": []}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.b.0", 10),
        ("a.b[2]", 30),
        ('jobs[1]["x.y"]', "dotted"),
        ("jobs.1.id", 1),
        ("items.1.sku", "LAMP-07"),  # through the fields of an UnknownRecord
        ("pair.1", 2),
        ("7", "int key"),
        ("", None),
    ],
)
def test_show_path(vault_path: pathlib.Path, path: str, expected: Any) -> None:
    result = invoke("show", str(vault_path), "order-42", "--path", path, "--json")
    assert result.exit_code == 0, result.output
    value = json.loads(result.stdout)
    if path:
        assert value == expected
    else:
        assert value["step"] == 2


def test_show_path_text(vault_path: pathlib.Path) -> None:
    result = invoke("show", str(vault_path), "order-42", "--path", "items.0")
    assert result.exit_code == 0, result.output
    assert "at items[0]" in result.stdout
    assert "shop.Item(sku='MUG-01', qty=2)" in result.stdout


@pytest.mark.parametrize("path", ["a.nope", "jobs.9", "a.b.x", "step.deeper"])
def test_show_missing_path(vault_path: pathlib.Path, path: str) -> None:
    message = assert_clean_error(invoke("show", str(vault_path), "order-42", "--path", path), 2)
    assert repr(path) in message


def test_show_bad_path_syntax(vault_path: pathlib.Path) -> None:
    message = assert_clean_error(invoke("show", str(vault_path), "order-42", "--path", "a[x"), 2)
    assert "a[x" in message


def test_show_missing_run_and_checkpoint(vault_path: pathlib.Path) -> None:
    assert "ghost" in assert_clean_error(invoke("show", str(vault_path), "ghost"), 2)
    message = assert_clean_error(invoke("show", str(vault_path), "order-42", "--at", "9"), 2)
    assert "no checkpoint 9" in message
    assert "1..2" in message
    assert_clean_error(invoke("show", str(vault_path), "order-42", "--at", "9", "--json"), 2)


def test_show_max_items(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "v.db"
    with statevault.open(path) as vault:
        vault.run("long").save({"rows": list(range(500))})
    result = invoke("show", str(path), "long", "--max-items", "10")
    assert "… 490 more" in result.stdout
    result = invoke("show", str(path), "long", "--max-items", "0")
    assert "499" in result.stdout
    assert "more" not in result.stdout


# -- verify -----------------------------------------------------------------------------
def test_verify_ok(vault_path: pathlib.Path) -> None:
    result = invoke("verify", str(vault_path))
    assert result.exit_code == 0, result.output
    assert "no damage found" in result.stdout
    assert "2 runs, 3 checkpoints" in result.stdout
    data = json.loads(invoke("verify", str(vault_path), "--json").stdout)
    assert data["ok"] is True
    assert data["runs"] == 2
    assert data["checkpoints"] == 3
    assert data["problems"] == []


@pytest.fixture
def damaged_path(tmp_path: pathlib.Path) -> pathlib.Path:
    """A vault whose run `big` has a state object with flipped bytes at checkpoint 2.

    The state is incompressible and over 4 KiB, so it is stored as an object rather
    than inline in its checkpoint record.
    """
    path = tmp_path / "damaged.db"
    noise = random.Random(7).randbytes(20_000)
    with statevault.open(path) as vault:
        vault.run("big").save({"blob": b"small"})
        vault.run("big").save({"blob": noise})
        vault.run("fine").save({"ok": True})
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT digest, data FROM statevault_objects").fetchall()
        assert len(rows) == 1
        digest, data = rows[0]
        damaged = bytearray(data)
        for i in range(len(damaged) // 2, len(damaged) // 2 + 8):
            damaged[i] ^= 0xFF
        with conn:
            conn.execute(
                "UPDATE statevault_objects SET data = ? WHERE digest = ?", (bytes(damaged), digest)
            )
    finally:
        conn.close()
    return path


def test_verify_damage(damaged_path: pathlib.Path) -> None:
    result = invoke("verify", str(damaged_path))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "run 'big' checkpoint 2" in result.stdout
    assert "1 problem found" in result.stdout


def test_verify_damage_json(damaged_path: pathlib.Path) -> None:
    result = invoke("verify", str(damaged_path), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    [problem] = data["problems"]
    assert problem["run_id"] == "big"
    assert problem["seq"] == 2
    assert problem["kind"] == "object"
    assert len(problem["digest"]) == 64


def test_show_damaged_state(damaged_path: pathlib.Path) -> None:
    message = assert_clean_error(invoke("show", str(damaged_path), "big"), 1)
    assert "'big'" in message
    assert "checkpoint 2" in message
    # The damage is in one object: the older checkpoint and the history still read.
    assert invoke("show", str(damaged_path), "big", "--at", "1").exit_code == 0
    assert invoke("log", str(damaged_path), "big").exit_code == 0


# -- paths that are not vaults ----------------------------------------------------------
COMMANDS = [["runs"], ["log", "RUN"], ["show", "RUN"], ["verify"]]


def _args(command: list[str], location: str) -> list[str]:
    name, *rest = command
    return [name, location, *(["order-42"] if rest else [])]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("json_flag", [False, True], ids=["text", "json"])
def test_missing_path_is_not_created(
    tmp_path: pathlib.Path, command: list[str], json_flag: bool
) -> None:
    target = tmp_path / "missing" / "v.db"
    args = _args(command, str(target)) + (["--json"] if json_flag else [])
    message = assert_clean_error(invoke(*args), 2)
    assert "no such file" in message
    assert not target.exists()
    assert not target.parent.exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_missing_files_url_is_not_created(tmp_path: pathlib.Path, command: list[str]) -> None:
    target = tmp_path / "missing-dir"
    assert_clean_error(invoke(*_args(command, f"files://{target}")), 2)
    assert not target.exists()


def test_empty_file_and_directory_stay_empty(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert "empty file" in assert_clean_error(invoke("runs", str(empty)), 2)
    assert empty.read_bytes() == b""
    directory = tmp_path / "dir"
    directory.mkdir()
    assert "empty directory" in assert_clean_error(invoke("runs", f"files://{directory}"), 2)
    assert list(directory.iterdir()) == []
    assert_clean_error(invoke("verify", str(directory)), 2)
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_foreign_file(tmp_path: pathlib.Path, command: list[str]) -> None:
    foreign = tmp_path / "notes.txt"
    foreign.write_text("shopping list\n")
    message = assert_clean_error(invoke(*_args(command, str(foreign))), 2)
    assert "not a statevault vault" in message
    assert foreign.read_text() == "shopping list\n"


def test_foreign_sqlite_database(tmp_path: pathlib.Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    conn.close()
    before = other.read_bytes()
    assert "people" in assert_clean_error(invoke("runs", str(other)), 2)
    assert other.read_bytes() == before


def test_urls(tmp_path: pathlib.Path, vault_path: pathlib.Path) -> None:
    assert "memory://" in assert_clean_error(invoke("runs", "memory://"), 2)
    assert "scheme" in assert_clean_error(invoke("runs", "ftp://example.com/v"), 2)
    result = invoke("runs", f"sqlite://{vault_path}", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["runs"]) == 2


def test_files_vault(tmp_path: pathlib.Path) -> None:
    url = f"files://{tmp_path / 'fv'}"
    with statevault.open(url) as vault:
        vault.run("r").save({"when": dt.date(2024, 1, 2)})
    result = invoke("show", url, "r", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"when": "2024-01-02"}
    assert invoke("verify", url).exit_code == 0


def test_invalid_run_id(vault_path: pathlib.Path) -> None:
    assert_clean_error(invoke("log", str(vault_path), ""), 2)


# -- the command itself -----------------------------------------------------------------
def test_help_and_version() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("runs", "log", "show", "verify", "demo"):
        assert name in result.stdout
    result = invoke("--version")
    assert result.stdout.strip() == f"statevault {statevault.__version__}"


def test_python_dash_m(vault_path: pathlib.Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "statevault", "runs", str(vault_path), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["runs"]) == 2
