"""Failed I/O: every call of a workload fails in turn (faultio.py, fiu_child.py).

Each workload runs once per N with its N-th file operation failing, once and from
then on, with EIO, ENOSPC and short writes; afterwards the vault must open with no
manual step and hold what the model says. The files backend is failed at its FileIO,
SQLite inside its own libc calls (libfiu); a real full disk (a small tmpfs) follows.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from crash_workloads import KINDS, Step, scratch_dir
from faultio import FAULTS, SHORT, sweep

import statevault

SHORT_WORKLOADS = [[Step(kind, "a", 10)] for kind in KINDS]
LONGER_WORKLOADS = [
    [Step("transaction", "a", 10), Step("apply", "a", 11), Step("fold", "a", 12)],
    [Step("apply", "a", 10), Step("reopen"), Step("apply", "a", 11)],
    [Step("delete", "a", 10), Step("save", "a", 11), Step("transaction", "b", 12)],
    [Step("save", "b", 10), Step("delete", "b", 11), Step("reopen"), Step("save", "b", 12)],
]
MODES = [
    ("EIO", False),
    ("EIO", True),
    ("ENOSPC", True),
    ("short write", False),
    ("short write", True),
]


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_dir() as path:
        yield path


def _check(
    workloads: list[list[Step]], populated: bool, fault: str, persistent: bool, scratch: str
) -> None:
    runs = injected = 0
    problems: list[str] = []
    for steps in workloads:
        done = sweep(
            steps,
            populated=populated,
            scratch=scratch,
            error=FAULTS[fault],
            persistent=persistent,
            fold_every=2,
        )
        runs, injected, problems = runs + done[0], injected + done[1], problems + done[2]
    mode = "from then on" if persistent else "once"
    print(f"\n{fault} {mode}: {runs} runs, {injected} calls failed, {len(problems)} problems")
    assert runs, "no call was ever failed: the workloads make no counted calls"
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:5])


@pytest.mark.parametrize(("fault", "persistent"), MODES)
@pytest.mark.parametrize("populated", [False, True], ids=["empty", "populated"])
def test_every_call_of_short_workloads_fails(
    fault: str, persistent: bool, populated: bool, scratch: str
) -> None:
    _check(SHORT_WORKLOADS, populated, fault, persistent, scratch)


@pytest.mark.parametrize(("fault", "persistent"), MODES)
def test_every_call_of_longer_workloads_fails(fault: str, persistent: bool, scratch: str) -> None:
    _check(LONGER_WORKLOADS, True, fault, persistent, scratch)


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "persistent"), [*MODES, ("ENOSPC", False)])
@pytest.mark.parametrize("populated", [False, True], ids=["empty", "populated"])
def test_every_call_of_every_two_call_workload_fails(
    fault: str, persistent: bool, populated: bool, scratch: str
) -> None:
    workloads = [
        [Step(first, "a", 10), Step(second, "a", 11)] for first in KINDS for second in KINDS
    ]
    _check(workloads, populated, fault, persistent, scratch)


def test_short_writes_change_nothing_but_speed(scratch: str) -> None:
    # Short writes are not errors: every run must complete every step.
    from faultio import run_with_fault  # noqa: PLC0415 - one helper of the module

    with tempfile.TemporaryDirectory(dir=scratch) as workdir:
        report = run_with_fault(
            [Step("save", "a", 10), Step("transaction", "a", 11)],
            populated=True,
            workdir=workdir,
            fail_at=1,
            persistent=True,
            error=SHORT,
        )
    assert report.injected > 5
    assert report.failed_steps == 0
    assert not report.problems


# -- a real full disk -------------------------------------------------------------------------
@contextlib.contextmanager
def _small_tmpfs(size: str) -> Iterator[str]:
    mountpoint = tempfile.mkdtemp(prefix="statevault-full-")
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mountpoint],
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:
            pytest.skip(
                f"cannot mount a small tmpfs to fill (needs root and CAP_SYS_ADMIN): "
                f"{mounted.stderr.decode(errors='replace').strip()}"
            )
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", "-l", mountpoint], check=False)
    finally:
        os.rmdir(mountpoint)


def _fill(vault: statevault.Vault) -> tuple[list[int], BaseException]:
    """Save growing states until the disk is full; the acknowledged ones, and the error."""
    acked: list[int] = []
    run = vault.run("r")
    for i in range(10_000):
        try:
            run.save({"i": i, "blob": os.urandom(96 << 10)})
        except statevault.StateVaultError as exc:
            return acked, exc
        acked.append(i)
    raise AssertionError("the disk never filled up")


@pytest.mark.parametrize("kind", ["files", "sqlite"])
def test_a_full_disk_fails_cleanly_and_keeps_every_acknowledged_save(kind: str) -> None:
    with _small_tmpfs("2m") as mountpoint:
        url = f"files://{mountpoint}/vault" if kind == "files" else os.path.join(mountpoint, "v.db")
        with statevault.open(url) as vault:
            acked, error = _fill(vault)
        assert acked, "not even one save fitted"
        assert isinstance(error, statevault.StorageError), repr(error)
        assert (
            getattr(error.__cause__, "errno", None) == errno.ENOSPC
            or "full" in str(error).lower()
            or "space" in str(error).lower()
        ), str(error)
        # Room again (as when a person frees space): the vault opens with no manual
        # step, holds every acknowledged save, verifies, and takes writes again.
        subprocess.run(["mount", "-o", "remount,size=16m", mountpoint], check=True)
        with statevault.open(url) as vault:
            run = vault.run("r")
            assert run.head is not None
            assert run.head.seq >= len(acked)
            assert run.load(at=len(acked))["i"] == acked[-1]
            assert vault.verify().ok
            run.save({"after": True})
            assert run.load() == {"after": True}


# -- SQLite: failures inside SQLite's own I/O (libfiu) -------------------------------------------
FIU_RUN = shutil.which("fiu-run")
FIU_PRELOAD = "/usr/lib/fiu/fiu_posix_preload.so"
SQLITE_WORKLOADS = [
    ([Step("save", "a", 10)], False),
    ([Step("save", "a", 10)], True),
    ([Step("transaction", "a", 10), Step("apply", "a", 11), Step("fold", "a", 12)], True),
    ([Step("delete", "a", 10), Step("save", "b", 11)], True),
]


@pytest.mark.skipif(
    FIU_RUN is None or not os.path.exists(FIU_PRELOAD),
    reason="libfiu is not installed (Debian: apt-get install fiu-utils); it injects the "
    "failures into SQLite's own open/read/write/fsync calls",
)
@pytest.mark.parametrize(("fault", "persistent"), [("EIO", False), ("EIO", True), ("ENOSPC", True)])
def test_every_io_call_inside_sqlite_fails(fault: str, persistent: bool, scratch: str) -> None:
    assert FIU_RUN is not None
    here = pathlib.Path(__file__).parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(pathlib.Path(statevault.__file__).parents[1]), str(here)]
        ),
    }
    runs = failed = 0
    problems: list[str] = []
    for steps, populated in SQLITE_WORKLOADS:
        job = {
            "steps": [{"kind": s.kind, "run": s.run, "n": s.n} for s in steps],
            "populated": populated,
            "errno": FAULTS[fault],
            "persistent": persistent,
            "scratch": scratch,
        }
        child = subprocess.run(
            [FIU_RUN, "-x", "-f", "", sys.executable, str(here / "fiu_child.py"), json.dumps(job)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert child.returncode == 0, child.stderr[-3000:]
        result = json.loads(child.stdout.splitlines()[-1])
        runs, failed = runs + result["runs"], failed + result["failed"]
        problems += [f"{', '.join(map(str, steps))}: {p}" for p in result["problems"]]
    mode = "from then on" if persistent else "once"
    print(f"\nSQLite, {fault} {mode}: {runs} runs, {failed} calls failed, {len(problems)} problems")
    assert runs > 50
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:5])
