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
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from statevault.errors import InvalidRunIdError

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
    """

    persistent: bool
    multi_process: bool
    durable_fsync: bool


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint record as the backend holds it: its seq and its bytes."""

    seq: int
    record: bytes


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


def check_next_seq(seq: int, expected_head: int) -> None:
    """Raise ValueError unless `seq` is the one a commit on `expected_head` may write."""
    if isinstance(expected_head, bool) or not isinstance(expected_head, int) or expected_head < 0:
        raise ValueError(f"expected_head must be an int >= 0; got {expected_head!r}")
    if seq != expected_head + 1:
        raise ValueError(f"seq must be expected_head + 1 ({expected_head + 1}); got {seq}")


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
    ) -> None:
        """Store `objects`, then record `seq` = `expected_head` + 1 as the new head.

        The record is stored only if the run's head is still `expected_head` and, when
        `expected_record` is given, the head's record equals it; otherwise nothing of
        the record is written and `ConflictError` is raised (objects may remain: they
        are immutable and harmless, and GC collects them).
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

    def delete_run(self, run_id: str) -> bool:
        """Remove a run and its records (objects stay for GC). False if it had none."""
        ...

    def close(self) -> None:
        """Release connections, locks and files. Further calls raise."""
        ...


def initial_meta(format_version: int, extra: Mapping[str, bytes]) -> dict[str, bytes]:
    """The metadata a backend writes, atomically, when it creates a new store."""
    meta = {META_FORMAT: str(format_version).encode("ascii")}
    meta.update(extra)
    return meta
