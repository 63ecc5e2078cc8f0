"""The byte-level contract every backend fulfils.

A backend stores opaque bytes: objects under their digests, checkpoint records
under (run, seq), and a little vault metadata. It knows nothing of encodings,
trees or states; the engine composes those above it. Every backend passes the
suite in `statevault.testing`.

Heads are not stored separately from records: a run's head is its highest
checkpoint seq, and a commit inserts seq = expected_head + 1 only if the head is
still `expected_head` and its record is still byte for byte `expected_record`.
That one conditional insert is the compare-and-swap that keeps two writers from
losing an update. Comparing the record, not only its seq, closes the ABA hole: a
run deleted and saved again up to the same seq has other records, so a writer
that saw the old history cannot append to the new one.

Leases give one worker exclusive ownership of a run for a while. Each grant carries a
fencing token, larger than every token the run has had before. A write made under a
lease passes its token, and the backend checks it in the same atomic step as the
compare-and-swap: a worker whose lease expired while it was paused cannot overwrite
its successor, however late its write arrives. The decisions are made once, here
(`grant_lease`, `renew_grant`, `check_write_lease`); backends only store the grant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, TypeVar, runtime_checkable

from statevault.errors import InvalidRunIdError, LeaseHeld, LeaseLost, describe

Durability = Literal["fsync", "process"]
"""`fsync`: a returned commit survives power loss. `process`: it survives a crash of
the process only (the OS may lose it if the machine stops)."""

MAX_RUN_ID_LENGTH = 256

META_FORMAT = "format"
"""The meta key holding the vault format version, as ASCII digits. Every backend
writes the initial metadata when it creates a store, so this key marks a vault."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do; the engine and the conformance suite ask, never assume.

    Attributes:
        persistent: data outlives the process (false for memory).
        multi_process: several processes may open the same vault at once.
        durable_fsync: `durability="fsync"` really reaches stable storage.
        leases: leases with fencing tokens are enforced (`acquire_lease` and the
            `lease_token` of writes).
        notify: the backend wakes watchers when a run changes (`NotifyingBackend.listen`);
            without it, `Vault.watch` polls.
        rewrite_records: records below a run's head can be replaced by equivalent bytes
            (`RewritingBackend.rewrite_records`); without it, journal entries keep the
            encoding they were committed with.
        map_objects: an object's stored bytes can be mapped into memory read-only
            (`MappingBackend.map_object`); without it, `load(mmap=True)` copies.
    """

    persistent: bool
    multi_process: bool
    durable_fsync: bool
    leases: bool = False
    notify: bool = False
    rewrite_records: bool = False
    map_objects: bool = False


MAX_OWNER_LENGTH = 256


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """A run's lease as the backend stores it.

    Attributes:
        run_id: the run.
        owner: who holds it.
        token: the fencing token: larger than every token granted before on this run.
        expires_at: when it ends unless renewed, in Unix seconds by the backend's clock
            (a released lease keeps its token and has `expires_at` 0).
    """

    run_id: str
    owner: str
    token: int
    expires_at: float

    def held_at(self, now: float) -> bool:
        """True while the lease is in force."""
        return now < self.expires_at


def check_lease_args(owner: object, ttl: object) -> None:
    """Raise TypeError or ValueError unless `owner` and `ttl` can make a lease."""
    if not isinstance(owner, str) or not owner or len(owner) > MAX_OWNER_LENGTH:
        raise ValueError(
            f"a lease owner must be a non-empty str of at most {MAX_OWNER_LENGTH} characters; "
            f"got {owner!r}"
        )
    check_ttl(ttl)


def check_ttl(ttl: object) -> None:
    """Raise TypeError or ValueError unless `ttl` is a positive, finite number of seconds."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds; got {type(ttl).__qualname__}")
    if not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"ttl must be a positive, finite number of seconds; got {ttl!r}")


def check_token(token: object) -> int:
    """Return `token` if it can be a fencing token (an int >= 1), else raise TypeError."""
    if isinstance(token, bool) or not isinstance(token, int) or token < 1:
        raise TypeError(f"a lease token must be an int >= 1; got {token!r}")
    return token


