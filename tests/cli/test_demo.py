"""`statevault demo`: the pipeline is deterministic, and the demo survives its own kill."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import statevault
from statevault.cli import pipeline
from statevault.cli.app import app

runner = CliRunner(env={"COLUMNS": "200"})


def run_steps(seed: int, first: int, last: int, state: dict | None = None) -> dict:
    for step in range(first, last + 1):
        state = pipeline.advance(state, seed=seed, step=step)
    assert state is not None
    return state


def test_advance_is_pure_and_deterministic() -> None:
    before = run_steps(3, 1, 5)
    kept = copy.deepcopy(before)
    after = pipeline.advance(before, seed=3, step=6)
    assert before == kept
    assert after == pipeline.advance(kept, seed=3, step=6)
    assert after["step"] == 6
    assert len(after["orders"]) > len(before["orders"])
    assert len(after["outbox"]) > len(before["outbox"])
    assert run_steps(4, 1, 6) != after


def test_advance_refuses_a_skipped_step() -> None:
    with pytest.raises(ValueError, match="step 3 needs the state after step 2"):
        pipeline.advance(run_steps(1, 1, 1), seed=1, step=3)


def test_resuming_from_a_stored_state_gives_the_same_result(tmp_path: pathlib.Path) -> None:
    """What the worker does after a kill, in-process: store, reload, continue."""
    with statevault.open(tmp_path / "v.db") as vault:
        run = vault.run(pipeline.RUN_ID)
        run.save(run_steps(9, 1, 12))
        resumed = run_steps(9, 13, 20, run.load())
        digest = run.save(resumed).digest
        uninterrupted = run_steps(9, 1, 20)
        assert resumed == uninterrupted
        assert vault.run("reference").save(uninterrupted).digest == digest


def test_state_has_exact_types() -> None:
    state = run_steps(2, 1, 3)
    order = next(iter(state["orders"].values()))
    assert isinstance(order["customer"], tuple)
    assert isinstance(order["lines"][0], tuple)
    assert order["placed_at"].utcoffset() is not None
    assert str(order["total"]).count(".") == 1
    assert all(isinstance(batch, tuple) for batch in state["batches"])


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--steps", "5"], "--steps"),
        (["--kill-at", "30"], "--kill-at"),
        (["--kill-at", "0"], "--kill-at"),
    ],
)
def test_demo_usage_errors(args: list[str], word: str) -> None:
    result = runner.invoke(app, ["demo", *args])
    assert result.exit_code == 2
    assert word in result.output


def test_demo_refuses_memory_and_foreign_vaults(tmp_path: pathlib.Path) -> None:
    result = runner.invoke(app, ["demo", "--vault", "memory://"])
    assert result.exit_code == 2
    assert "memory://" in result.stderr
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a vault\n")
    result = runner.invoke(app, ["demo", "--vault", str(foreign)])
    assert result.exit_code == 2
    assert "not a statevault vault" in result.stderr
    assert foreign.read_text() == "not a vault\n"


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statevault", "demo", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"},
    )


@pytest.mark.multiprocess
def test_demo_end_to_end(tmp_path: pathlib.Path) -> None:
    vault = tmp_path / "demo.db"
    result = demo("--steps", "20", "--seed", "1", "--vault", str(vault))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # "during" unless a very busy machine delayed the kill past the step's save.
    assert re.search(r"killed (during|after) step \d+", out)
    assert "SIGKILL" in out
    assert "resumed from checkpoint" in out
    assert "final state equals an uninterrupted run" in out
    assert f"statevault log {vault} {pipeline.RUN_ID}" in out

    log = runner.invoke(app, ["log", str(vault), pipeline.RUN_ID, "--json"])
    checkpoints = json.loads(log.stdout)["checkpoints"]
    assert [c["seq"] for c in checkpoints] == list(range(20, 0, -1))
    assert [c["meta"]["step"] for c in checkpoints] == list(range(20, 0, -1))
    assert runner.invoke(app, ["verify", str(vault)]).exit_code == 0

    # Run again in the same vault: the old demo run is replaced, not continued.
    again = demo("--steps", "20", "--seed", "2", "--kill-at", "1", "--vault", str(vault))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "previous demo run in this vault was deleted" in again.stdout
    assert re.search(r"killed (during|after) step 1\b", again.stdout)
    assert re.search(r"starts from the beginning|resumed from checkpoint 1 ", again.stdout)
    assert "final state equals an uninterrupted run" in again.stdout
