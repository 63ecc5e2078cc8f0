"""`repair`: make a damaged vault whole again, losing only what was already lost.

What it does, from a `verify` report:
1. Each damaged run is rolled back to its newest fully verified checkpoint
   (`RunDamage.verified_through`): every entry after it is removed from the run.
2. Those entries are not deleted: each removed record is first stored, whole, in the
   vault's quarantine area (a small object naming its run and seq, moved aside with
   `quarantine_objects`), so a person can still look at them or put them back.
3. Every stored object that fails its checks is moved to quarantine too, never deleted.

Why this order is safe under a crash at any point: records are set aside before the
roll-back removes them, and setting aside is idempotent (the same record makes the
same object, which quarantine keeps once). A repair that is killed leaves a vault
that verifies no worse than before, and running repair again finishes the job: a
damaged object already in quarantine shows up as a missing one, which leads to the
same roll-back.

Repair is idempotent: on a vault that verifies, it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from statevault.codec.envelope import pack, unpack
from statevault.engine.checkpoints import Engine
from statevault.engine.verify import Problem, RunDamage, VerifyReport, verify
from statevault.errors import CorruptionError, LeaseError, StateVaultError
from statevault.faults import crash_point, register

SET_ASIDE_KIND = "statevault rolled-back record"
"""Marks a quarantined object that holds a record a repair removed from its run."""

_CRASH_SET_ASIDE = register(
    "repair.after_set_aside", "a damaged run's records are in quarantine, still in the run"
)
_CRASH_ROLLED_BACK = register(
    "repair.after_roll_back", "a damaged run is rolled back; damaged objects still in place"
)


@dataclass(frozen=True, slots=True)
class RolledBack:
    """One run a repair rolled back (or, in a dry run, would roll back).

    Attributes:
        run_id: the run.
        head: its newest checkpoint before the repair.
        kept_through: its newest checkpoint after it (0: the run is gone).
        lost: the seqs removed from the run (and set aside in quarantine).
        reason: the first problem found in the run.
    """

    run_id: str
    head: int
    kept_through: int
    lost: list[int]
    reason: str


@dataclass(frozen=True, slots=True)
class RepairReport:
    """The result of `Vault.repair()`.

    Attributes:
        dry_run: nothing was changed; the rest says what a repair would do.
        problems: what `verify` found before the repair.
        rolled_back: the runs rolled back, with the seqs each lost.
        quarantined_objects: damaged objects (hex digests) moved to quarantine.
        records_set_aside: removed records stored in quarantine.
        unrepaired: problems repair could not fix (and why), left as they were.
        remaining: what `verify` still finds afterwards (empty when whole; for a dry
            run, the problems the repair would leave).
    """

    dry_run: bool
    problems: list[Problem] = field(default_factory=list)
    rolled_back: list[RolledBack] = field(default_factory=list)
    quarantined_objects: list[str] = field(default_factory=list)
    records_set_aside: int = 0
    unrepaired: list[Problem] = field(default_factory=list)
    remaining: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the vault verifies (or, for a dry run, would verify) afterwards."""
        return not self.remaining

    @property
    def changed(self) -> bool:
        return bool(self.rolled_back or self.quarantined_objects)


@dataclass(frozen=True, slots=True)
class QuarantinedItem:
    """Something a repair moved aside: a damaged object, or a record removed from a run.

    Attributes:
        kind: "object" or "record".
        digest: the object's digest (hex) in quarantine.
        data: the bytes kept: the object's, or the record's sealed bytes.
        run_id, seq: for a record, where it was.
    """

    kind: str
    digest: str
    data: bytes
    run_id: str | None = None
    seq: int | None = None


def _set_aside(engine: Engine, run_id: str, seq: int, record: bytes) -> tuple[bytes, bytes]:
    """The (digest, object) that keeps a removed record; the same record, the same object."""
    value = {"kind": SET_ASIDE_KIND, "run": run_id, "seq": seq, "record": record}
    packed = pack(engine.codec.encode(value), engine.compression)
    return packed.digest, packed.data


def _keep_aside(engine: Engine, items: list[tuple[bytes, bytes]]) -> None:
    """Store objects and move them straight to quarantine, durably."""
    if items:
        engine.backend.put_objects(items)
        engine.backend.quarantine_objects([digest for digest, _ in items])


def _objects_to_quarantine(report: VerifyReport, run_id: str | None) -> list[str]:
    damaged = set(report.damaged_objects)
    chosen = {
        p.digest
        for p in report.problems
        if p.kind == "object" and p.digest in damaged and (run_id is None or p.run_id == run_id)
    }
    return sorted(d for d in chosen if d is not None)


