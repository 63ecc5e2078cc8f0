"""`statevault upgrade`: a dry run that writes nothing, an upgrade that keeps history,
a second run that does nothing, and a kill -9 in the middle that a rerun finishes."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import statevault
from statevault import faults
from statevault.cli.app import app
from statevault.cli.upgrade import _print_summary
from upgrade_support import (
    DATA,
    NEWEST,
    OLD_GOLDEN,
    copy_golden,
    file_bytes,
    fill,
    format_of,
    golden_id,
    history,
    layout_steps,
    old_vault_url,
)

runner = CliRunner(env={"COLUMNS": "400"})


@pytest.mark.parametrize("golden", OLD_GOLDEN, ids=golden_id)
def test_dry_run_then_upgrade_then_nothing_to_do(
    golden: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    url = copy_golden(golden, tmp_path)
    version = format_of(golden)
    with statevault.open(url, create=False) as vault:
        before = history(vault)
    runs, checkpoints = len(before), sum(len(h) for h in before.values())
    untouched = file_bytes(tmp_path)
    # Moving a directory vault into segments (files layout 2) rewrites every record.
    rewritten = checkpoints if golden.is_dir() else 0

    result = runner.invoke(app, ["upgrade", url, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"vault format {version} -> {NEWEST} would rewrite {rewritten} records" in result.output
    assert f"{runs} runs, {checkpoints} checkpoints kept (dry run: nothing written)" in (
        result.output
    )
    assert file_bytes(tmp_path) == untouched

    result = runner.invoke(app, ["upgrade", url, "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    planned = json.loads(result.output)
    assert planned["dry_run"] and not planned["current"]
    assert (planned["source_format"], planned["target_format"]) == (version, NEWEST)
    assert (planned["runs"], planned["checkpoints"]) == (runs, checkpoints)
    assert [s["name"] for s in planned["steps"]] == [
        *layout_steps(golden),
        f"vault format {version} -> {NEWEST}",
    ]
    assert file_bytes(tmp_path) == untouched

    result = runner.invoke(app, ["upgrade", url])
    assert result.exit_code == 0, result.output
    assert f"upgraded, vault format {version} -> {NEWEST}, in " in result.output
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == NEWEST
        assert history(vault) == before
        assert vault.verify().ok

    result = runner.invoke(app, ["upgrade", url])
    assert result.exit_code == 0, result.output
    assert f"already at vault format {NEWEST}" in result.output
    assert "nothing to do" in result.output
    result = runner.invoke(app, ["upgrade", url, "--json"])
    assert json.loads(result.output)["current"] is True


def test_a_newer_vault_is_refused_untouched(tmp_path: pathlib.Path) -> None:
    url = old_vault_url("sqlite", NEWEST + 1, tmp_path)
    untouched = file_bytes(tmp_path)
    result = runner.invoke(app, ["upgrade", url])
    assert result.exit_code == 2, result.output
    assert f"storage format {NEWEST + 1}" in result.output
    assert "nothing was changed" in result.output
    assert file_bytes(tmp_path) == untouched


def test_no_vault_is_created(tmp_path: pathlib.Path) -> None:
    result = runner.invoke(app, ["upgrade", str(tmp_path / "missing.db")])
    assert result.exit_code == 2
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize("point", ["upgrade.format.before_write", "upgrade.format.after_write"])
@pytest.mark.parametrize("golden", [DATA / "golden" / "v1.db", DATA / "golden" / "v2-files"])
def test_kill_9_mid_upgrade_then_the_command_finishes(
    golden: pathlib.Path, point: str, tmp_path: pathlib.Path
) -> None:
    assert point in faults.POINTS
    url = copy_golden(golden, tmp_path)
    with statevault.open(url, create=False) as vault:
        before = history(vault)
    command = [sys.executable, "-m", "statevault", "upgrade", url]
    killed = subprocess.run(
        command, env={**os.environ, faults.ENV_VAR: point}, capture_output=True, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    written = point.endswith("after_write")
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == (NEWEST if written else format_of(golden))
        assert history(vault) == before
        assert vault.verify().ok
    env = {k: v for k, v in os.environ.items() if k != faults.ENV_VAR}
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert ("nothing to do" in again.stdout) == written
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == NEWEST
        assert history(vault) == before
        assert vault.verify().ok


@pytest.mark.postgres
def test_upgrade_on_postgres(pg_schema: str, tmp_path: pathlib.Path) -> None:
    url = old_vault_url("postgres", 2, tmp_path, pg_schema)
    with statevault.open(url, create=False) as vault:
        fill(vault)
        before = history(vault)
    result = runner.invoke(app, ["upgrade", url, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would rewrite 0 records" in result.output
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == 2
    result = runner.invoke(app, ["upgrade", url])
    assert result.exit_code == 0, result.output
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == NEWEST
        assert history(vault) == before
        assert vault.verify().ok


def test_summary_of_a_layout_step_on_a_current_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A backend's layout can be behind while the vault format is current."""
    step = statevault.UpgradeStep("files layout 1 -> 2", runs=2, records=5, bytes=3000)
    report = statevault.UpgradeReport("/v", NEWEST, NEWEST, False, [step], 2, 5, 0.5)
    _print_summary("/v", report)
    out = capsys.readouterr().out
    assert f"/v: upgraded, vault format {NEWEST} (current), files layout 1 -> 2, in 0.50 s" in out
    assert "rewrote 5 records (2.9 KiB); 2 runs, 5 checkpoints kept" in out
    assert "files layout 1 -> 2: 2 runs, 5 records, 2.9 KiB" in out
    assert "can no longer open" not in out  # the format did not change
