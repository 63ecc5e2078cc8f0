"""Files layout 1 -> 2 (`statevault upgrade`): every record moves, nothing else changes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import statevault
from statevault import faults, ops
from statevault.backends.files import FilesBackend, read_marker
from statevault.errors import VaultBusyError

GOLDEN = Path(__file__).parent.parent / "data" / "golden"


def history(url: str) -> dict[str, list[object]]:
    # The golden vaults hold registered types this test does not define.
    with statevault.open(url, create=False, unknown_types="keep") as vault:
        return {
            run_id: [vault.run(run_id).load(at=c.seq) for c in vault.run(run_id).checkpoints()]
            for run_id in vault.runs()
        }


def layout_of(root: Path) -> int:
    return read_marker((root / "STATEVAULT").read_bytes())[0]


@pytest.mark.parametrize("golden", ["v2-files-layout1", "v3-files-layout1"])
def test_a_layout_1_vault_upgrades_to_segments(golden: str, tmp_path: Path) -> None:
    root = tmp_path / "v"
    shutil.copytree(GOLDEN / golden, root)
    url = f"files://{root}"
    before = history(url)
    with statevault.open(url) as vault:
        planned = vault.upgrade(dry_run=True)
        assert any(step.name.startswith("files layout 1 -> 2") for step in planned.steps)
    assert layout_of(root) == 1
    with statevault.open(url) as vault:
        report = vault.upgrade()
        step = next(s for s in report.steps if s.name.startswith("files layout"))
        assert step.records == sum(len(states) for states in before.values())
    assert layout_of(root) == 2
    assert not list(root.glob("runs/*/ckpt"))
    assert history(url) == before
    with statevault.open(url) as vault:
        assert vault.verify().ok
        run = vault.run(sorted(before)[0])
        run.save({"after": "upgrade"})
        assert run.load() == {"after": "upgrade"}
        assert vault.upgrade().current


def test_upgrade_refuses_while_another_handle_is_open(tmp_path: Path) -> None:
    root = tmp_path / "v"
    FilesBackend(str(root), initial_meta={"format": b"3"}, layout=1).close()
    url = f"files://{root}"
    with statevault.open(url) as vault:
        vault.run("r").save({"n": 1})
        other = FilesBackend(str(root), initial_meta={})
        with pytest.raises(VaultBusyError, match="close them"):
            vault.upgrade()
        other.close()
        assert layout_of(root) == 1
        vault.upgrade()
        vault.run("r").apply([ops.increment("n")])
        assert vault.run("r").load() == {"n": 2}
    assert layout_of(root) == 2


def test_an_interrupted_conversion_is_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "v"
    shutil.copytree(GOLDEN / "v3-files-layout1", root)
    url = f"files://{root}"
    before = history(url)
    # What a kill during the conversion can leave: half-built logs, marker still 1.
    run_dir = sorted((root / "runs").iterdir())[0]
    (run_dir / "log.new").mkdir()
    (run_dir / "log.new" / "00000000000000000001").write_bytes(b"partial")
    (run_dir / "log").mkdir()
    assert history(url) == before  # layout 1 ignores them
    with statevault.open(url) as vault:
        vault.upgrade()
    assert history(url) == before
    assert not list(root.glob("runs/*/log.new"))


_UPGRADE = "import statevault, sys\nstatevault.open(sys.argv[1], create=False).upgrade()\n"


@pytest.mark.parametrize(
    "point",
    ["files.upgrade.after_run@1", "files.upgrade.after_run@3", "files.upgrade.after_convert"],
)
def test_a_killed_layout_upgrade_finishes_when_run_again(point: str, tmp_path: Path) -> None:
    root = tmp_path / "v"
    shutil.copytree(GOLDEN / "v3-files-layout1", root)
    url = f"files://{root}"
    before = history(url)
    env = {**os.environ, faults.ENV_VAR: point}
    killed = subprocess.run(
        [sys.executable, "-c", _UPGRADE, url], env=env, capture_output=True, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert layout_of(root) == 1  # the marker is written last
    assert history(url) == before
    with statevault.open(url) as vault:
        assert vault.verify().ok
        vault.upgrade()
    assert layout_of(root) == 2
    assert history(url) == before
    assert not list(root.glob("runs/*/ckpt")) and not list(root.glob("runs/*/log.new"))
