"""`Run`: one workflow instance's history of checkpoints."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final, TypeVar

from statevault import ops as ops_module
from statevault import paths
from statevault.backends.base import (
    LeaseGrant,
    StoredCheckpoint,
    check_run_id,
    check_write_lease,
)
from statevault.engine.aio import (
    DrivenContext,
    HandleLock,
    LoopLock,
    ThreadedContext,
    in_event_loop,
    refuse_in_event_loop,
)
from statevault.engine.checkpoints import DICTIONARY_LIMIT, NO_HEAD, Checkpoint, Engine, Head
from statevault.engine.journal import (
    KIND_FOLD,
    KIND_STATE,
    STATE_KINDS,
    CheckpointPolicy,
    Materialized,
    Since,
    commit_delta,
    delta_ops,
    materialize,
    read_newest,
)
from statevault.engine.leases import Lease, aacquire, acquire
from statevault.engine.records import CheckpointRecord, SchemaTag, open_record
from statevault.engine.schemas import SchemaStore
from statevault.errors import (
    CheckpointNotFound,
    ConflictError,
    CorruptionError,
    LeaseError,
    MigrationError,
    RunNotFound,
    SchemaError,
    SchemaValidationError,
    StateVaultError,
    StorageError,
)
from statevault.faults import crash_point, register
from statevault.schema.migrate import migrate_plain
from statevault.schema.registry import SchemaRegistry
from statevault.schema.types import Schema
from statevault.tree.lazy import LazyState
from statevault.tree.read import PathReader

if TYPE_CHECKING:
    from statevault.tree import WrittenTree
    from statevault.tree.write import Memo

T = TypeVar("T")


def _overlaps(changed: tuple[Any, ...] | list[Any], wanted: list[Any]) -> bool:
    """Whether a change at path `changed` can alter the value at path `wanted`.

    True when either path is a prefix of the other (keys compared loosely: `17` and
    `"17"` count as the same, which can only make the answer more cautious).
    """
    return all(a == b or str(a) == str(b) for a, b in zip(changed, wanted, strict=False))


def _journal_of(
    newest: list[tuple[CheckpointRecord, bytes]],
) -> list[tuple[CheckpointRecord, bytes]]:
    """The delta entries at the head of `newest` (newest first), oldest first."""
    journal = []
    for record, sealed in newest:
        if record.kind in STATE_KINDS:
            break
        journal.append((record, sealed))
    journal.reverse()
    return journal


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


MISSING: Final = _Missing()
_NOTHING: Final = object()

_FORCE_RETRIES = 20

_CRASH_BEFORE_FOLD = register(
    "run.fold.before", "a journal entry is committed; the policy's fold has not started"
)

_NOT_WRITTEN = "Nothing was written."
_STORED_INTACT = (
    "The stored state is unchanged: `run.load(raw=True)` returns it as stored. If the "
    "type changed since it was saved, register the new type under a new version with a "
    "migration."
)


@dataclass(frozen=True, slots=True)
class Binding:
    """What a schema-bound run needs: its schema, the migrations, the vault's documents."""

    schema: Schema
    registry: SchemaRegistry
    store: SchemaStore

    @property
    def tag(self) -> SchemaTag:
        return (self.schema.name, self.schema.version)