def grant_lease(
    run_id: str, stored: LeaseGrant | None, *, owner: str, ttl: float, now: float
) -> LeaseGrant:
    """The grant `acquire_lease` stores, given the stored one; LeaseHeld if it is someone else's.

    An owner that acquires again gets a new token too: its old token is then stale, as
    for anyone else, so two handles of one owner cannot both write.
    """
    if stored is not None and stored.held_at(now) and stored.owner != owner:
        raise LeaseHeld(run_id, owner=stored.owner, expires_at=stored.expires_at)
    token = stored.token + 1 if stored is not None else 1
    return LeaseGrant(run_id, owner, token, now + ttl)


def renew_grant(
    run_id: str, stored: LeaseGrant | None, *, token: int, ttl: float, now: float
) -> LeaseGrant:
    """The grant `renew_lease` stores; LeaseLost unless `token` is the lease in force."""
    check_write_lease(run_id, stored, token=token, now=now)
    assert stored is not None  # check_write_lease raised otherwise
    return replace(stored, expires_at=now + ttl)


def released_grant(stored: LeaseGrant | None, *, token: int, now: float) -> LeaseGrant | None:
    """The grant `release_lease` stores (the token is kept), or None to change nothing."""
    if stored is None or stored.token != token or not stored.held_at(now):
        return None
    return replace(stored, expires_at=0.0)


