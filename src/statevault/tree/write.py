"""Writing a state as a tree of objects (see `statevault.tree` for the format).

Where the time goes, and why the work is split as it is: encoding holds the GIL and
runs on the calling thread; hashing runs there too (BLAKE3 at ~10 GB/s costs little
and the parent needs the digest at once); compression, the expensive part, runs on a
thread pool and releases the GIL, so it overlaps the encoding of the next chunks.
Objects the vault is known to hold already are neither compressed nor written.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgpack

from statevault.codec.compression import LARGE_PAYLOAD, Compression
from statevault.codec.digest import digest as blake3_digest
from statevault.codec.encoding import (
    ENCODE_ERRORS,
    EXT_CHUNKED_BYTES,
    EXT_CHUNKED_LIST,
    EXT_NDARRAY,
    EXT_REF,
    Codec,
    ndarray_buffer,
)
from statevault.codec.envelope import ENCODING_RAW, ENCODING_TREE, Packed, pack
from statevault.ops import AppendOp, ExtendOp, Op

OBJECT_MIN = 64 << 10
"""A dict or list whose encoding reaches 64 KiB becomes a node of its own."""
STRUCT_DEPTH = 2
"""Dicts and lists this close to the root are always walked item by item; deeper
ones are packed whole (in C) and walked only if they turn out larger than BIG_LEAF."""
BIG_LEAF = 256 << 10
LIST_MIN_ITEMS = 64
"""Lists shorter than this are never chunked (their big items become nodes instead)."""
CHUNK_MIN = 32 << 10
CHUNK_TARGET = 128 << 10
CHUNK_MAX = 512 << 10
"""Content-defined list chunks: at least 32 KiB (unless the list ends), 128 KiB on
average, never more than 512 KiB (a single larger item is a chunk alone)."""
_SMALL_OBJECTS = 256
"""States of at most this many values (and little text) are packed whole (`_small`)."""
BYTES_CHUNK = 1 << 20
"""`bytes` of 1 MiB and more are cut into fixed 1 MiB raw chunks."""
_INFLIGHT_LIMIT = 8 << 20
"""Raw bytes handed to the pool and not yet compressed; beyond it, encoding waits."""
_SINK_BATCH = 8 << 20
"""Compressed objects are handed to the sink (written) in batches of about this size,
so a large save holds at most this much of them, not all."""

Path = tuple[Any, ...]

Sink = Callable[[list[Packed]], int]
"""Writes objects before the checkpoint's record; returns the bytes it stored."""

_headers = msgpack.Packer()

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def pool() -> ThreadPoolExecutor:
    """The process-wide pool for compression and decompression (one per process)."""
    global _pool  # noqa: PLW0603 - created on first use, shared by every vault
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="statevault-io"
            )
        return _pool


def node_bytes(children: list[bytes], value: bytes) -> bytes:
    """The raw bytes of a node: `[child digests, value]`."""
    head: bytes = _headers.pack_array_header(2) + _headers.pack(children)
    return head + value


def _ext(code: int, payload: Any) -> bytes:
    data: bytes = _headers.pack(msgpack.ExtType(code, _headers.pack(payload)))
    return data


@dataclass(frozen=True, slots=True)
class ListMemo:
    """How a chunked list was written: enough to reuse its chunks next time.

    Attributes:
        count: the list's length then.
        chunks: (digest, items, raw size) of each chunk, in order.
        large: whether its chunks used the large-payload compression level.
    """

    count: int
    chunks: tuple[tuple[bytes, int, int], ...]
    large: bool


Memo = dict[tuple[Any, ...], ListMemo]
"""Chunked lists of the last tree written, by their path in the state."""


