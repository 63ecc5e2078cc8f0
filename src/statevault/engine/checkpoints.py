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

from statevault import bridge, paths
from statevault.backends.base import (
    Backend,
    MappingBackend,
    OffloadingBackend,
    RewritingBackend,
)
from statevault.codec.compression import Compression, ContentDictionary
from statevault.codec.encoding import Codec
from statevault.codec.envelope import (
    ENCODING_TREE,
    Packed,
    dictionary_reference,
    pack,
    pack_against,
    unpack,
)
from statevault.engine.records import (
    CheckpointRecord,
    SchemaTag,
    open_record,
    record_version,
    reseal_inline,
    seal_record,
)
from statevault.errors import CorruptionError, SerializationError
from statevault.faults import crash_point, register
from statevault.ops import Op
from statevault.tree import TreeReader, TreeWriter, WrittenTree
from statevault.tree.lazy import LazyState
from statevault.tree.read import Map, PathReader, unpack_node
from statevault.tree.write import Memo, node_bytes

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

DICTIONARY_LIMIT = 512 << 10
"""Raw bytes of a state entry's new nodes that the journal entries before it are
compressed against (`Engine.relocate`): enough for the items a hundred deltas append,
and indexed in ~1.5 ms at most."""
DRIVEN_LIMIT = 256 << 10
"""The largest state (raw bytes) a call driven on an event loop encodes or decodes on
the loop's thread; larger ones go to a worker thread (`bridge.off_loop`), so the loop
never stalls for more than about a millisecond."""