def check_write_lease(
    run_id: str, stored: LeaseGrant | None, *, token: int | None, now: float
) -> None:
    """Raise unless a write carrying `token` (None: no lease) may change the run now.

    Raises:
        LeaseLost: `token` is not the lease in force (expired, released, superseded).
        LeaseHeld: the write carries no token, and someone holds the lease.
    """
    if token is None:
        if stored is not None and stored.held_at(now):
            raise LeaseHeld(run_id, owner=stored.owner, expires_at=stored.expires_at)
        return
    check_token(token)
    if stored is not None and stored.token == token and stored.held_at(now):
        return
    if stored is None or stored.token < token:
        detail = "the run has no such lease"
    elif stored.token > token:
        detail = f"a later lease (token {stored.token}) was granted to {stored.owner!r}"
    elif stored.expires_at == 0.0:
        detail = "it was released"
    else:
        detail = f"it expired {now - stored.expires_at:.1f} s ago"
    raise LeaseLost(run_id, token=token, detail=detail)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint record as the backend holds it: its seq and its bytes."""

    seq: int
    record: bytes


Rewrite = tuple[int, bytes, bytes]
"""(seq, the record's bytes as the caller read them, the bytes to store instead)."""


def check_run_id(run_id: object) -> str:
    """Return `run_id` if it is a valid run id, else raise `InvalidRunIdError`."""
    if not isinstance(run_id, str):
        raise InvalidRunIdError(
            f"a run id must be a str, got {type(run_id).__qualname__} {run_id!r}"
        )
    if not run_id:
        raise InvalidRunIdError("a run id must not be empty")
    if len(run_id) > MAX_RUN_ID_LENGTH:
        raise InvalidRunIdError(
            f"a run id has at most {MAX_RUN_ID_LENGTH} characters; got {len(run_id)} "
            f"({run_id[:40]!r}...)"
        )
    if "\x00" in run_id:
        raise InvalidRunIdError(f"a run id must not contain NUL characters: {run_id!r}")
    try:
        run_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRunIdError(
            f"a run id must be encodable as UTF-8 (no lone surrogates): {run_id!r}"
        ) from exc
    return run_id


def check_keep_through(keep_through: object) -> int:
    """Return `keep_through` if `roll_back` may take it (an int >= 0), else raise ValueError."""
    if isinstance(keep_through, bool) or not isinstance(keep_through, int) or keep_through < 0:
        raise ValueError(f"keep_through must be an int >= 0; got {keep_through!r}")
    return keep_through


def check_rewrites(rewrites: Iterable[Rewrite]) -> list[tuple[int, bytes, bytes]]:
    """`rewrites` as a list of (seq, expected bytes, new bytes), or TypeError/ValueError."""
    checked: list[tuple[int, bytes, bytes]] = []
    for item in rewrites:
        if not (isinstance(item, tuple) and len(item) == 3):
            raise TypeError(f"a rewrite is (seq, expected, new); got {item!r:.80}")
        seq, expected, new = item
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            raise ValueError(f"a rewrite's seq must be an int >= 1; got {seq!r}")
        if not isinstance(expected, bytes | bytearray) or not isinstance(new, bytes | bytearray):
            raise TypeError(f"a rewrite of checkpoint {seq} must carry bytes")
        checked.append((seq, bytes(expected), bytes(new)))
    return checked


def check_next_seq(seq: int, expected_head: int) -> None:
    """Raise ValueError unless `seq` is the one a commit on `expected_head` may write."""
    if isinstance(expected_head, bool) or not isinstance(expected_head, int) or expected_head < 0:
        raise ValueError(f"expected_head must be an int >= 0; got {expected_head!r}")
    if seq != expected_head + 1:
        raise ValueError(f"seq must be expected_head + 1 ({expected_head + 1}); got {seq}")


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix`, if any.

    SQL backends compare run ids bytewise as UTF-8 (SQLite's TEXT, PostgreSQL's "C"
    collation), which orders like Python's code points, so `prefix <= id < bound` is an
    index range scan.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot appear in UTF-8
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


def check_bytes(name: str, value: object) -> None:
    """Raise TypeError unless `value` is bytes-like; backends check arguments before writing."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes; got {describe(value)}")


def checked_objects(items: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`items` as a list of (digest, data) pairs of bytes, or TypeError."""
    pairs = list(items)
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"objects must be (digest, data) pairs; got {describe(pair)}")
        check_bytes("an object digest", pair[0])
        check_bytes("object data", pair[1])
    return pairs


@runtime_checkable
class Backend(Protocol):
    """Where bytes live. Methods are safe to call from several threads.

    Every method that changes data is atomic (whole or nothing, also across a crash)
    and, with `durability="fsync"`, durable when it returns.
    """

    @property
    def location(self) -> str:
        """A human-readable name of the store (a path or URL without secrets)."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    # -- metadata ---------------------------------------------------------------------
    def get_meta(self) -> dict[str, bytes]:
        """All metadata entries."""
        ...

    def set_meta(self, key: str, value: bytes) -> None:
        """Set one metadata entry."""
        ...

    # -- objects: immutable, content-addressed, written once --------------------------
    def put_objects(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Store (digest, data) pairs. A digest already present is left as it is."""
        ...

    def get_objects(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        """The data of each digest present; absent digests are left out."""
        ...

    def has_objects(self, digests: Iterable[bytes]) -> set[bytes]:
        """The subset of `digests` present."""
        ...

    def delete_objects(self, digests: Iterable[bytes]) -> None:
        """Remove objects; absent ones are ignored."""
        ...

    def scan_objects(self) -> Iterator[bytes]:
        """Every stored digest, in no particular order."""
        ...

    # -- runs and checkpoints ---------------------------------------------------------
    def list_runs(self, prefix: str = "") -> list[str]:
        """Ids of runs with at least one checkpoint, sorted, starting with `prefix`."""
        ...

    def head(self, run_id: str) -> int:
        """The run's newest checkpoint seq, or 0 when it has none."""
        ...

    def commit_checkpoint(
        self,
        run_id: str,
        seq: int,
        record: bytes,
        *,
        expected_head: int,
        expected_record: bytes | None = None,
        objects: Sequence[tuple[bytes, bytes]] = (),
        lease_token: int | None = None,
    ) -> None:
        """Store `objects`, then record `seq` = `expected_head` + 1 as the new head.

        The record is stored only if the run's head is still `expected_head` and, when
        `expected_record` is given, the head's record equals it; otherwise nothing of
        the record is written and `ConflictError` is raised (objects may remain: they
        are immutable and harmless, and GC collects them).

        The lease is checked in the same atomic step (`check_write_lease`): with
        `lease_token` the write needs that lease in force (else `LeaseLost`); without
        it, no lease may be in force (else `LeaseHeld`).
        """
        ...

    def read_checkpoint(self, run_id: str, seq: int) -> bytes | None:
        """One record's bytes, or None."""
        ...

    def read_checkpoints(
        self, run_id: str, *, newest_first: bool = True, limit: int | None = None
    ) -> list[StoredCheckpoint]:
        """The run's records in one call (no query per checkpoint)."""
        ...

    def delete_run(self, run_id: str, *, lease_token: int | None = None) -> bool:
        """Remove a run and its records (objects stay for GC). False if it had none.

        The run's lease, and the count of its fencing tokens, outlive it. The lease is
        checked as for `commit_checkpoint`.
        """
        ...

    # -- leases -----------------------------------------------------------------------
    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> LeaseGrant:
        """Grant `owner` the run's lease for `ttl` seconds, with a new fencing token.

        Granted if no lease is in force or it is `owner`'s already (`grant_lease`).
        Durable when it returns: a token is never granted twice, also across crashes.

        Raises:
            LeaseHeld: someone else holds it.
        """
        ...

    def renew_lease(self, run_id: str, token: int, ttl: float) -> LeaseGrant:
        """Extend the lease `token` to `ttl` seconds from now.

        Raises:
            LeaseLost: `token` is not the lease in force.
        """
        ...

    def release_lease(self, run_id: str, token: int) -> None:
        """End the lease `token` now if it is in force; otherwise do nothing."""
        ...

    def read_lease(self, run_id: str) -> LeaseGrant | None:
        """The run's stored lease (in force or not), or None if it never had one."""
        ...

    # -- repair ---------------------------------------------------------------------
    def roll_back(
        self, run_id: str, keep_through: int, *, lease_token: int | None = None
    ) -> list[StoredCheckpoint]:
        """Remove the run's records with seq > `keep_through`, atomically; return them.

        `keep_through` >= 0; 0 removes every record, as `delete_run` does. The removed
        records come back oldest first, so the caller can keep them aside. Durable when
        it returns; a writer that still expects a removed head gets `ConflictError`.
        The lease is checked as for `commit_checkpoint`.
        """
        ...

    def quarantine_objects(self, digests: Iterable[bytes]) -> int:
        """Move objects aside, never deleting them; returns how many were moved.

        Afterwards `get_objects`, `has_objects` and `scan_objects` no longer see them,
        but their bytes stay in the backend's quarantine area (see
        `quarantined_objects`). Absent digests are ignored.
        """
        ...

    def quarantined_objects(self) -> dict[bytes, bytes]:
        """Every quarantined object: digest -> the bytes it had when it was moved aside.

        A digest quarantined more than once (damaged again after a fresh copy was
        stored) keeps every copy in the quarantine area; this returns the first.
        """
        ...

    def close(self) -> None:
        """Release connections, locks and files. Further calls raise."""
        ...


class ChangeListener(Protocol):
    """A subscription to a backend's change notifications (see `NotifyingBackend`)."""

    def wait(self, timeout: float) -> bool:
        """Block until some run may have changed since the last wait, or `timeout` passes.

        True if woken by a change. A wake-up is a hint: the caller reads heads to learn
        what changed, so a spurious one costs a read, never a wrong answer.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class NotifyingBackend(Backend, Protocol):
    """A backend that says when runs change (`capabilities.notify`), so watchers need not poll.

    PostgreSQL does it with LISTEN/NOTIFY, memory with a condition variable.
    """

    def listen(self) -> ChangeListener:
        """Subscribe to commits and deletions of every run, from now on."""
        ...


_T = TypeVar("_T")


@runtime_checkable
class OffloadingBackend(Backend, Protocol):
    """A backend that runs the async API's blocking calls its own way.

    Without it, each `await run.asave(...)` runs the blocking call on a thread of the
    event loop's default executor. PostgreSQL drives brief calls on the loop with
    psycopg's async connections (`statevault.bridge`), and runs the others on
    threads of its own, as many as its pool has connections.
    """

    async def offload(self, call: Callable[[], _T], *, brief: bool = True) -> _T:
        """Run the blocking `call` without blocking the event loop; return its result.

        `brief`: the call does little but I/O, and waits for nothing else (a worker pool,
        another thread), so it may run on the loop's thread with its I/O awaited.
        """
        ...

    async def driving(self) -> bool:
        """True if brief calls from the running loop run on it, in greenlets whose I/O
        is awaited (`statevault.bridge`). Code driven so may also pause in
        `bridge.wait_for` on anything the loop can await (a transaction waiting for
        its `async with` block to end)."""
        ...


@runtime_checkable
class RewritingBackend(Backend, Protocol):
    """A backend that can re-encode stored records in place (`capabilities.rewrite_records`)."""

    def rewrite_records(
        self,
        run_id: str,
        rewrites: Sequence[Rewrite],
        *,
        objects: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        """Replace records below the run's head by equivalent bytes; returns how many.

        Each (seq, expected, new) replaces record `seq` only if it is still exactly
        `expected` and `seq` is below the run's head: the head's record is what
        writers compare against, so it never changes under them. `objects` are stored
        first, durable no later than any record that refers to them. The engine
        guarantees that `new` is the same record (same body and hash, an envelope of
        the same content), so no reader can tell, and no lease is checked: nothing in
        the run's history changes. Each replacement is atomic; after a crash each
        record is either its old or its new bytes.
        """
        ...


@runtime_checkable
class MappingBackend(Backend, Protocol):
    """A backend that can map an object's bytes into memory (`capabilities.map_objects`)."""

    def map_object(self, digest: bytes) -> memoryview | None:
        """A read-only view of the object's stored bytes through a memory map (no copy;
        `view.obj` is the `mmap.mmap`), or None if the object is absent.

        Pages are read on access; the map stays valid while it is referenced, even if the
        object is deleted meanwhile. Its bytes are not checked here: the engine checks
        them as it checks every object it reads.
        """
        ...


@dataclass(frozen=True, slots=True)
class UpgradeStep:
    """One step of an upgrade (`Vault.upgrade`), as planned or as done.

    Attributes:
        name: what changes, for people: "vault format 2 -> 3", "files layout 1 -> 2".
        runs: runs whose stored bytes it rewrites.
        records: records (rows, files) it rewrites.
        bytes: bytes it rewrites.
        detail: one line on what it changes and what it keeps.
    """

    name: str
    runs: int = 0
    records: int = 0
    bytes: int = 0
    detail: str = ""


StepProgress = Callable[[int, int], None]
"""Called as a step goes: (units done, units in all), in the step's own units."""


@runtime_checkable
class LayoutUpgradingBackend(Backend, Protocol):
    """A backend whose own storage layout has versions (the files backend's directory
    layout), brought to its newest by `Vault.upgrade` (`statevault upgrade`), never on
    open: an older layout is read and written as it is until then.

    `Vault.upgrade` calls `plan_layout_upgrade` first (and only that for a dry run),
    then `upgrade_layout` when it returned a step, before it writes the vault format.
    """

    def plan_layout_upgrade(self) -> UpgradeStep | None:
        """What `upgrade_layout` would rewrite; None when the layout is the newest.

        Reads only: a dry run calls it and must leave every byte as it was.
        """
        ...

    def upgrade_layout(self, progress: StepProgress | None = None) -> UpgradeStep | None:
        """Bring the layout to the newest; returns what was rewritten (None: nothing).

        Must be safe to kill at any point (the store opens and reads every run
        correctly in every state in between), finish when called again after a kill,
        and do nothing on the newest layout. Other handles may have the store open:
        it stays correct for them, or the backend refuses with a typed error that says
        what to close.
        """
        ...


@dataclass(frozen=True, slots=True)
class RecoveryNote:
    """A torn journal tail that recovery dropped: a commit that never returned.

    Attributes:
        run_id: the run.
        seq: the seq the torn record would have had.
        size: how many bytes it left.
        kept_as: where those bytes were set aside (None while no writer of the run has
            set them aside yet: readers skip them without changing anything).
    """

    run_id: str
    seq: int
    size: int
    kept_as: str | None


@runtime_checkable
class RecoveringBackend(Backend, Protocol):
    """A backend that keeps its own log and reports the torn tails it dropped."""

    def recovery_notes(self) -> list[RecoveryNote]:
        """Every torn tail dropped so far (set aside on disk, or seen by this process)."""
        ...


def initial_meta(format_version: int, extra: Mapping[str, bytes]) -> dict[str, bytes]:
    """The metadata a backend writes, atomically, when it creates a new store."""
    meta = {META_FORMAT: str(format_version).encode("ascii")}
    meta.update(extra)
    return meta
