"""Vault format upgrades: an older vault brought to the newest format, on request only.

Opening never upgrades: a vault keeps the format it was created with, so the
statevault that made it can still open it. `Vault.upgrade` (`statevault upgrade
PATH`) does it on purpose, in steps that are each safe to kill and to run again:

1. the backend's own layout, when the backend versions it (`LayoutUpgradingBackend`,
   the files backend's directory layout), upgraded by the backend itself;
2. the vault format: the `format` meta entry, written last, in one atomic write (a
   SQLite or PostgreSQL transaction, an atomic replace of the files marker). Before
   it the vault is still of its old format and reads as such; after it, the vault is
   upgraded. A kill anywhere leaves one or the other, and running the upgrade again
   finishes what is left: steps already done plan nothing and are skipped.

What the vault format step rewrites: the meta entry, no record and no object. What
formats 2 and 3 bring is how entries are written: trees of shared objects (2),
records sealed apart from their inline envelope so that journal entries can be
relocated against the fold after them (3). Every reader of this release takes
older records and objects as they are, and a run mixes them freely: a record chains
to its parent's hash whatever the version of either. So after the flip every new
save, transaction and fold of every run gets all of format 3, and every old
checkpoint loads exactly as before, with the same seq, state and record hash.

Re-encoding old entries was weighed and rejected. It would save space: a chat of 400
steps (~9 KB messages, a fold every 100) holds 1.42 MB in format 2 and 1.10 MB in
format 3 (its journal 0.79 -> 0.47 MB); upgraded after 200 steps it holds 1.26 MB, so
re-encoding the old half would save 0.16 MB, 13% (`python -m benchmarks.migrations
--only upgrade`). A format-1 run's whole-state objects would also share subtrees as
trees. But a format-1 or format-2 record's hash covers its inline
envelope and root, so re-encoding one changes its hash and, through the chain, the
hash of every record above it up to the head: the history's tamper evidence and the
hashes users kept would change, every writer holding the head would fail its
compare-and-swap, and no backend can replace a run's history atomically (the files
backend keeps a file per record), so a kill in the middle would leave a chain that
`verify` reports broken and `repair` would cut. Space is not worth history.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from statevault.backends.base import (
    META_FORMAT,
    Backend,
    LayoutUpgradingBackend,
    StepProgress,
    UpgradeStep,
)
from statevault.errors import CorruptionError, UnsupportedFormatError
from statevault.faults import crash_point, register

_CRASH_BEFORE_FORMAT = register(
    "upgrade.format.before_write", "the backend's layout step is done; the format is not written"
)
_CRASH_AFTER_FORMAT = register(
    "upgrade.format.after_write", "the new vault format is written; the report is not returned"
)

Progress = Callable[[str, int, int], None]
"""Called as an upgrade goes: (step name, units done, units in all)."""


@dataclass(slots=True)
class UpgradeReport:
    """What `Vault.upgrade` found and did.

    Attributes:
        location: the vault.
        source: the vault format before the upgrade.
        target: the vault format after it (the newest this statevault writes).
        dry_run: True if nothing was written.
        steps: the steps done (with a dry run: the steps an upgrade would do), in order;
            empty when the vault was at the newest format and layout already.
        runs: the vault's runs, each kept with all its checkpoints.
        checkpoints: their checkpoints in all; each loads as before, at the same seq.
        seconds: how long it took.
    """

    location: str
    source: int
    target: int
    dry_run: bool
    steps: list[UpgradeStep] = field(default_factory=list)
    runs: int = 0
    checkpoints: int = 0
    seconds: float = 0.0

    @property
    def current(self) -> bool:
        """True when there was nothing to do: the vault was upgraded already."""
        return not self.steps

    @property
    def records(self) -> int:
        """Records rewritten by every step (would be, with a dry run)."""
        return sum(step.records for step in self.steps)

    @property
    def bytes(self) -> int:
        """Bytes rewritten by every step (would be, with a dry run)."""
        return sum(step.bytes for step in self.steps)


def stored_format(backend: Backend) -> int:
    """The vault format version in the backend's metadata.

    Raises:
        CorruptionError: the entry is missing or not a number.
    """
    raw = backend.get_meta().get(META_FORMAT, b"")
    if not raw.isdigit():
        raise CorruptionError(
            f"{backend.location}: the vault's format version is unreadable ({raw[:20]!r})"
        )
    return int(raw)


def upgrade(
    backend: Backend, *, target: int, dry_run: bool = False, progress: Progress | None = None
) -> UpgradeReport:
    """Bring the vault to format `target` (see the module docstring).

    Raises:
        UnsupportedFormatError: the vault is of a newer format than `target` (nothing
            is changed).
    """
    started = time.perf_counter()
    source = stored_format(backend)
    if source > target:
        raise UnsupportedFormatError(found=source, supported=target)
    report = UpgradeReport(backend.location, source, target, dry_run)
    report.runs, report.checkpoints = _count(backend, progress)
    if isinstance(backend, LayoutUpgradingBackend):
        planned = backend.plan_layout_upgrade()
        if planned is not None and dry_run:
            report.steps.append(planned)
        elif planned is not None:
            done = backend.upgrade_layout(_bound(progress, planned.name))
            if done is not None:
                report.steps.append(done)
    if source < target:
        step = UpgradeStep(
            f"vault format {source} -> {target}",
            detail=(
                f"the `format` meta entry; {report.checkpoints} checkpoints of "
                f"{report.runs} runs kept as they are (same seqs, states and hashes); new "
                f"entries are written in format {target}"
            ),
        )
        report.steps.append(step)
        if not dry_run:
            crash_point(_CRASH_BEFORE_FORMAT)
            # Last, and alone: until this one atomic write the vault is of its old
            # format, whole; after it, of the new one. Nothing else changes with it.
            backend.set_meta(META_FORMAT, str(target).encode("ascii"))
            crash_point(_CRASH_AFTER_FORMAT)
            if progress is not None:
                progress(step.name, 1, 1)
    report.seconds = time.perf_counter() - started
    return report


def _count(backend: Backend, progress: Progress | None) -> tuple[int, int]:
    """(runs, checkpoints): seqs run 1..head with no gap, so a head is its run's count."""
    run_ids = backend.list_runs()
    checkpoints = 0
    for done, run_id in enumerate(run_ids, start=1):
        checkpoints += backend.head(run_id)
        if progress is not None:
            progress("reading runs", done, len(run_ids))
    return len(run_ids), checkpoints


def _bound(progress: Progress | None, name: str) -> StepProgress | None:
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(name, done, total)

    return report
