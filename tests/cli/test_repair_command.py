"""`statevault repair` (and the consequences `statevault verify` prints) on damaged vaults."""

from __future__ import annotations

import json
import pathlib
import random
from typing import Any

import pytest
from typer.testing import CliRunner

import statevault
from statevault.cli.app import app

runner = CliRunner(env={"COLUMNS": "200"})


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(params=["sqlite", "files"])
def damaged(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """A vault whose run `big` has a damaged state object at checkpoint 2 of 3."""
    url = str(tmp_path / "v.db") if request.param == "sqlite" else f"files://{tmp_path / 'v'}"
    noise = random.Random(7)
    with statevault.open(url) as vault:
        run = vault.run("big")
        run.save({"n": 1})
        run.save({"n": 2, "blob": noise.randbytes(20_000)})
        run.save({"n": 3, "blob": noise.randbytes(20_000)})
        vault.run("fine").save({"ok": True})
        backend = vault._backend  # damage below the API
        key = bytes.fromhex(run.checkpoint_at(2).digest)
        data = bytearray(backend.get_objects([key])[key])
        data[len(data) // 2] ^= 0xFF
        backend.delete_objects([key])
        backend.put_objects([(key, bytes(data))])
    return url


def test_verify_prints_the_consequence(damaged: str) -> None:
    result = invoke("verify", damaged)
    assert result.exit_code == 1
    assert "run 'big' checkpoint 2 object" in result.stdout
    assert "verifies through checkpoint 1" in result.stdout
    assert "statevault repair" in result.stdout
    [problem] = json.loads(invoke("verify", damaged, "--json").stdout)["problems"]
    assert "checkpoints 2-3 aside" in problem["consequence"]


def test_dry_run_shows_the_loss_and_changes_nothing(damaged: str) -> None:
    result = invoke("repair", damaged, "--dry-run")
    assert result.exit_code == 1, result.output
    assert "run 'big' would be rolled back from checkpoint 3 to 1" in result.stdout
    assert "checkpoints 2-3 would be lost" in result.stdout
    assert "Dry run: nothing was changed." in result.stdout
    assert invoke("verify", damaged).exit_code == 1


def test_repair_then_nothing_to_do(damaged: str) -> None:
    result = invoke("repair", damaged)
    assert result.exit_code == 0, result.output
    assert "run 'big' rolled back from checkpoint 3 to 1: checkpoints 2-3 are lost" in result.stdout
    assert "1 damaged object moved to quarantine" in result.stdout
    assert "✓ repaired: the vault verifies" in result.stdout
    assert invoke("verify", damaged).exit_code == 0
    again = invoke("repair", damaged)
    assert again.exit_code == 0
    assert "nothing to repair" in again.stdout
    with statevault.open(damaged) as vault:
        assert vault.run("big").load() == {"n": 1}
        assert vault.run("fine").load() == {"ok": True}
        assert sorted((q.kind, q.seq) for q in vault.quarantined()) == [
            ("object", None),
            ("record", 2),
            ("record", 3),
        ]


def test_repair_json_and_one_run(damaged: str) -> None:
    result = invoke("repair", damaged, "--run", "fine", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["rolled_back"] == [] and data["ok"] is True
    result = invoke("repair", damaged, "--run", "big", "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0
    [rolled] = data["rolled_back"]
    assert (rolled["run_id"], rolled["kept_through"], rolled["lost"]) == ("big", 1, [2, 3])
    assert len(data["quarantined_objects"]) == 1
    assert data["records_set_aside"] == 2


def test_repair_never_creates_a_vault(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nothing.db"
    result = invoke("repair", str(missing))
    assert result.exit_code == 2
    assert not missing.exists()
