"""Commits and loads of whole-state checkpoints.

The order of a commit, and why:
1. encode, digest and compress the state (no storage touched: a value that cannot
   be stored fails here and nothing is written);
2. hand objects and the sealed record to the backend in one call; the backend
   makes the objects durable no later than the record, and stores the record only
   if the run's head is still the one this writer saw (compare-and-swap).
A crash between the two leaves at most unreferenced objects, which are immutable
and harmless; the record, and with it the checkpoint, exists whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from statevault import paths
from statevault.backends.base import Backend, OffloadingBackend
from statevault.codec.compression import Compression
from statevault.codec.encoding import Codec
from statevault.codec.envelope import Packed, pack
from statevault.engine.records import CheckpointRecord, SchemaTag, open_record, seal_record
from statevault.errors import CorruptionError, SerializationError
from statevault.faults import crash_point, register
from statevault.ops import Op
from statevault.tree import TreeReader, TreeWriter, WrittenTree
from statevault.tree.lazy import LazyState
from statevault.tree.read import PathReader
from statevault.tree.write import Memo

_CRASH_EARLY_OBJECTS = register(
    "engine.objects.after_early_write", "a batch of a large save's objects is stored"
)
_CRASH_BEFORE_RECORD = register(
    "engine.commit.before_record", "a record is sealed; the backend has not been called"
)

T = TypeVar("T")

INLINE_LIMIT = 4096
"""A root object up to this size is kept inside its checkpoint record: one row or
file instead of two, which is most of the cost of a small save."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """An immutable snapshot of a run's state, as `Run.save` and `Run.checkpoints` return it.

    Attributes:
        run_id: the run.
        seq: 1, 2, 3... per run: every committed step, whatever its kind.
        parent: the previous checkpoint's seq, or None for the first.
        kind: "state" (`save`), "delta" (a transaction or `apply`: operations on the
            previous state) or "fold" (the state the deltas before it produced,
            written by the checkpoint policy or `run.checkpoint()`).
        digest: BLAKE3 (hex) of the encoded state's root: equal states have equal
            digests. Empty for a delta.
        created_at: when it was committed (UTC).
        meta: the metadata given to `save`.
        raw_bytes: size of the encoded state before compression.
        stored_bytes: bytes this checkpoint added to storage (0 when all was shared).
        record_hash: BLAKE3 (hex) of the stored record; the next checkpoint chains to it.
        schema: the schema the state was saved with (`vault.run(..., schema=...)`), or
            None.
        schema_version: that schema's version, or None.
    """

    run_id: str
    seq: int
    parent: int | None
    kind: str
    digest: str
    created_at: dt.datetime
    meta: dict[str, Any] = field(hash=False)
    raw_bytes: int
    stored_bytes: int
    record_hash: str
    schema: str | None = None
    schema_version: int | None = None


@dataclass(frozen=True, slots=True)
class Head:
    """What a writer knows of a run's newest checkpoint: its seq and sealed record.

    The record bytes are what the next commit's compare-and-swap expects to find.
    """

    seq: int
    sealed: bytes

    @property
    def record_hash(self) -> bytes:
        return self.sealed[-32:] if self.sealed else b""


NO_HEAD = Head(0, b"")


def check_meta(meta: object) -> None:
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"meta must be a dict; got {type(meta).__qualname__}")


class Engine:
    """Composes a backend and a codec into checkpoint commits, loads and listings."""

    def __init__(self, backend: Backend, codec: Codec, compression: Compression) -> None:
        self.backend = backend
        self.codec = codec
        self.compression = compression
        self.format_version = 2
        """The vault's format: 1 writes each state as one object, 2 as a tree."""
        # Checked once: a runtime protocol check looks at every method of the protocol.
        self._native_offload = isinstance(backend, OffloadingBackend)

    async def offload(self, call: Callable[[], T]) -> T:
        """Run a blocking call off the event loop (the async API's one way to do I/O)."""
        if self._native_offload:
            return await cast("OffloadingBackend", self.backend).offload(call)
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        return await asyncio.to_thread(call)

    # -- reading -------------------------------------------------------------------------
    def head(self, run_id: str) -> tuple[Head, CheckpointRecord | None]:
        """The run's newest checkpoint, read in one call."""
        stored = self.backend.read_checkpoints(run_id, limit=1)
        if not stored:
            return NO_HEAD, None
        record, _ = open_record(stored[0].record, run_id=run_id, seq=stored[0].seq)
        return Head(record.seq, stored[0].record), record

    def record(self, run_id: str, seq: int) -> tuple[CheckpointRecord, bytes] | None:
        sealed = self.backend.read_checkpoint(run_id, seq)
        if sealed is None:
            return None
        return open_record(sealed, run_id=run_id, seq=seq)

    def load_state(self, record: CheckpointRecord) -> tuple[Any, frozenset[bytes]]:
        """Decode a checkpoint's state, verifying every byte read.

        Returns the state and the digests of its tree (what the vault holds for sure).
        """
        data = record.inline if record.inline is not None else self._root_data(record)
        reader = TreeReader(self.backend.get_objects, self.codec)
        try:
            return reader.load(record.root, data), frozenset(reader.digests)
        except CorruptionError as exc:
            raise exc.located(run_id=record.run, seq=record.seq) from None
        except SerializationError as exc:
            raise exc.in_checkpoint(record.run, record.seq) from None

    def get_path(self, record: CheckpointRecord, keys: list[Any]) -> Any:
        """The value at `keys` in a state entry, reading only the objects on the path."""
        data = record.inline if record.inline is not None else self._root_data(record)
        reader = PathReader(self.backend.get_objects, self.codec)
        try:
            return reader.get(record.root, data, keys, paths.step)
        except CorruptionError as exc:
            raise exc.located(run_id=record.run, seq=record.seq) from None
        except SerializationError as exc:
            raise exc.in_checkpoint(record.run, record.seq) from None

    def lazy_state(self, record: CheckpointRecord) -> LazyState:
        """A read-only view of a state entry that reads its parts on first access."""
        data = record.inline if record.inline is not None else self._root_data(record)
        reader = PathReader(self.backend.get_objects, self.codec)
        try:
            return LazyState(reader, reader.root(record.root, data))
        except CorruptionError as exc:
            raise exc.located(run_id=record.run, seq=record.seq) from None

    def _root_data(self, record: CheckpointRecord) -> bytes:
        found = self.backend.get_objects([record.root])
        if record.root not in found:
            raise CorruptionError(
                "its state object is missing from the vault",
                run_id=record.run,
                seq=record.seq,
                digest=record.root.hex(),
                hint="Run `statevault verify PATH` to see which checkpoints are whole.",
            )
        return found[record.root]

    def decode_meta(self, record: CheckpointRecord) -> dict[str, Any]:
        if not record.meta:
            return {}
        try:
            meta = self.codec.decode(record.meta)
        except CorruptionError as exc:
            raise exc.located(run_id=record.run, seq=record.seq) from exc
        return meta if isinstance(meta, dict) else {"meta": meta}

    def checkpoint(self, record: CheckpointRecord, record_hash: bytes) -> Checkpoint:
        """The public view of a record."""
        return Checkpoint(
            run_id=record.run,
            seq=record.seq,
            parent=record.parent or None,
            kind=record.kind,
            digest="" if record.kind == "delta" else record.root.hex(),
            created_at=dt.datetime.fromtimestamp(record.created_ns / 1e9, tz=dt.UTC),
            meta=self.decode_meta(record),
            raw_bytes=record.raw_bytes,
            stored_bytes=record.stored_bytes,
            record_hash=record_hash.hex(),
            schema=record.schema,
            schema_version=record.schema_version if record.schema is not None else None,
        )

    # -- writing -------------------------------------------------------------------------
    def encode_state(
        self,
        state: Any,
        *,
        known: frozenset[bytes] = frozenset(),
        memo: Memo | None = None,
        changes: Sequence[Op] | None = None,
    ) -> WrittenTree:
        """Encode a state as a tree; raises before anything is written.

        Objects in `known` (the digests of a tree this vault holds) are not compressed;
        with `memo` and `changes` (see `TreeWriter`), unchanged chunks are not even
        encoded again.
        """
        if self.format_version == 1:
            root = pack(self.codec.encode(state), self.compression)
            return WrittenTree(root, digests={root.digest}, raw_bytes=root.raw_size)
        writer = TreeWriter(
            self.codec,
            self.compression,
            known=known,
            sink=self._write_early,
            memo=memo,
            changes=changes,
        )
        return writer.write(state)

    def _write_early(self, objects: list[Packed]) -> int:
        """Store objects of a tree being written, ahead of its record; returns bytes stored.

        Objects are immutable and keyed by content, so storing them before the record
        is safe: if the commit never happens they are unreferenced, which verify counts
        and GC reclaims. It bounds a large save's memory to a batch of objects.
        """
        present = self.backend.has_objects(p.digest for p in objects)
        missing = [(p.digest, p.data) for p in objects if p.digest not in present]
        if missing:
            self.backend.put_objects(missing)
            crash_point(_CRASH_EARLY_OBJECTS)
        return sum(len(data) for _, data in missing)

    def commit(
        self,
        run_id: str,
        tree: WrittenTree,
        *,
        meta: dict[str, Any] | None,
        parent: Head,
        kind: str = "state",
        lease_token: int | None = None,
        schema: SchemaTag | None = None,
    ) -> tuple[CheckpointRecord, Head]:
        """Store one checkpoint on top of `parent`; raises ConflictError if the head moved."""
        check_meta(meta)
        root = tree.root
        inline = root.data if len(root.data) <= INLINE_LIMIT else None
        candidates = [(p.digest, p.data) for p in tree.objects]
        if inline is None:
            candidates.append((root.digest, root.data))
        present = self.backend.has_objects(d for d, _ in candidates) if candidates else set()
        objects = [(d, data) for d, data in candidates if d not in present]
        stored = sum(len(data) for _, data in objects) + (len(inline) if inline else 0)
        stored += tree.stored_early
        return self.append(
            run_id,
            parent,
            kind=kind,
            root=root.digest,
            inline=inline,
            meta=meta,
            raw_bytes=tree.raw_bytes,
            stored_bytes=stored,
            objects=objects,
            lease_token=lease_token,
            schema=schema,
        )

    def append(
        self,
        run_id: str,
        parent: Head,
        *,
        kind: str,
        root: bytes,
        inline: bytes | None,
        meta: dict[str, Any] | None,
        raw_bytes: int,
        stored_bytes: int,
        objects: list[tuple[bytes, bytes]] | tuple[()] = (),
        lease_token: int | None = None,
        schema: SchemaTag | None = None,
    ) -> tuple[CheckpointRecord, Head]:
        """Seal a record on top of `parent` and commit it with `objects` (compare-and-swap).

        The one place where history grows: every kind of entry is chained to its
        parent's hash and lands only if the head is still exactly `parent`, and only
        if the run's lease allows it (`lease_token`: the writer's fencing token).
        """
        record = CheckpointRecord(
            run=run_id,
            seq=parent.seq + 1,
            parent=parent.seq,
            parent_hash=parent.record_hash,
            kind=kind,
            root=root,
            inline=inline,
            created_ns=time.time_ns(),
            meta=self.codec.encode(meta) if meta else b"",
            raw_bytes=raw_bytes,
            stored_bytes=stored_bytes,
            schema=None if schema is None else schema[0],
            schema_version=0 if schema is None else schema[1],
        )
        sealed, _ = seal_record(record)
        crash_point(_CRASH_BEFORE_RECORD)
        self.backend.commit_checkpoint(
            run_id,
            record.seq,
            sealed,
            expected_head=parent.seq,
            expected_record=parent.sealed or None,
            objects=objects,
            lease_token=lease_token,
        )
        return record, Head(record.seq, sealed)