@dataclass
class WrittenTree:
    """A state encoded as a tree, ready to commit.

    Attributes:
        root: the root node, packed.
        objects: every other object the vault may lack and the sink did not take yet.
        digests: every object digest of the tree (root included), for the next save's
            `known` set and for GC.
        raw_bytes: total raw size of the tree's objects.
    """

    root: Packed
    objects: list[Packed] = field(default_factory=list)
    digests: set[bytes] = field(default_factory=set)
    raw_bytes: int = 0
    stored_early: int = 0
    """Bytes the sink stored while the tree was written (not in `objects`)."""
    memo: Memo = field(default_factory=dict)
    """How its chunked lists were written, for the next write's reuse."""
    fresh: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(digest, raw bytes) of the last tree nodes it encoded anew, oldest first, the
    root last, up to the writer's `fresh_limit` bytes: what the journal entries before
    it are likely to repeat (see `Engine.relocate`)."""


class TreeWriter:
    """Encodes one state into tree objects.

    Args:
        codec: encodes leaves (and raises `SerializationError` for what cannot be stored).
        compression: how objects are compressed.
        known: digests the vault is known to hold (the previous checkpoint's tree):
            such objects are not compressed again.
        sink: takes batches of finished objects to write before the record (objects
            are immutable, so writing them early is safe); without one, every object
            is kept for the commit.
        fresh_limit: keep the raw bytes of the last nodes encoded anew, up to this many
            (`WrittenTree.fresh`).
        whole_arrays: store each NumPy array of `BYTES_CHUNK` or more as one raw,
            uncompressed object rather than in compressed 1 MiB chunks, so that a load
            can map it (`TreeReader`'s `mapper`). A changed array is then rewritten
            whole, and the writer holds one copy of it while it is stored.
        memo, changes: the memo of the last tree written from this same state object,
            and every operation applied to the state since. A chunked list that the
            changes only appended to (or changed past its last chunk) keeps its other
            chunks without re-encoding them: a fold costs the change, not the state.
    """

    def __init__(
        self,
        codec: Codec,
        compression: Compression,
        *,
        known: frozenset[bytes] = frozenset(),
        sink: Sink | None = None,
        memo: Memo | None = None,
        changes: Sequence[Op] | None = None,
        fresh_limit: int = 0,
        whole_arrays: bool = False,
    ) -> None:
        self._codec = codec
        self._whole_arrays = whole_arrays
        self._compression = compression
        self._known = known
        self._seen: set[bytes] = set()
        self._futures: deque[tuple[Future[Packed], int]] = deque()
        self._inflight = 0
        self._done: list[Packed] = []
        self._done_bytes = 0
        self._sink = sink
        self._stored_early = 0
        self._raw_bytes = 0
        self._memo_in = memo if changes is not None else None
        self._changes = changes or ()
        self._memo_out: Memo = {}
        self._fresh: deque[tuple[bytes, bytes]] = deque()
        self._fresh_bytes = 0
        self._fresh_limit = fresh_limit

    def write(self, state: Any) -> WrittenTree:
        """Encode `state`; raises `SerializationError` before anything is written."""
        children: list[bytes] = []
        try:
            value = self._small(state)
            if value is None:
                value = self._structural(state, children, 0, (), root=True)
        except ENCODE_ERRORS as exc:
            self._drain()
            raise self._codec.explain(state, exc) from None
        except BaseException:
            self._drain()
            raise
        raw = node_bytes(children, value)
        root = pack(raw, self._compression, encoding=ENCODING_TREE)
        self._raw_bytes += len(raw)
        self._seen.add(root.digest)
        if len(raw) <= self._fresh_limit:
            self._keep_fresh(root.digest, raw)
        self._drain()
        return WrittenTree(
            root,
            self._done,
            self._seen,
            self._raw_bytes,
            self._stored_early,
            self._memo_out,
            list(self._fresh),
        )

    # -- objects ----------------------------------------------------------------------
    def _emit(
        self,
        raw: bytes | memoryview,
        encoding: int,
        *,
        large: bool | None = None,
        compression: Compression | None = None,
    ) -> bytes:
        key = blake3_digest(raw)
        self._raw_bytes += len(raw)
        if key in self._seen:
            return key
        self._seen.add(key)
        if key in self._known:
            return key
        if encoding == ENCODING_TREE and len(raw) <= self._fresh_limit:
            self._keep_fresh(key, bytes(raw))
        future = pool().submit(
            pack, raw, compression or self._compression, encoding=encoding, key=key, large=large
        )
        self._futures.append((future, len(raw)))
        self._inflight += len(raw)
        while self._inflight > _INFLIGHT_LIMIT:
            self._collect_oldest()
        return key

    def _keep_fresh(self, key: bytes, raw: bytes) -> None:
        self._fresh.append((key, raw))
        self._fresh_bytes += len(raw)
        while self._fresh_bytes > self._fresh_limit:
            self._fresh_bytes -= len(self._fresh.popleft()[1])

    def _collect_oldest(self) -> None:
        future, size = self._futures.popleft()
        self._inflight -= size
        packed = future.result()
        self._done.append(packed)
        self._done_bytes += len(packed.data)
        if self._sink is not None and self._done_bytes >= _SINK_BATCH:
            self._stored_early += self._sink(self._done)
            self._done, self._done_bytes = [], 0

    def _drain(self) -> None:
        while self._futures:
            self._collect_oldest()

    def _small(self, state: Any) -> bytes | None:
        """The whole encoding of a state that is surely small, else None.

        Below OBJECT_MIN nothing becomes a node or a chunk, so packing the state whole
        gives exactly the bytes the item-by-item walk would, in one C call. Whether a
        state is small is decided first by a walk that gives up after a few hundred
        objects, so a large state is never packed twice.
        """
        if not _surely_small(state):
            return None
        data = self._codec.pack_value(state)
        return data if len(data) < OBJECT_MIN else None

    # -- values -----------------------------------------------------------------------
    def _value(self, value: Any, children: list[bytes], depth: int, path: Path) -> bytes:
        """The encoding of `value` inside its parent; digests it refers to go to `children`."""
        t = type(value)
        if t is dict or t is list:
            if depth < STRUCT_DEPTH:
                return self._structural(value, children, depth, path)
            data = self._codec.pack_value(value)
            if len(data) < BIG_LEAF:
                return data
            return self._structural(value, children, depth, path)
        if t is bytes and len(value) >= BYTES_CHUNK:
            return self._chunked_bytes(memoryview(value), children)
        if t.__module__ == "numpy" and getattr(value, "nbytes", 0) >= BYTES_CHUNK:
            parts = ndarray_buffer(value)
            if parts is not None:
                descr, shape, buffer = parts
                head = _headers.pack_array_header(3) + _headers.pack(descr) + _headers.pack(shape)
                if self._whole_arrays:
                    payload = head + self._whole_bytes(buffer, children)
                else:
                    payload = head + self._chunked_bytes(buffer, children)
                array: bytes = _headers.pack(msgpack.ExtType(EXT_NDARRAY, payload))
                return array
        return self._codec.pack_value(value)

    def _structural(
        self, value: Any, children: list[bytes], depth: int, path: Path, *, root: bool = False
    ) -> bytes:
        """Encode a dict or list item by item; large results become nodes of their own."""
        own: list[bytes] = []
        if type(value) is dict:
            parts = [_headers.pack_map_header(len(value))]
            for key, item in value.items():
                parts.append(self._codec.pack_value(key))
                parts.append(self._value(item, own, depth + 1, (*path, key)))
            data = b"".join(parts)
        elif type(value) is list:
            data = self._list(value, own, depth, path)
        else:
            data = self._value(value, own, depth, path)
        if root or len(data) < OBJECT_MIN:
            children.extend(own)
            return data
        key = self._emit(node_bytes(own, data), ENCODING_TREE)
        children.append(key)
        return _ext(EXT_REF, key)

    def _list(self, items: list[Any], children: list[bytes], depth: int, path: Path) -> bytes:
        """A list inline, or cut into chunk nodes as it is encoded.

        Chunks are emitted as soon as the list is known to be large (its encoding passed
        OBJECT_MIN), so a long list is never held encoded in full: memory stays at a
        chunk or two whatever the list's size.
        """
        count = len(items)
        if count < LIST_MIN_ITEMS:
            head: bytes = _headers.pack_array_header(count)
            return head + b"".join(
                self._value(item, children, depth + 1, (*path, i)) for i, item in enumerate(items)
            )
        closed: list[tuple[list[bytes], list[bytes]]] = []
        current: list[bytes] = []
        current_refs: list[bytes] = []
        size = total = 0
        chunks: list[tuple[bytes, int, int]] = []
        emitting = large = False
        start = 0
        reuse = self._reusable(path, count)
        if reuse is not None:  # every chunk but the last stands as it was
            prefix, large = reuse
            for key, n, raw_size in prefix:
                children.append(key)
                self._seen.add(key)
                self._raw_bytes += raw_size
                chunks.append((key, n, raw_size))
                start += n
            emitting = True
        for i in range(start, count):
            data = self._value(items[i], current_refs, depth + 1, (*path, i))
            current.append(data)
            size += len(data)
            total += len(data)
            if _cut_after(data, size) or i == count - 1:
                closed.append((current, current_refs))
                current, current_refs, size = [], [], 0
            if not emitting and total >= OBJECT_MIN:
                emitting = True
                large = total / (i + 1) * count >= LARGE_PAYLOAD
            if emitting:
                for chunk_items, chunk_refs in closed:
                    chunk_head: bytes = _headers.pack_array_header(len(chunk_items))
                    raw = node_bytes(chunk_refs, chunk_head + b"".join(chunk_items))
                    key = self._emit(raw, ENCODING_TREE, large=large)
                    children.append(key)
                    chunks.append((key, len(chunk_items), len(raw)))
                closed.clear()
        if not emitting:  # small after all: inline, its references go to the parent
            for _, chunk_refs in closed:
                children.extend(chunk_refs)
            head = _headers.pack_array_header(count)
            return head + b"".join(data for chunk_items, _ in closed for data in chunk_items)
        self._memo_out[path] = ListMemo(count, tuple(chunks), large)
        return _ext(EXT_CHUNKED_LIST, [count, [[key, n] for key, n, _ in chunks]])

    def _reusable(
        self, path: Path, count: int
    ) -> tuple[tuple[tuple[bytes, int, int], ...], bool] | None:
        """The chunks of the list at `path` that the changes since its memo left alone.

        A change at the list itself must be an append or extend; a change inside it
        must be at an index past its last chunk's start (items before it then neither
        changed nor moved). Anything else, or a change at a path above the list, and
        the whole list is encoded again.

        When every change lies past the memo's end (the list was only appended to), the
        last chunk is kept too, closed where the list ended, and the new items start a
        chunk of their own: a journal that only appends then stores each item in one
        chunk once, instead of rewriting the open last chunk at every fold. The price
        is that the list's cuts depend on when it was folded, so a whole `save` of the
        same list cuts it by content alone and shares fewer chunks with it. A last
        chunk under CHUNK_MIN is reopened rather than kept, so folds of a slowly
        growing list do not leave a trail of small chunks.
        """
        if self._memo_in is None:
            return None
        memo = self._memo_in.get(path)
        if memo is None or not memo.chunks:
            return None
        stable = memo.count - memo.chunks[-1][1]
        lowest = memo.count  # the lowest index a change touched (or moved)
        depth = len(path)
        for op in self._changes:
            where = op.path
            if where[:depth] != path[: len(where)]:
                continue  # elsewhere in the state
            if len(where) < depth:
                return None  # the list or one of its parents was changed as a whole
            if len(where) == depth:
                if type(op) in (AppendOp, ExtendOp):
                    continue
                return None
            index = where[depth]
            if type(index) is not int or index < stable:
                return None
            lowest = min(lowest, index)
        if count < stable:
            return None
        if lowest >= memo.count and count >= memo.count and memo.chunks[-1][2] >= CHUNK_MIN:
            return memo.chunks, memo.large
        if len(memo.chunks) < 2:
            return None
        return memo.chunks[:-1], memo.large

    def _chunked_bytes(self, view: memoryview, children: list[bytes]) -> bytes:
        """Large bytes or an array's buffer as fixed 1 MiB raw chunks: one changed byte
        rewrites one chunk, and equal regions are stored once."""
        chunks: list[list[Any]] = []
        for start in range(0, len(view), BYTES_CHUNK):
            piece = bytes(view[start : start + BYTES_CHUNK])
            key = self._emit(piece, ENCODING_RAW, large=True)
            children.append(key)
            chunks.append([key, len(piece)])
        return _ext(EXT_CHUNKED_BYTES, [len(view), chunks])

    def _whole_bytes(self, view: memoryview, children: list[bytes]) -> bytes:
        """An array's buffer as one raw, uncompressed object: the same form as
        `_chunked_bytes` with a single chunk, so every reader reads it, and a map of the
        stored object is the array's buffer (at the envelope's 30-byte offset)."""
        key = self._emit(view, ENCODING_RAW, compression=_STORED)
        children.append(key)
        return _ext(EXT_CHUNKED_BYTES, [len(view), [[key, len(view)]]])


_STORED = Compression("none", 0, None)
"""Objects that must stay mappable are stored as they are."""


def _surely_small(state: Any) -> bool:
    """True if `state` has at most `_SMALL_OBJECTS` values and little text: its encoding
    is then well under OBJECT_MIN. Costs at most `_SMALL_OBJECTS` steps, whatever the
    state's size."""
    budget = _SMALL_OBJECTS
    size = 0
    stack = [state]
    while stack:
        value = stack.pop()
        budget -= 1
        if budget < 0:
            return False
        t = type(value)
        if t is dict:
            stack.extend(value.keys())
            stack.extend(value.values())
        elif t is list or t is tuple:
            stack.extend(value)
        elif t is str or t is bytes:
            size += len(value)
            if size > OBJECT_MIN // 8:
                return False
    return True


def _cut_after(item: bytes, chunk_size: int) -> bool:
    """Whether a list chunk ends after `item`, given the chunk's size with it.

    The rule depends only on the item's bytes and the size since the last cut, so the
    same items cut the same way wherever they sit in the list: appending items leaves
    earlier chunks as they were, and after an insert the cuts fall back into step. An
    item ends a chunk with probability len(item) / CHUNK_TARGET, so chunks average
    about CHUNK_TARGET bytes whatever the item sizes.
    """
    if chunk_size >= CHUNK_MAX:
        return True
    if chunk_size < CHUNK_MIN:
        return False
    # The last 256 bytes decide: enough to tell items apart, and a bounded cost per item
    # (a CRC over whole items was a sixth of a large save's time).
    return zlib.crc32(item[-256:]) * CHUNK_TARGET < len(item) << 32
