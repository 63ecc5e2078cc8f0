"""Failed I/O: a FileIO whose N-th OS call fails, and a workload run that checks the result.

SQLite tests the same way ("fail the N-th I/O, once and from then on"): for every N up
to the number of calls a workload makes, the workload runs with that call failing (EIO,
ENOSPC, or a short write), and then:

- every API call that failed raised a typed `StateVaultError` (never a raw OSError);
- a failed flush raised `DurabilityError` and poisoned the handle: no later write or
  flush went through it (a retried fsync could report success for lost data), and no
  call returned success over a failed flush that the handle did not notice;
- a failed call changed all or nothing: a healthy reader sees the vault as it was
  before the call or as the call would have left it, nothing in between;
- after the run, the vault opens with no manual step and holds exactly what the model
  says (every call that returned, and each failed call that took effect), and verifies.

The failures are injected at `FileIO.syscall`, under all of FileIO's own logic (its
loops over short writes, its poisoning, its clean-up), so that logic is tested too.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from crash_workloads import (
    VAULT,
    Model,
    Step,
    View,
    count_policy,
    perform,
    prepare,
    read_view,
    recover,
    summary,
)

import statevault
from statevault.backends.fsio import FileIO

SHORT = 0
"""Not an errno: the call writes less than it was given (as after a signal), and succeeds."""

FAULTS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC, "short write": SHORT}

_WRITES = frozenset({os.write, os.pwrite})
_CHANGES = frozenset(
    {os.write, os.pwrite, os.ftruncate, os.replace, os.rename, os.link, os.mkdir, os.rmdir}
)
COUNTED = frozenset(
    {*_CHANGES, os.open, os.close, os.unlink, os.fsync, os.fdatasync, os.read, os.listdir}
)
"""The calls numbered for injection: every call that opens, reads, lists, changes, flushes
or closes (metadata queries such as stat are left alone)."""


class FailingFileIO(FileIO):
    """A real FileIO whose `fail_at`-th counted call fails (and every later one too when
    `persistent`), with `error` (an errno, or `SHORT`)."""

    def __init__(self, *, fail_at: int, persistent: bool, error: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.persistent = persistent
        self.error = error
        self.calls = 0
        self.injected = 0
        self.flushes_failed = 0
        self.changes_after_poison: list[str] = []

    def syscall(self, call: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        counted = call in (_WRITES if self.error == SHORT else COUNTED)
        if counted:
            self.calls += 1
            failing = self.calls == self.fail_at or (self.persistent and self.calls > self.fail_at)
            if failing:
                self.injected += 1
                self.flushes_failed += call in (os.fsync, os.fdatasync)
                if call is os.close:
                    # Linux frees the descriptor even when close reports an error.
                    call(*args)
                if self.error != SHORT:
                    raise OSError(self.error, f"{os.strerror(self.error)} (injected)")
                data = args[1]
                args = (args[0], data[: max(1, len(data) // 2)], *args[2:])
        if self.poisoned and call in _CHANGES:
            self.changes_after_poison.append(f"{call.__name__}{args[:1]}")
        return call(*args, **kwargs)


@dataclass(slots=True)
class FaultReport:
    """What one run with a failing call showed."""

    calls: int = 0
    injected: int = 0
    failed_steps: int = 0
    problems: list[str] = field(default_factory=list)


def _healthy_view(url: str) -> View:
    with statevault.open(url) as vault:
        return read_view(vault)


def run_with_fault(
    steps: Sequence[Step],
    *,
    populated: bool,
    workdir: str,
    fail_at: int,
    persistent: bool,
    error: int,
    fold_every: int | None = None,
) -> FaultReport:
    """Run `steps` with the `fail_at`-th counted call failing; check what it left."""
    disk = os.path.join(workdir, "disk")
    model = prepare(disk, populated=populated, fold_every=fold_every)
    url = f"files://{os.path.join(disk, VAULT)}"
    policy = count_policy(model.fold_every)
    io = FailingFileIO(fail_at=fail_at, persistent=persistent, error=error)
    report = FaultReport()
    vault: statevault.Vault | None = None
    try:
        for i, step in enumerate([Step("reopen"), *steps]):
            poisoned_before = io.poisoned
            flushes_failed_before = io.flushes_failed
            try:
                if step.kind == "reopen":
                    if vault is not None:
                        vault.close()
                    vault = None
                    vault = statevault.open(url, fileio=io, policy=policy)
                else:
                    assert vault is not None
                    perform(vault, step)
            except statevault.StateVaultError as exc:
                report.failed_steps += 1
                flush_failed = io.poisoned and not poisoned_before
                if flush_failed and not isinstance(exc, statevault.DurabilityError):
                    report.problems.append(
                        f"step {i} ({step}): a flush failed, but it raised "
                        f"{type(exc).__name__}, not DurabilityError: {exc}"
                    )
                indeterminate = isinstance(exc, statevault.DurabilityError)
                _settle(model, step, _healthy_view(url), report, i, indeterminate=indeterminate)
                if vault is None:
                    break  # opening failed: nothing more can run on this handle
            except Exception as exc:
                report.problems.append(f"step {i} ({step}) raised untyped {exc!r}")
                break
            else:
                if io.flushes_failed > flushes_failed_before and not io.poisoned:
                    # Success after a failed flush is right only for work done before it
                    # (a delta whose fold then failed), and only if the handle noticed.
                    report.problems.append(
                        f"step {i} ({step}) returned success although a flush failed in "
                        f"it, and the handle was not poisoned: the failure was swallowed"
                    )
                unfolded = _forked(model, step, fold=False)
                if model.step(step) and _healthy_view(url) == unfolded.view():
                    # The call made a delta that the policy folds, but a storage error
                    # skipped the fold (the call still succeeds: its delta is in).
                    model.runs = unfolded.runs
    finally:
        if vault is not None:
            vault.close()
    report.calls, report.injected = io.calls, io.injected
    if io.changes_after_poison:
        report.problems.append(
            f"changes went through after a failed flush: {io.changes_after_poison[:5]}"
        )
    outcome = recover(disk)
    if outcome.view != model.view():
        report.problems.append(f"reopened: {outcome}; expected {summary(model.view())}")
    return report


def _settle(
    model: Model, step: Step, seen: View, report: FaultReport, index: int, *, indeterminate: bool
) -> None:
    """Check what a failed step left, and make the model agree with it.

    A step that raised `DurabilityError` may have taken effect (its data reached the
    page cache; whether it reached the disk is unknown, as with a lost commit reply),
    but wholly or not at all. Any other error says the call did not complete: then it
    must have changed nothing.
    """
    if seen == model.view():
        return
    for fold in (True, False) if indeterminate else ():
        trial = _forked(model, step, fold=fold)
        if seen == trial.view():
            model.runs = trial.runs
            return
    what = (
        "a partial change" if indeterminate else "a change, though it did not raise DurabilityError"
    )
    report.problems.append(f"step {index} ({step}) failed but left {what}: {summary(seen)}")


def _forked(model: Model, step: Step, *, fold: bool) -> Model:
    """A copy of `model` after `step` (with or without its automatic fold)."""
    trial = Model(
        model.fold_every,
        {k: replace(v, state=copy.deepcopy(v.state)) for k, v in model.runs.items()},
    )
    trial.step(step, fold=fold)
    return trial


def sweep(
    steps: Sequence[Step],
    *,
    populated: bool,
    scratch: str,
    error: int,
    persistent: bool,
    fold_every: int | None = None,
) -> tuple[int, int, list[str]]:
    """Run `steps` once for each N, failing the N-th call, until a run injects nothing.

    Returns how many runs were made, how many calls were failed in all, and the problems.
    """
    runs = injected = 0
    problems: list[str] = []
    fail_at = 1
    while True:
        workdir = tempfile.mkdtemp(prefix="fault-", dir=scratch)
        try:
            report = run_with_fault(
                steps,
                populated=populated,
                workdir=workdir,
                fail_at=fail_at,
                persistent=persistent,
                error=error,
                fold_every=fold_every,
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not report.injected:
            return runs, injected, problems
        runs += 1
        injected += report.injected
        mode = "from then on" if persistent else "once"
        problems += [
            f"{', '.join(map(str, steps))} (from {'populated' if populated else 'empty'}), "
            f"call {fail_at} failing {mode}: {problem}"
            for problem in report.problems
        ]
        fail_at += 1
