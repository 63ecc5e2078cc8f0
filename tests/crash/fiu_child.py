"""Run in a child under `fiu-run -x`: fail the N-th I/O call inside SQLite, for every N.

SQLite does its file I/O itself, below the FileIO that the files backend's fault suite
hooks, so failures are injected in libc instead: libfiu's POSIX preload library wraps
open, read, write, fsync and the others, and this script asks it (through libfiu's
external callback) to fail exactly the N-th of those calls made while a workload runs.
For each N the workload runs on a fresh copy of its start; the checks are those of the
files backend's suite (faultio.py): typed errors only, a failed call changes all or
nothing (or, after a failed flush, all or nothing with the outcome unknown), and the
vault reopens with every call that returned, verifies, and passes SQLite's own
integrity check.

Usage: fiu-run -x -f "" python fiu_child.py '<json: steps, populated, errno, persistent>'
Prints one JSON line: runs, failed calls, problems.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from typing import Any

from crash_workloads import POPULATE, Model, Step, View, perform, read_view, summary
from faultio import _forked

import statevault
from statevault import CheckpointPolicy

POINTS = [
    f"posix/io/{name}".encode()
    for name in (
        "oc/open",
        "oc/close",
        "rw/read",
        "rw/pread",
        "rw/write",
        "rw/pwrite",
        "rw/ftruncate",
        "sync/fsync",
        "sync/fdatasync",
        "dir/unlink",
    )
]
FOLD_EVERY = 2

_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.POINTER(ctypes.c_int),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_uint),
)


class Injector:
    """Fails the `fail_at`-th wrapped libc call (and later ones when `persistent`)."""

    def __init__(self, error: int, persistent: bool) -> None:
        self.lib = ctypes.CDLL("libfiu.so.0")
        self.lib.fiu_enable_external.argtypes = [
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            _Callback,
        ]
        self.error = error
        self.persistent = persistent
        self.fail_at = 0
        self.calls = 0
        self.injected = 0
        self.first_failure: str | None = None
        self._callback = _Callback(self._decide)  # kept alive while libfiu holds it

    def _decide(self, name: bytes, failnum: Any, failinfo: Any, flags: Any) -> int:
        self.calls += 1
        if self.calls == self.fail_at or (self.persistent and self.calls > self.fail_at):
            if self.first_failure is None:
                self.first_failure = name.decode()  # the one the step's error is about
            self.injected += 1
            failinfo[0] = self.error  # the errno the wrapper sets
            return 1
        return 0

    def enable(self) -> None:
        self.first_failure = None
        for point in POINTS:
            self.lib.fiu_enable_external(point, 1, None, 0, self._callback)

    def disable(self) -> None:
        for point in POINTS:
            self.lib.fiu_disable(point)


def _view(path: str) -> View:
    with statevault.open(path) as vault:
        return read_view(vault)


def run_once(
    steps: list[Step], start: str | None, workdir: str, injector: Injector
) -> tuple[list[str], bool]:
    """One run with the injector's N-th call failing; its problems, and whether it failed any."""
    path = os.path.join(workdir, "v.db")
    model = Model(fold_every=FOLD_EVERY)
    if start is not None:
        shutil.copy(start, path)
        for step in POPULATE:
            model.step(step)
    problems: list[str] = []
    injector.calls = injector.injected = 0
    vault = statevault.open(path, policy=CheckpointPolicy(records=FOLD_EVERY))
    try:
        for i, step in enumerate(steps):
            injector.enable()
            try:
                perform(vault, step)
            except statevault.StateVaultError as exc:
                injector.disable()
                seen = _view(path)
                indeterminate = isinstance(exc, statevault.DurabilityError)
                if "sync" in (injector.first_failure or "") and not indeterminate:
                    problems.append(
                        f"step {i} ({step}): {injector.first_failure} failed, but {exc!r} "
                        f"({getattr(exc.__cause__, 'sqlite_errorname', None)})"
                    )
                options = [model] + (
                    [_forked(model, step, fold=True), _forked(model, step, fold=False)]
                    if indeterminate
                    else []
                )
                match = next((m for m in options if m.view() == seen), None)
                if match is None:
                    problems.append(f"step {i} ({step}) failed ({exc}) but left {summary(seen)}")
                    break
                model = match
                continue
            except Exception as exc:
                problems.append(f"step {i} ({step}) raised untyped {exc!r}")
                break
            finally:
                injector.disable()
            unfolded = _forked(model, step, fold=False)
            if model.step(step) and _view(path) == unfolded.view():
                model = unfolded
    finally:
        injector.disable()
        vault.close()
    with statevault.open(path) as vault:
        seen = read_view(vault)
        report = vault.verify()
    if seen != model.view():
        problems.append(f"reopened: {summary(seen)}; expected {summary(model.view())}")
    if not report.ok:
        problems.append("verify: " + "; ".join(map(str, report.problems)))
    with sqlite3.connect(path) as conn:
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
    conn.close()
    if check != "ok":
        problems.append(f"integrity_check: {check}")
    return problems, injector.injected > 0


def main() -> None:
    job = json.loads(sys.argv[1])
    steps = [Step(**step) for step in job["steps"]]
    injector = Injector(job["errno"], job["persistent"])
    runs = failed = 0
    problems: list[str] = []
    with tempfile.TemporaryDirectory(dir=job["scratch"]) as scratch:
        start = None
        if job["populated"]:
            start = os.path.join(scratch, "start.db")
            with statevault.open(start) as vault:
                for step in POPULATE:
                    perform(vault, step)
        for fail_at in range(1, 100_000):
            injector.fail_at = fail_at
            workdir = tempfile.mkdtemp(dir=scratch)
            found, injected = run_once(steps, start, workdir, injector)
            shutil.rmtree(workdir)
            if not injected:
                break
            runs += 1
            failed += injector.injected
            problems += [f"call {fail_at}: {problem}" for problem in found]
    print(json.dumps({"runs": runs, "failed": failed, "problems": problems}))


if __name__ == "__main__":
    main()