def _first_problem(report: VerifyReport, run_id: str) -> str:
    for p in report.problems:
        if p.run_id == run_id:
            return f"checkpoint {p.seq}: {p.message}" if p.seq is not None else p.message
    return "damaged"  # pragma: no cover - a damaged run always has a problem


def repair(engine: Engine, *, run_id: str | None = None, dry_run: bool = False) -> RepairReport:
    """Roll damaged runs back to their newest verified state; quarantine damaged objects."""
    before = verify(engine)
    runs: list[RunDamage] = [
        damage
        for damage in before.damaged_runs.values()
        if run_id is None or damage.run_id == run_id
    ]
    unrepaired = [
        p
        for p in before.problems
        if p.run_id is not None and p.run_id in {d.run_id for d in runs if not d.repairable}
    ]
    if run_id is None:
        # Damage outside runs (unreadable storage, a damaged schema document) is not
        # something a roll-back can fix: it is reported as left unrepaired.
        unrepaired += [
            p for p in before.problems if p.kind in ("storage", "schema") and p.run_id is None
        ]
    plan = [d for d in sorted(runs, key=lambda d: d.run_id) if d.repairable and d.lost]
    objects = _objects_to_quarantine(before, run_id)
    rolled_back: list[RolledBack] = []
    set_aside = 0
    for damage in plan:
        lost = list(damage.lost)
        reason = _first_problem(before, damage.run_id)
        if dry_run:
            rolled_back.append(
                RolledBack(damage.run_id, damage.head, damage.verified_through, lost, reason)
            )
            continue
        try:
            lost, count = _roll_back(engine, damage)
        except LeaseError as exc:
            unrepaired.append(
                Problem(
                    "lease",
                    f"not rolled back: {exc}",
                    run_id=damage.run_id,
                    consequence=(
                        "Stop the lease holder (or let the lease expire), then repair again."
                    ),
                )
            )
            continue
        set_aside += count
        rolled_back.append(
            RolledBack(damage.run_id, damage.head, damage.verified_through, lost, reason)
        )
    if objects and not dry_run:
        engine.backend.quarantine_objects(bytes.fromhex(d) for d in objects)
    if dry_run:
        fixed = {d.run_id for d in plan}
        remaining = [
            p
            for p in before.problems
            if not (p.run_id in fixed or (p.run_id is None and p.digest in objects))
            and (run_id is None or p.run_id == run_id)
        ]
    else:
        after = verify(engine)
        remaining = [p for p in after.problems if run_id is None or p.run_id == run_id]
    return RepairReport(
        dry_run=dry_run,
        problems=before.problems,
        rolled_back=rolled_back,
        quarantined_objects=objects,
        records_set_aside=set_aside,
        unrepaired=unrepaired,
        remaining=remaining,
    )


def _roll_back(engine: Engine, damage: RunDamage) -> tuple[list[int], int]:
    """Set the run's untrusted records aside, then remove them; (seqs removed, set aside)."""
    backend = engine.backend
    try:
        stored = [
            item
            for item in backend.read_checkpoints(damage.run_id, newest_first=False)
            if item.seq > damage.verified_through
        ]
    except CorruptionError:
        # The store refuses to read the damaged run whole; what it still holds is set
        # aside by the roll-back itself (the files backend keeps the changed segments).
        stored = []
    _keep_aside(engine, [_set_aside(engine, damage.run_id, i.seq, i.record) for i in stored])
    crash_point(_CRASH_SET_ASIDE)
    removed = backend.roll_back(damage.run_id, damage.verified_through)
    crash_point(_CRASH_ROLLED_BACK)
    # A writer may have committed since the records were read: what the roll-back
    # removed on top of them is kept aside as well, never dropped.
    known = {i.seq: i.record for i in stored}
    late = [i for i in removed if known.get(i.seq) != i.record]
    _keep_aside(engine, [_set_aside(engine, damage.run_id, i.seq, i.record) for i in late])
    return [i.seq for i in removed], len(stored) + len(late)


def quarantined(engine: Engine) -> list[QuarantinedItem]:
    """What repairs moved aside: records (with their run and seq) and damaged objects."""
    items: list[QuarantinedItem] = []
    for key, data in engine.backend.quarantined_objects().items():
        value: Any = None
        try:
            value = engine.codec.decode(unpack(data, key).raw)
        except StateVaultError:
            value = None  # a damaged object: it fails its checks, as expected
        if isinstance(value, dict) and value.get("kind") == SET_ASIDE_KIND:
            items.append(
                QuarantinedItem(
                    "record", key.hex(), bytes(value["record"]), value["run"], value["seq"]
                )
            )
        else:
            items.append(QuarantinedItem("object", key.hex(), data))
    items.sort(key=lambda i: (i.kind, i.run_id or "", i.seq or 0, i.digest))
    return items