_RELOCATE_MIN_SAVING = 32
"""An entry is rewritten only if that saves at least this many bytes."""
_NIL = b"\xc0"
"""MessagePack nil: the value of a dictionary node, which only lists its children."""


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
        self.whole_arrays = False
        """Store NumPy arrays of `BYTES_CHUNK` and more whole and uncompressed, one
        object each, so that loads can map them (`statevault.open(mmap_arrays=True)`)."""
        self.format_version = 3
        """The vault's format: 1 writes each state as one object, 2 as a tree, 3 seals
        records apart from their inline envelope (see `engine.records`)."""
        # Checked once: a runtime protocol check looks at every method of the protocol.
        self._native_offload = isinstance(backend, OffloadingBackend)

    async def offload(self, call: Callable[[], T], *, brief: bool = True) -> T:
        """Run a blocking call off the event loop (the async API's one way to do I/O).

        `brief=False` for calls that may run long or wait on other threads (verify,
        repair, closing): they always get a thread.
        """
        if self._native_offload:
            return await cast("OffloadingBackend", self.backend).offload(call, brief=brief)
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        return await asyncio.to_thread(call)

    async def driving(self) -> bool:
        """True if brief calls from the running loop are driven on it (`bridge`)."""
        return self._native_offload and await cast("OffloadingBackend", self.backend).driving()

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

    def load_state(
        self, record: CheckpointRecord, *, mmap: bool = False
    ) -> tuple[Any, frozenset[bytes]]:
        """Decode a checkpoint's state, verifying every byte read.

        Returns the state and the digests of its tree (what the vault holds for sure).
        `mmap`: map arrays stored whole instead of copying them, where the backend can.
        """
        data = record.inline if record.inline is not None else self._root_data(record)
        reader = TreeReader(self.backend.get_objects, self.codec, mapper=self._mapper(mmap))

        def load() -> Any:
            return reader.load(record.root, data)

        try:
            if record.raw_bytes > DRIVEN_LIMIT:
                return bridge.off_loop(load), frozenset(reader.digests)
            return load(), frozenset(reader.digests)
        except CorruptionError as exc:
            raise exc.located(run_id=record.run, seq=record.seq) from None
        except SerializationError as exc:
            raise exc.in_checkpoint(record.run, record.seq) from None

    def get_path(self, record: CheckpointRecord, keys: list[Any], *, mmap: bool = False) -> Any:
        """The value at `keys` in a state entry, reading only the objects on the path."""
        data = record.inline if record.inline is not None else self._root_data(record)
        reader = PathReader(self.backend.get_objects, self.codec, mapper=self._mapper(mmap))
        try:
            return reader.get(record.root, data, keys, paths.step)
        except CorruptionError as exc:
            raise exc.located(run_id=record.run, seq=record.seq) from None
        except SerializationError as exc:
            raise exc.in_checkpoint(record.run, record.seq) from None

    def lazy_state(self, record: CheckpointRecord, *, mmap: bool = False) -> LazyState:
        """A read-only view of a state entry that reads its parts on first access."""
        data = record.inline if record.inline is not None else self._root_data(record)
        reader = PathReader(self.backend.get_objects, self.codec, mapper=self._mapper(mmap))
        try:
            return LazyState(reader, reader.root(record.root, data))
        except CorruptionError as exc:
            raise exc.located(run_id=record.run, seq=record.seq) from None

    def _mapper(self, wanted: bool) -> Map | None:
        """The backend's `map_object` if mapping is wanted and the backend can."""
        backend = self.backend
        if wanted and backend.capabilities.map_objects and isinstance(backend, MappingBackend):
            return backend.map_object
        return None

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

    def dictionaries(self) -> DictionaryCache:
        """A resolver for the dictionaries that relocated journal entries name.

        Each dictionary is read and verified once per resolver; use one per load.
        """
        return DictionaryCache(self)

    def read_dictionary(self, reference: bytes) -> ContentDictionary:
        """The content of a dictionary node: its children's raw bytes, in order, verified."""
        where = reference.hex()
        found = self.backend.get_objects([reference])
        if reference not in found:
            raise CorruptionError("the dictionary its operations need is missing", digest=where)
        node = unpack_node(found[reference], reference)
        if node.encoding != ENCODING_TREE:
            raise CorruptionError("a dictionary must be a tree node", digest=where)
        parts = self.backend.get_objects(node.children)
        content = []
        for key in node.children:
            if key not in parts:
                raise CorruptionError(
                    "an object of the dictionary its operations need is missing",
                    digest=key.hex(),
                )
            content.append(bytes(unpack(parts[key], key).raw))
        return ContentDictionary(b"".join(content), level=self.compression.level)

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
        fresh_limit: int = 0,
        expected_bytes: int | None = None,
    ) -> WrittenTree:
        """Encode a state as a tree; raises before anything is written.

        Objects in `known` (the digests of a tree this vault holds) are not compressed;
        with `memo` and `changes` (see `TreeWriter`), unchanged chunks are not even
        encoded again. `fresh_limit`: keep that many raw bytes of new nodes for
        `relocate`. `expected_bytes`: the raw size the state had last time, if known; a
        call driven on an event loop encodes there only a state known to be small.
        """
        if expected_bytes is None or expected_bytes > DRIVEN_LIMIT:
            return bridge.off_loop(lambda: self._encode(state, known, memo, changes, fresh_limit))
        return self._encode(state, known, memo, changes, fresh_limit)

    def _encode(
        self,
        state: Any,
        known: frozenset[bytes],
        memo: Memo | None,
        changes: Sequence[Op] | None,
        fresh_limit: int,
    ) -> WrittenTree:
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
            fresh_limit=fresh_limit,
            whole_arrays=self.whole_arrays,
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
        if inline is not None:  # not an object: nothing can name it as a dictionary
            tree.fresh = [(key, raw) for key, raw in tree.fresh if key != root.digest]
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

    def relocate(
        self,
        run_id: str,
        deltas: Sequence[tuple[CheckpointRecord, bytes]],
        fresh: Sequence[tuple[bytes, bytes]],
    ) -> int:
        """Re-encode journal entries against the state entry committed after them.

        A delta appends a message; the fold after it stores that message again in a
        chunk. Compressed against the fold's new nodes (`fresh`), the delta's
        operations shrink from a compressed copy of the change to tens of bytes, and
        the journal stops doubling what the folds hold. Only the inline envelope of
        each record changes (record version 2 keeps it outside the hash), so history,
        hashes and every load stay as they were; the fold's nodes are listed in a small
        dictionary node that the new envelopes name, stored before them.

        Args:
            deltas: (record, stored bytes) of delta entries below the state entry.
            fresh: (digest, raw bytes) of stored tree nodes of that state entry.

        Returns:
            The bytes saved (0 when the backend cannot rewrite records, the vault's
            records keep their envelopes inside their hash, or nothing got smaller).
        """
        backend = self.backend
        if (
            not deltas
            or not fresh
            or self.compression.name != "zstd"
            or record_version(self.format_version) < 2
            or not backend.capabilities.rewrite_records
            or not isinstance(backend, RewritingBackend)
        ):
            return 0
        node = pack(
            node_bytes([key for key, _ in fresh], _NIL), self.compression, encoding=ENCODING_TREE
        )
        dictionary = ContentDictionary(
            b"".join(raw for _, raw in fresh), level=self.compression.level
        )
        rewrites = []
        saved = 0
        for record, sealed in deltas:
            inline = record.inline
            if record.kind != "delta" or inline is None or record.v < 2:
                continue
            if dictionary_reference(inline) is not None:
                continue  # relocated already
            raw = unpack(inline, record.root).raw
            packed = pack_against(
                raw, key=record.root, reference=node.digest, dictionary=dictionary
            )
            if len(packed.data) + _RELOCATE_MIN_SAVING > len(inline):
                continue
            rewrites.append((record.seq, sealed, reseal_inline(sealed, packed.data)))
            saved += len(inline) - len(packed.data)
        if not rewrites:
            return 0
        backend.rewrite_records(run_id, rewrites, objects=[(node.digest, node.data)])
        return saved

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
            v=record_version(self.format_version),
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


class DictionaryCache:
    """Resolves dictionary node digests to their content, reading each once."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._found: dict[bytes, ContentDictionary] = {}

    def __call__(self, reference: bytes) -> ContentDictionary:
        found = self._found.get(reference)
        if found is None:
            found = self._found[reference] = self._engine.read_dictionary(reference)
        return found
