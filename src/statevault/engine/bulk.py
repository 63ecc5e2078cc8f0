"""Bulk migration: every run of a schema brought to one version, as new checkpoints.

Each run is migrated on its own: its newest state is read, migrated in memory through
the registered steps, validated against the target version's type, and committed as a
new state entry on top of the head it was read from (compare-and-swap). So a run is
either migrated whole or left exactly as it was, and an interrupted migration resumes
by running it again: runs already at the target count as current and cost one read.

The way back is either a migration to a lower version through registered down steps,
or `undo`: each run whose newest checkpoint a migration wrote gets a new checkpoint
holding the state from before it, with its old version. Nothing is ever deleted.

Runs are migrated by a pool of threads: their commits are durable one by one, and on
backends with group commit (SQLite) concurrent commits share one flush.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Literal

from statevault.engine.checkpoints import Engine, Head
from statevault.engine.journal import STATE_KINDS, materialize, read_newest
from statevault.engine.records import CheckpointRecord, SchemaTag
from statevault.engine.schemas import SchemaStore
from statevault.errors import MigrationError, SchemaValidationError, StateVaultError
from statevault.schema.migrate import plan, run_steps
from statevault.schema.registry import SchemaRegistry
from statevault.schema.types import Schema

META_KEY = "migration"
"""The meta key of a checkpoint written by a migration: {schema, from_version,
to_version, from_seq} (or, for an undo, {schema, undone_seq, restored_seq})."""

Status = Literal["migrated", "current", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a bulk migration did to one run.

    Attributes:
        run_id: the run.
        status: "migrated" (a new checkpoint; with a dry run: would be), "current" (already
            at the target), "failed" (left as it was; see `reason`) or "skipped" (not a run
            of this schema, or nothing to undo).
        source: the version the run's newest state was stored with (None: no schema).
        target: the version it was migrated to.
        seq: the new checkpoint's seq (migrated, not a dry run), else the head's.
        reason: why it failed or was skipped.
    """

    run_id: str
    status: Status
    source: int | None
    target: int | None
    seq: int
    reason: str = ""


@dataclass(slots=True)
class MigrationReport:
    """The summary of `vault.migrate` (or `vault.undo_migration`).

    Attributes:
        schema: the schema's name.
        target: the version runs were migrated to (None for an undo).
        dry_run: True if nothing was written.
        outcomes: one per run looked at, in the order they finished.
    """

    schema: str
    target: int | None
    dry_run: bool
    outcomes: list[RunOutcome] = field(default_factory=list)

    def _with(self, status: Status) -> list[RunOutcome]:
        return sorted((o for o in self.outcomes if o.status == status), key=lambda o: o.run_id)

    @property
    def migrated(self) -> list[RunOutcome]:
        return self._with("migrated")

    @property
    def current(self) -> list[RunOutcome]:
        return self._with("current")

    @property
    def failed(self) -> list[RunOutcome]:
        return self._with("failed")

    @property
    def skipped(self) -> list[RunOutcome]:
        return self._with("skipped")

    @property
    def ok(self) -> bool:
        """True when no run failed."""
        return not any(o.status == "failed" for o in self.outcomes)


def matching_runs(run_ids: Iterable[str], pattern: str) -> list[str]:
    """The ids that match a glob (`order-*`, `tenant/?/job*`); `*` matches every id."""
    if pattern == "*":
        return list(run_ids)
    return [r for r in run_ids if fnmatch.fnmatchcase(r, pattern)]


def migrate_runs(
    engine: Engine,
    store: SchemaStore,
    registry: SchemaRegistry,
    target: Schema,
    run_ids: list[str],
    *,
    dry_run: bool,
    workers: int,
    progress: Callable[[RunOutcome], None] | None,
) -> MigrationReport:
    """Migrate every run in `run_ids` to `target` (see the module docstring)."""
    if dry_run:
        store.check(target)
    else:
        store.ensure(target)  # before the first checkpoint that names it

    def one(run_id: str) -> RunOutcome:
        return _migrate_one(engine, registry, target, run_id, dry_run=dry_run)

    return _each(
        MigrationReport(target.name, target.version, dry_run), run_ids, one, workers, progress
    )


def undo_runs(
    engine: Engine,
    name: str,
    run_ids: list[str],
    *,
    dry_run: bool,
    workers: int,
    progress: Callable[[RunOutcome], None] | None,
) -> MigrationReport:
    """Give every run whose newest checkpoint a migration of `name` wrote a new checkpoint
    with the state from before it (stored as it was, with its old version)."""

    def one(run_id: str) -> RunOutcome:
        return _undo_one(engine, name, run_id, dry_run=dry_run)

    return _each(MigrationReport(name, None, dry_run), run_ids, one, workers, progress)