class Run:
    """A handle on one run. Get one with `vault.run("order-42")`.

    A handle remembers the head it last loaded or saved (or saw when it was made).
    Every commit (`save`, a transaction, `apply`) lands only on top of that head, so
    a writer never overwrites a checkpoint it has not seen: it gets `ConflictError`.

    A handle may be shared by threads; a transaction holds it for its duration.

    Example:
        >>> run = vault.run("order-42")            # doctest: +SKIP
        >>> run.save({"step": 1, "messages": []})  # doctest: +SKIP
        >>> with run.transaction() as s:           # doctest: +SKIP
        ...     s["messages"].append("hello")
        ...     s["step"] += 1
    """

    def __init__(
        self,
        engine: Engine,
        run_id: str,
        *,
        policy: CheckpointPolicy,
        binding: Binding | None = None,
    ) -> None:
        self._engine = engine
        self._id = check_run_id(run_id)
        self._policy = policy
        self._binding = binding
        # The schema tag of the state entry under the known head (None: no schema, or
        # not loaded). A schema-bound handle commits a delta only on a state entry of
        # its own version: the operations it records are on the migrated state.
        self._stored_tag: SchemaTag | None = None
        self._lock = HandleLock()
        self._async_lock = LoopLock()
        # The raw size of the state at the known head, if this handle saw it: a save
        # driven on an event loop encodes on the loop only a state known to be small.
        self._state_bytes: int | None = None
        # The head this handle commits on top of; read now, or, when made on an event
        # loop's thread (where reading would block it), by the first call that needs it.
        self._known_head: Head | None = None
        if not in_event_loop():
            self._known_head, _ = engine.head(run_id)
        # Digests of the newest tree this handle saved or loaded: the vault holds them,
        # so the next save neither compresses nor writes them again.
        self._known_objects: frozenset[bytes] = frozenset()
        # The state at the known head, owned by this handle (never handed out), so a
        # transaction costs its change, not a load. Valid only with `_since`.
        self._cache: Any = _NOTHING
        self._since = Since()
        # How the tree at the known head's last state entry was written, and the
        # operations this handle committed since: a fold then re-encodes only what
        # those operations touched. Dropped whenever the head moves under the handle.
        self._memo: Memo | None = None
        self._changes: list[ops_module.Op] = []
        # The lease this handle holds (`lease()`): its commits carry the fencing token.
        self._lease: Lease | None = None
        # The delta entries after the known head's last state entry, as (record, stored
        # bytes), as far as this handle knows them: the next state entry it commits
        # re-encodes them against itself (`Engine.relocate`).
        self._journal: list[tuple[CheckpointRecord, bytes]] = []

    @property
    def id(self) -> str:
        return self._id

    @property
    def schema(self) -> Schema | None:
        """The schema this handle saves and loads with (`vault.run(id, schema=...)`), or None."""
        return None if self._binding is None else self._binding.schema

    def __repr__(self) -> str:
        seq = "?" if self._known_head is None else self._known_head.seq
        return f"<Run {self._id!r} at checkpoint {seq}>"

    @property
    def _known(self) -> Head:
        known = self._known_head
        if known is None:
            known, _ = self._engine.head(self._id)
            self._known_head = known
        return known

    @_known.setter
    def _known(self, head: Head) -> None:
        self._known_head = head

    # -- writing whole states ----------------------------------------------------------
    def save(
        self, state: Any, *, meta: dict[str, Any] | None = None, force: bool = False
    ) -> Checkpoint:
        """Commit `state` as the run's next checkpoint, atomically and durably.

        With a schema (`vault.run(id, schema="order")`), `state` is an instance of the
        schema's type or plain data of its shape; it is validated first and stored in
        plain form, tagged with the schema's name and version.

        Args:
            state: the whole state (dicts, lists, scalars, bytes, datetimes, registered
                records, NumPy arrays, ...).
            meta: a small dict stored beside the checkpoint (shown by `statevault log`).
            force: commit on top of whatever the newest checkpoint is, even one this
                handle has not seen.

        Returns:
            The new checkpoint.

        Raises:
            SerializationError: the state holds a value that cannot be stored (nothing
                was written; the message names its path).
            SchemaValidationError: the state does not match the run's schema (nothing
                was written; the message names the path, what was expected and found).
            ConflictError: another writer moved the head since this handle last saw it
                (nothing was written).
            LeaseHeld: another worker holds the run's lease.
            LeaseLost: this handle's lease is no longer current.
        """
        refuse_in_event_loop("run.save()", "await run.asave()")
        tag = None
        if self._binding is not None:
            state = self._validated(state)[1]
            self._binding.store.ensure(self._binding.schema)
            tag = self._binding.tag
        with self._lock:
            tree = self._engine.encode_state(
                state,
                known=self._known_objects,
                fresh_limit=self._fresh_limit(),
                expected_bytes=self._state_bytes,
            )
            if not force:
                record, head = self._engine.commit(
                    self._id,
                    tree,
                    meta=meta,
                    parent=self._known,
                    lease_token=self._token,
                    schema=tag,
                )
            else:
                record, head = self._commit_forced(tree, meta, tag)
            self._known = head
            self._stored_tag = tag
            self._known_objects = frozenset(tree.digests)
            self._state_bytes = tree.raw_bytes
            self._cache = _NOTHING  # the caller owns `state`; it may change it later
            self._since = Since().after(record)
            self._memo, self._changes = tree.memo, []
            self._relocate(tree, record)
        return self._engine.checkpoint(record, head.record_hash)

    def _commit_forced(
        self, tree: WrittenTree, meta: dict[str, Any] | None, tag: SchemaTag | None
    ) -> tuple[CheckpointRecord, Head]:
        for _ in range(_FORCE_RETRIES):
            current, _ = self._engine.head(self._id)
            try:
                return self._engine.commit(
                    self._id, tree, meta=meta, parent=current, lease_token=self._token, schema=tag
                )
            except ConflictError:
                continue
        raise ConflictError(
            self._id, expected=current.seq, actual=self._engine.head(self._id)[0].seq
        )

    # -- ownership: the lease ------------------------------------------------------------
    @property
    def _token(self) -> int | None:
        lease = self._lease
        return lease.token if lease is not None else None

    @contextmanager
    def lease(
        self,
        ttl: float = 30.0,
        owner: str | None = None,
        wait: float | None = None,
        *,
        renew: bool = True,
    ) -> Iterator[Lease]:
        """Own the run exclusively for the `with` block: other writers are refused.

        While the block runs, this handle's commits carry the lease's fencing token and
        every other writer gets `LeaseHeld`. The lease is renewed in the background
        every `ttl / 3` seconds and released at the end of the block. If this process
        stalls for longer than `ttl` (a pause, a lost network), the lease expires,
        another worker may take it, and this handle's next commit is refused with
        `LeaseLost`: it can never overwrite its successor. A crashed holder's lease
        ends by itself after `ttl`; nothing needs unlocking.

        Load the state after taking the lease: a writer before it may have moved on.

        Args:
            ttl: seconds the lease lasts without renewal.
            owner: who holds it, as others see it; `host:pid:random` by default.
            wait: seconds to wait for another holder to let go (None: do not wait).
            renew: renew in the background; False lets the lease lapse after `ttl`
                unless `Lease.renew()` is called.

        Raises:
            LeaseHeld: another worker holds the lease (for all of `wait`).

        Example:
            >>> with run.lease(ttl=30, wait=10) as lease:   # doctest: +SKIP
            ...     state = run.load()
            ...     run.save(step(state))                   # refused if the lease was lost
        """
        refuse_in_event_loop("run.lease()", "async with run.alease()")
        lease = acquire(
            self._engine.backend, self._id, owner=owner, ttl=ttl, wait=wait, renew=renew
        )
        with self._holding(lease):
            yield lease

    def current_lease(self) -> LeaseGrant | None:
        """The run's lease if one is in force now (whoever holds it), else None.

        For showing who owns a run; to own it, use `lease()`.
        """
        refuse_in_event_loop("run.current_lease()", "await run.acurrent_lease()")
        stored = self._engine.backend.read_lease(self._id)
        return stored if stored is not None and stored.held_at(time.time()) else None

    def _check_lease_current(self) -> None:
        """Raise `LeaseLost` if this handle holds a lease that is no longer current.

        Called when the handle finds that the run moved under it: a holder whose lease
        was taken over hears that, not a conflict it might retry.
        """
        lease = self._lease
        if lease is not None:
            stored = self._engine.backend.read_lease(self._id)
            check_write_lease(self._id, stored, token=lease.token, now=time.time())

    @contextmanager
    def _holding(self, lease: Lease) -> Iterator[None]:
        """Make this handle's commits carry `lease`'s token; release it at the end."""
        self._hold(lease)
        try:
            yield
        finally:
            self._drop(lease)

    def _hold(self, lease: Lease) -> None:
        try:
            with self._lock:
                if self._lease is not None:
                    raise RuntimeError(
                        f"this handle of run {self._id!r} holds a lease already (token "
                        f"{self._lease.token}); leases do not nest"
                    )
                self._lease = lease
        except BaseException:
            lease.release()
            raise

    def _drop(self, lease: Lease) -> None:
        with self._lock:
            self._lease = None
        lease.release()

    # -- writing changes: the journal ---------------------------------------------------
    @contextmanager
    def transaction(
        self, *, meta: dict[str, Any] | None = None, default: Any = MISSING
    ) -> Iterator[Any]:
        """Change the state through a tracked view; the changes commit as one journal entry.

        The entry is durable when the `with` block exits. An exception inside the
        block rolls every change back and commits nothing. The cost is the size of
        the change, not of the state.

        Args:
            meta: a small dict stored with the entry.
            default: the starting state when the run has no checkpoint yet (then the
                first commit is a whole state).

        With a schema, the view shows the typed state (`order.status = "paid"`), and
        the changed state is validated before the commit: a change that breaks the
        schema rolls back and raises `SchemaValidationError`. Validation costs time in
        proportion to the state, not the change.

        Raises:
            ConflictError: another writer committed since this handle's head (nothing
                was written; the next transaction starts from the newer state).
            RunNotFound: the run has no checkpoint and no `default` was given.
            TransactionError: something was changed that the view cannot track.
            SchemaValidationError: the changed state does not match the run's schema
                (rolled back; nothing was written).

        Example:
            >>> with run.transaction() as s:       # doctest: +SKIP
            ...     s["messages"].append({"role": "user", "text": "hi"})
            ...     s["step"] += 1
        """
        from statevault.engine.tracking import track  # noqa: PLC0415 - only transactions need it

        refuse_in_event_loop("run.transaction()", "async with run.atransaction()")
        with self._lock:
            if self._cache is _NOTHING:
                self._refresh(allow_empty=default is not MISSING)
            if self._cache is _NOTHING:  # the run is empty and a default was given
                if self._binding is not None:
                    self._cache = self._validated(default)[0]
                else:
                    self._cache = ops_module.copy_value(default)
            base = self._known
            view, recorder = track(self._cache)
            try:
                yield view
            except BaseException:
                recorder.rollback()
                if base.seq == 0:
                    self._cache = _NOTHING
                raise
            operations = recorder.ops
            if operations and self._binding is not None:
                try:
                    checked = self._validated(recorder.state)[0]
                except BaseException:
                    recorder.rollback()
                    if base.seq == 0:
                        self._cache = _NOTHING
                    raise
            try:
                if operations:
                    self._cache = recorder.state if self._binding is None else checked
                    if base.seq == 0:
                        self._commit_state(self._cache, meta=meta, kind="state")
                    else:
                        self._commit_delta(operations, meta)
            except BaseException as exc:
                recorder.rollback()
                self._after_failed_commit(exc)
                raise
            recorder.close()  # views kept past the block refuse further changes

    def apply(
        self, operations: Iterable[ops_module.Op], *, meta: dict[str, Any] | None = None
    ) -> Checkpoint:
        """Commit delta operations (`statevault.ops`) as one journal entry.

        Raises:
            OpError: an operation does not fit the state (nothing was written).
            SchemaValidationError: the result does not match the run's schema (nothing
                was written).
            ConflictError: another writer committed since this handle's head.
            RunNotFound: the run has no checkpoint to apply them to.

        Example:
            >>> from statevault import ops
            >>> run.apply([ops.increment("step"), ops.append("log", "x")])  # doctest: +SKIP
        """
        refuse_in_event_loop("run.apply()", "await run.aapply()")
        batch = list(operations)
        with self._lock:
            state = self._materialized()
            undo = ops_module.UndoLog()
            root = ops_module.Root(state)
            try:
                for op in batch:
                    ops_module.apply_one(root, op, undo)
                result = root.value
                if self._binding is not None:
                    result = self._validated(result)[0]
            except BaseException:
                undo.rollback()
                raise
            self._cache = result
            try:
                return self._commit_delta(batch, meta)
            except BaseException as exc:
                self._after_failed_commit(exc)
                raise

    def checkpoint(self, *, meta: dict[str, Any] | None = None) -> Checkpoint:
        """Fold the journal into a state entry now (a no-op if the head is one already).

        Returns:
            The newest checkpoint afterwards.
        """
        refuse_in_event_loop("run.checkpoint()", "await run.acheckpoint()")
        with self._lock:
            state = self._materialized()
            head, record = self._engine.head(self._id)
            if record is not None and record.kind in STATE_KINDS and head == self._known:
                return self._engine.checkpoint(record, head.record_hash)
            return self._commit_state(state, meta=meta, kind=KIND_FOLD)

    def _commit_delta(
        self, operations: list[ops_module.Op], meta: dict[str, Any] | None
    ) -> Checkpoint:
        tag = None
        binding = self._binding
        if binding is not None:
            if self._stored_tag != binding.tag or not binding.schema.paths_match:
                # The stored state is of another version (this handle migrated it on
                # load), or its plain form names paths differently: the operations
                # would not replay on it, so the whole (validated) state is committed.
                self._memo, self._changes = None, []
                return self._commit_state(self._cache, meta=meta, kind=KIND_STATE)
            operations = [_plain_op(binding.schema, op) for op in operations]
            tag = binding.tag
        record, head = commit_delta(
            self._engine,
            self._id,
            operations,
            meta=meta,
            parent=self._known,
            lease_token=self._token,
            schema=tag,
        )
        self._changes.extend(operations)
        self._journal.append((record, head.sealed))
        self._known = head
        self._since = self._since.after(record)
        checkpoint = self._engine.checkpoint(record, head.record_hash)
        if self._since.due(self._policy):
            crash_point(_CRASH_BEFORE_FOLD)
            # Another writer may have moved on, this handle's lease lapsed, or the
            # storage failed: the fold is only an optimization, and the delta is
            # committed already, so its caller must not hear of a failure (it would
            # retry, and the change would land twice). The handle's next commit meets
            # the same refusal, or folds then, and says so.
            with suppress(ConflictError, LeaseError, StorageError):
                self._commit_state(self._cache, meta=None, kind=KIND_FOLD)
        return checkpoint

    def _commit_state(self, state: Any, *, meta: dict[str, Any] | None, kind: str) -> Checkpoint:
        tag = None
        memo, changes = self._memo, self._changes
        if self._binding is not None:
            self._binding.store.ensure(self._binding.schema)
            state = self._binding.schema.to_plain(state)  # validated when it was changed
            tag = self._binding.tag
            if not self._binding.schema.paths_match:
                memo, changes = None, []  # recorded paths are not the plain form's
        tree = self._engine.encode_state(
            state,
            known=self._known_objects,
            memo=memo,
            changes=changes,
            fresh_limit=self._fresh_limit(),
            expected_bytes=self._state_bytes,
        )
        record, head = self._engine.commit(
            self._id,
            tree,
            meta=meta,
            parent=self._known,
            kind=kind,
            lease_token=self._token,
            schema=tag,
        )
        self._known = head
        self._stored_tag = tag
        self._known_objects = frozenset(tree.digests)
        self._state_bytes = tree.raw_bytes
        self._since = Since().after(record)
        self._memo, self._changes = tree.memo, []
        self._relocate(tree, record)
        return self._engine.checkpoint(record, head.record_hash)

    def _fresh_limit(self) -> int:
        """How much of a state entry's new nodes to keep for `_relocate` (lock held)."""
        return DICTIONARY_LIMIT if self._journal else 0

    def _relocate(self, tree: WrittenTree, record: CheckpointRecord) -> None:
        """Re-encode the journal entries before `record` against its tree (lock held).

        Only an optimization of storage: the entries are valid as they are, so a
        failure here (the disk, another writer's repair) is not the caller's error,
        whose commit has already succeeded.
        """
        journal = [(r, sealed) for r, sealed in self._journal if r.seq < record.seq]
        self._journal = []
        with suppress(StateVaultError):
            self._engine.relocate(self._id, journal, tree.fresh)

    def _after_failed_commit(self, exc: BaseException) -> None:
        """Drop state that was never committed; after a conflict, adopt the newer head,
        so the caller's retry starts from it (and does not conflict a second time)."""
        self._cache = _NOTHING
        if isinstance(exc, ConflictError):
            with suppress(ConflictError, RunNotFound):
                self._refresh(allow_empty=True)

    def _newest(self) -> list[tuple[CheckpointRecord, bytes]]:
        """The newest entry, and the entries back to the state it replays from.

        One record first: most often it is a state or fold, and reading the whole
        window (up to `policy.records` deltas) and checking each would be wasted.
        Inline envelopes are checked where they are used, once (`open_record`).
        """
        newest = read_newest(self._engine, self._id, window=1, check_payloads=False)
        if newest and newest[0][0].kind not in STATE_KINDS:
            newest = read_newest(
                self._engine, self._id, window=self._policy.records + 2, check_payloads=False
            )
        return newest

    def _materialized(self) -> Any:
        """The state at the head, from this handle's cache or loaded (lock held)."""
        if self._cache is _NOTHING:
            self._refresh(allow_empty=False)
        return self._cache

    def _refresh(self, *, allow_empty: bool) -> None:
        """Load the newest state into the cache (lock held).

        If the newest head is not the one this handle knew, the handle adopts it and
        raises `ConflictError`: a change is never applied to a state its writer has
        not seen, and the retry starts from the newer state.
        """
        newest = self._newest()
        expected = self._known
        if not newest:
            self._known, self._cache, self._since = NO_HEAD, _NOTHING, Since()
            self._memo, self._changes, self._journal = None, [], []
            if expected.seq != 0:
                self._check_lease_current()
                raise ConflictError(self._id, expected=expected.seq, actual=0)
            if not allow_empty:
                raise RunNotFound(self._id)
            return
        record, sealed = newest[0]
        found = materialize(self._engine, self._id, record, newer=[r for r, _ in newest[1:]])
        state = self._typed(found, record.seq)
        self._known = Head(record.seq, sealed)
        self._known_objects = found.digests
        self._state_bytes = found.base.raw_bytes
        self._cache = state
        self._since = found.since
        self._stored_tag = found.base.schema_tag
        self._journal = _journal_of(newest)
        if self._known != expected:
            self._memo, self._changes = None, []
            self._check_lease_current()
            raise ConflictError(self._id, expected=expected.seq, actual=record.seq)

    # -- reading -----------------------------------------------------------------------
    def load(
        self,
        *,
        at: int | None = None,
        default: Any = MISSING,
        lazy: bool = False,
        raw: bool = False,
        mmap: bool = False,
    ) -> Any:
        """The newest committed state, or the state at checkpoint `at`.

        `at` is any seq of the run's history: a saved state, a journal entry (the
        state right after that transaction), or a fold. Loading the newest state also
        makes its head the one this handle commits on top of.

        With a schema, the state comes back as an instance of the schema's type,
        validated; a state stored with an older version is migrated in memory first
        (the stored checkpoint is unchanged until the next commit).

        Args:
            at: a checkpoint seq; None for the newest.
            default: returned (and nothing raised) when the run has no checkpoint.
            lazy: return a read-only `LazyState` view that reads each part of the state
                from the vault when it is first accessed (only the objects on the way).
                If journal entries follow the last state entry, they are replayed and
                the view holds the whole result. With a schema the view shows the
                stored plain form, at its stored version.
            raw: with a schema, return the state as stored (plain form, stored version),
                without migrating or validating it.
            mmap: NumPy arrays stored whole (`statevault.open(mmap_arrays=True)`) come
                back read-only over a memory map of the stored bytes, not copied, on a
                backend that can map objects (files); elsewhere, and for arrays stored
                otherwise, they are copied as usual. Each mapped array is checked in
                full (CRC-32 and digest) when it is mapped (docs/guide.md).

        Raises:
            RunNotFound: the run has no checkpoint and no `default` was given.
            CheckpointNotFound: there is no checkpoint `at`.
            CorruptionError: stored bytes fail their checks (never returned as data).
            UnknownTypeError: the state holds a record of an unregistered class.
            SchemaValidationError: the stored state does not match the run's schema.
            MigrationError: the stored state's version cannot be migrated to the
                schema's (a missing step, a failing or invalid migration).
        """
        refuse_in_event_loop("run.load()", "await run.aload()")
        if lazy:
            return self._load_lazy(at, default, mmap=mmap)
        if at is None:
            newest = self._newest()
            if not newest:
                if default is not MISSING:
                    with self._lock:
                        self._known, self._cache, self._since = NO_HEAD, _NOTHING, Since()
                    return default
                raise RunNotFound(self._id)
            record, sealed = newest[0]
            found = materialize(
                self._engine, self._id, record, newer=[r for r, _ in newest[1:]], mmap=mmap
            )
            state = found.state if raw else self._typed(found, record.seq)
            with self._lock:
                if Head(record.seq, sealed) != self._known:
                    self._memo, self._changes = None, []
                self._known = Head(record.seq, sealed)
                self._known_objects = found.digests
                self._cache = _NOTHING  # `state` goes to the caller
                self._since = found.since
                self._stored_tag = found.base.schema_tag
                self._journal = _journal_of(newest)
            return state
        record, _ = self._record_at(at)
        found = materialize(self._engine, self._id, record, newer=[], mmap=mmap)
        return found.state if raw else self._typed(found, record.seq)

    # -- schemas -----------------------------------------------------------------------
    def _validated(self, state: Any) -> tuple[Any, Any]:
        """(typed, plain) of a state about to be committed; raises before anything is written."""
        assert self._binding is not None
        try:
            return self._binding.schema.check(state)
        except SchemaValidationError as exc:
            raise exc.located(run_id=self._id, hint=_NOT_WRITTEN) from None

    def _typed(self, found: Materialized, seq: int) -> Any:
        """The loaded state as the bound schema's type (migrated if stored older)."""
        binding = self._binding
        if binding is None:
            return found.state
        tag = found.base.schema_tag
        schema = binding.schema
        if tag is not None and tag[0] != schema.name:
            raise SchemaError(
                f"run {self._id!r} checkpoint {seq} holds a state of schema {tag[0]!r} "
                f"version {tag[1]}, not {schema.name!r}. Open the run with "
                f"schema={tag[0]!r}, or without a schema to read it as stored.",
                schema=schema.name,
            )

        def reload() -> Any:  # a fresh copy, only to explain a failed migration
            return materialize(self._engine, self._id, self._record_at(seq)[0], newer=[]).state

        try:
            return migrate_plain(
                binding.registry,
                schema,
                found.state,
                None if tag is None else tag[1],
                reload=reload,
            )[0]
        except SchemaValidationError as exc:
            raise exc.located(run_id=self._id, seq=seq, hint=_STORED_INTACT) from None
        except MigrationError as exc:
            raise exc.located(run_id=self._id, seq=seq) from exc.__cause__

    def _load_lazy(self, at: int | None, default: Any, *, mmap: bool) -> Any:
        if at is None:
            newest = [r for r, _ in read_newest(self._engine, self._id, window=1)]
            if not newest:
                if default is not MISSING:
                    return default
                raise RunNotFound(self._id)
            record = newest[0]
        else:
            record = self._record_at(at)[0]
        if record.kind in STATE_KINDS:
            return self._engine.lazy_state(record, mmap=mmap)
        state = self.load(at=record.seq, mmap=mmap)
        return LazyState(PathReader(self._engine.backend.get_objects, self._engine.codec), state)

    def get(
        self,
        path: str | list[Any],
        *,
        at: int | None = None,
        default: Any = MISSING,
        mmap: bool = False,
    ) -> Any:
        """The value at `path` (`"results.rows.17"`) in the newest state or checkpoint `at`.

        Only the objects on the path are read: one field of a large state costs a few
        small reads, not a load. If a journal entry since the last state entry changed
        the path, the state is replayed first, so the answer is always exact.
        `mmap`: as for `load`.

        Raises:
            KeyError: the path does not exist (unless `default` is given).
        """
        refuse_in_event_loop("run.get()", "await run.aget()")
        keys = paths.parse(path) if isinstance(path, str) else list(path)
        try:
            return self._get(keys, at, mmap=mmap)
        except KeyError:
            if default is not MISSING:
                return default
            raise

    def _get(self, keys: list[Any], at: int | None, *, mmap: bool) -> Any:
        if at is None:
            newest = [r for r, _ in self._newest()]
            if not newest:
                raise RunNotFound(self._id)
        else:
            newest = [self._record_at(at)[0]]
        known = {r.seq: r for r in newest}
        record = newest[0]
        deltas: list[CheckpointRecord] = []
        while record.kind not in STATE_KINDS:
            deltas.append(record)
            found = known.get(record.seq - 1)
            if found is None:
                stored = self._engine.record(self._id, record.seq - 1)
                if stored is None:  # let materialize name the damage
                    return paths.lookup(
                        materialize(self._engine, self._id, newest[0], newer=newest[1:]).state,
                        keys,
                    )
                found = stored[0]
            record = found
        dictionaries = self._engine.dictionaries()
        touched = (
            op.path for delta in deltas for op in delta_ops(self._engine, delta, dictionaries)
        )
        if any(_overlaps(path, keys) for path in touched):
            state = materialize(
                self._engine, self._id, newest[0], newer=newest[1:], mmap=mmap
            ).state
            return paths.lookup(state, keys)
        return self._engine.get_path(record, keys, mmap=mmap)

    def _record_at(self, at: int) -> tuple[CheckpointRecord, bytes]:
        if isinstance(at, bool) or not isinstance(at, int) or at < 1:
            raise ValueError(f"at must be a checkpoint seq (an int >= 1); got {at!r}")
        found = self._engine.record(self._id, at)
        if found is None:
            head, _ = self._engine.head(self._id)
            if head.seq == 0:
                raise RunNotFound(self._id)
            if at < head.seq:
                # Histories have no holes: a seq below the head that cannot be read was
                # lost to damage (a SQLite index page, a deleted file), not never written.
                raise CorruptionError(
                    f"the run's history runs to checkpoint {head.seq}, but checkpoint {at} "
                    f"cannot be found in it",
                    run_id=self._id,
                    seq=at,
                    hint="Run `statevault verify PATH` to see the damage, and "
                    "`statevault repair PATH` to roll the run back before it.",
                )
            raise CheckpointNotFound(self._id, at, head.seq)
        return found

    def checkpoints(self, *, limit: int | None = None) -> list[Checkpoint]:
        """The run's checkpoints (every kind), newest first, in one read."""
        refuse_in_event_loop("run.checkpoints()", "await run.acheckpoints()")
        stored = self._engine.backend.read_checkpoints(self._id, limit=limit)
        # Histories have no holes (see `_record_at`): a listing that skips seqs, or a
        # whole listing that stops above 1, lost them to damage and must not pass for
        # the history.
        whole = limit is None or len(stored) < limit
        ends = [*stored, StoredCheckpoint(0, b"")] if whole and stored else stored
        for newer, older in pairwise(ends):
            if older.seq != newer.seq - 1:
                raise CorruptionError(
                    f"the run's history lists checkpoint {newer.seq} and then "
                    f"{older.seq or 'nothing'}: the checkpoints between cannot be found",
                    run_id=self._id,
                    seq=newer.seq - 1,
                    hint="Run `statevault verify PATH` to see the damage.",
                )
        return [
            self._engine.checkpoint(*open_record(item.record, run_id=self._id, seq=item.seq))
            for item in stored
        ]

    def checkpoint_at(self, seq: int) -> Checkpoint:
        """The checkpoint `seq` (its record, not its state)."""
        refuse_in_event_loop("run.checkpoint_at()", "await run.acheckpoint_at()")
        return self._engine.checkpoint(*self._record_at(seq))

    @property
    def head(self) -> Checkpoint | None:
        """The newest checkpoint in the vault now (not necessarily the one this handle saw)."""
        refuse_in_event_loop("run.head", "await run.ahead()")
        head, record = self._engine.head(self._id)
        if record is None:
            return None
        return self._engine.checkpoint(record, head.record_hash)

    @property
    def known_seq(self) -> int:
        """The head seq this handle will commit on top of (0: none)."""
        return self._known.seq

    # -- the async API: the same calls, awaited ------------------------------------------
    # Each runs its blocking twin off the event loop (`_offload`). Do not change a state
    # passed to `asave` before the call returns: it may be encoded on another thread.

    async def _offload(self, call: Callable[[], T]) -> T:
        """`Engine.offload`, one call of this handle at a time on each event loop."""
        async with self._async_lock():
            return await self._engine.offload(call)

    async def asave(
        self, state: Any, *, meta: dict[str, Any] | None = None, force: bool = False
    ) -> Checkpoint:
        """`save`, awaited."""
        return await self._offload(lambda: self.save(state, meta=meta, force=force))

    async def aload(
        self,
        *,
        at: int | None = None,
        default: Any = MISSING,
        lazy: bool = False,
        raw: bool = False,
        mmap: bool = False,
    ) -> Any:
        """`load`, awaited. A lazy view still reads on access: use it off the loop."""
        return await self._offload(
            lambda: self.load(at=at, default=default, lazy=lazy, raw=raw, mmap=mmap)
        )

    async def aget(
        self,
        path: str | list[Any],
        *,
        at: int | None = None,
        default: Any = MISSING,
        mmap: bool = False,
    ) -> Any:
        """`get`, awaited."""
        return await self._offload(lambda: self.get(path, at=at, default=default, mmap=mmap))

    async def aapply(
        self, operations: Iterable[ops_module.Op], *, meta: dict[str, Any] | None = None
    ) -> Checkpoint:
        """`apply`, awaited."""
        batch = list(operations)
        return await self._offload(lambda: self.apply(batch, meta=meta))

    async def acheckpoint(self, *, meta: dict[str, Any] | None = None) -> Checkpoint:
        """`checkpoint`, awaited."""
        return await self._offload(lambda: self.checkpoint(meta=meta))

    async def acheckpoints(self, *, limit: int | None = None) -> list[Checkpoint]:
        """`checkpoints`, awaited."""
        return await self._offload(lambda: self.checkpoints(limit=limit))

    async def acheckpoint_at(self, seq: int) -> Checkpoint:
        """`checkpoint_at`, awaited."""
        return await self._offload(lambda: self.checkpoint_at(seq))

    async def acurrent_lease(self) -> LeaseGrant | None:
        """`current_lease`, awaited."""
        return await self._offload(self.current_lease)

    async def ahead(self) -> Checkpoint | None:
        """`head`, awaited."""
        return await self._offload(lambda: self.head)

    @asynccontextmanager
    async def atransaction(
        self, *, meta: dict[str, Any] | None = None, default: Any = MISSING
    ) -> AsyncIterator[Any]:
        """`transaction`, as an async context manager.

        The block runs on the event loop. Loading before it and committing after it run
        where the backend runs brief calls (a thread of its own per transaction, or, on
        PostgreSQL, a greenlet on the loop), which holds this handle for the whole
        block: do not await other calls of the same handle inside it (they would wait
        for the block to end).

        Example:
            >>> async with run.atransaction() as s:     # doctest: +SKIP
            ...     s["step"] += 1
        """

        def factory() -> AbstractContextManager[Any]:
            return self.transaction(meta=meta, default=default)

        async with self._async_lock():
            context: DrivenContext[Any] | ThreadedContext[Any]
            if await self._engine.driving():
                context = DrivenContext(factory)
            else:
                context = ThreadedContext(factory, name=f"statevault-transaction-{self._id}")
            view = await context.enter()
            try:
                yield view
            except BaseException as exc:
                await context.exit(exc)
                raise
            await context.exit(None)

    @asynccontextmanager
    async def alease(
        self,
        ttl: float = 30.0,
        owner: str | None = None,
        wait: float | None = None,
        *,
        renew: bool = True,
    ) -> AsyncIterator[Lease]:
        """`lease`, as an async context manager; waiting for the lease does not block the loop."""
        lease = await aacquire(self._engine, self._id, owner=owner, ttl=ttl, wait=wait, renew=renew)
        await self._offload(lambda: self._hold(lease))
        try:
            yield lease
        finally:
            await self._offload(lambda: self._drop(lease))


def _plain_op(schema: Schema, op: ops_module.Op) -> ops_module.Op:
    """An operation recorded on a typed state, as it applies to the plain form.

    Paths match (`Schema.paths_match`); values and keys are converted the way the
    whole state is (records to dicts, enums to their values).
    """
    path = tuple(schema.to_plain(key) for key in op.path)
    if isinstance(op, ops_module.DeleteOp):
        return ops_module.DeleteOp(path)
    if isinstance(op, ops_module.IncrementOp):
        return ops_module.IncrementOp(path, op.amount)
    if isinstance(op, ops_module.ExtendOp):
        return ops_module.ExtendOp(path, tuple(schema.to_plain(list(op.values))))
    if isinstance(op, ops_module.MergeOp):
        return ops_module.MergeOp(path, schema.to_plain(op.mapping))
    return type(op)(path, schema.to_plain(op.value))