def _each(
    report: MigrationReport,
    run_ids: list[str],
    one: Callable[[str], RunOutcome],
    workers: int,
    progress: Callable[[RunOutcome], None] | None,
) -> MigrationReport:
    if workers <= 1 or len(run_ids) <= 1:
        for run_id in run_ids:
            outcome = one(run_id)
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
        return report
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="statevault-migrate") as pool:
        for future in as_completed([pool.submit(one, run_id) for run_id in run_ids]):
            outcome = future.result()
            report.outcomes.append(outcome)
            if progress is not None:
                progress(outcome)
    return report


def _newest(engine: Engine, run_id: str) -> tuple[CheckpointRecord, bytes] | None:
    newest = read_newest(engine, run_id, window=1)
    return newest[0] if newest else None


def _migrate_one(
    engine: Engine, registry: SchemaRegistry, target: Schema, run_id: str, *, dry_run: bool
) -> RunOutcome:
    name, version = target.name, target.version
    head_seq = 0
    try:
        newest = _newest(engine, run_id)
        if newest is None:
            return RunOutcome(run_id, "skipped", None, version, 0, "it has no checkpoint")
        head, sealed = newest
        head_seq = head.seq
        # A state entry's tag is its state's; a delta written by a schema-bound handle
        # carries the tag of the state it applies to. Either way, no state is read for a
        # run that is already current, so resuming an interrupted migration is cheap.
        if head.schema_tag == (name, version):
            return RunOutcome(run_id, "current", version, version, head.seq)
        found = materialize(engine, run_id, head, newer=[])
        tag: SchemaTag | None = found.base.schema_tag
        if tag is None or tag[0] != name:
            what = "no schema" if tag is None else f"schema {tag[0]!r}"
            return RunOutcome(run_id, "skipped", None, version, head.seq, f"it holds {what}")
        source = tag[1]
        if source == version:
            return RunOutcome(run_id, "current", version, version, head.seq)
        steps = plan(registry, name, source, version)
        state = run_steps(steps, found.state, source=source, target=version)
        try:
            plain = target.to_plain(target.from_plain(state))
        except SchemaValidationError as exc:
            last = steps[-1]
            raise MigrationError(
                f"its result does not match version {version}: at {exc.path} expected "
                f"{exc.expected}, found {exc.found}",
                schema=name,
                source=source,
                target=version,
                step=(last.source, last.target),
                function=last.label,
            ) from exc
        if dry_run:
            return RunOutcome(run_id, "migrated", source, version, head.seq)
        meta = {
            META_KEY: {
                "schema": name,
                "from_version": source,
                "to_version": version,
                "from_seq": head.seq,
            }
        }
        tree = engine.encode_state(plain)
        record, _ = engine.commit(
            run_id, tree, meta=meta, parent=Head(head.seq, sealed), schema=(name, version)
        )
        return RunOutcome(run_id, "migrated", source, version, record.seq)
    except MigrationError as exc:
        located = exc.located(run_id=run_id, seq=head_seq)
        return RunOutcome(run_id, "failed", exc.source, version, head_seq, str(located))
    except StateVaultError as exc:
        reason = f"{type(exc).__name__}: {exc}"
        return RunOutcome(run_id, "failed", None, version, head_seq, reason)


def _undo_one(engine: Engine, name: str, run_id: str, *, dry_run: bool) -> RunOutcome:
    try:
        newest = _newest(engine, run_id)
        if newest is None:
            return RunOutcome(run_id, "skipped", None, None, 0, "it has no checkpoint")
        head, sealed = newest
        done = engine.decode_meta(head).get(META_KEY) if head.kind in STATE_KINDS else None
        if not isinstance(done, dict) or done.get("schema") != name or "from_seq" not in done:
            return RunOutcome(
                run_id, "skipped", None, None, head.seq, "its newest checkpoint is no migration"
            )
        before_seq = int(done["from_seq"])
        stored = engine.record(run_id, before_seq)
        if stored is None:
            return RunOutcome(
                run_id, "failed", None, None, head.seq, f"checkpoint {before_seq} is gone"
            )
        found = materialize(engine, run_id, stored[0], newer=[])
        tag = found.base.schema_tag
        source = head.schema_version if head.schema is not None else None
        restored = None if tag is None else tag[1]
        if dry_run:
            return RunOutcome(run_id, "migrated", source, restored, head.seq)
        meta = {META_KEY: {"schema": name, "undone_seq": head.seq, "restored_seq": before_seq}}
        tree = engine.encode_state(found.state, known=found.digests)
        record, _ = engine.commit(
            run_id, tree, meta=meta, parent=Head(head.seq, sealed), schema=tag
        )
        return RunOutcome(run_id, "migrated", source, restored, record.seq)
    except StateVaultError as exc:
        return RunOutcome(run_id, "failed", None, None, 0, f"{type(exc).__name__}: {exc}")
