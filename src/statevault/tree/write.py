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
    EXT_REF,
    Codec,
)
from statevault.codec.envelope import ENCODING_RAW, ENCODING_TREE, Packed, pack

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
BYTES_CHUNK = 1 << 20
"""`bytes` of 1 MiB and more are cut into fixed 1 MiB raw chunks."""
_INFLIGHT_LIMIT = 32 << 20
"""Raw bytes handed to the pool and not yet compressed; beyond it, encoding waits."""

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


@dataclass
class WrittenTree:
    """A state encoded as a tree, ready to commit.

    Attributes:
        root: the root node, packed.
        objects: every other object the vault may lack, packed (dedup within the tree).
        digests: every object digest of the tree (root included), for the next save's
            `known` set and for GC.
        raw_bytes: total raw size of the tree's objects.
    """

    root: Packed
    objects: list[Packed] = field(default_factory=list)
    digests: set[bytes] = field(default_factory=set)
    raw_bytes: int = 0


class TreeWriter:
    """Encodes one state into tree objects.

    Args:
        codec: encodes leaves (and raises `SerializationError` for what cannot be stored).
        compression: how objects are compressed.
        known: digests the vault is known to hold (the previous checkpoint's tree):
            such objects are not compressed again.
    """

    def __init__(
        self, codec: Codec, compression: Compression, *, known: frozenset[bytes] = frozenset()
    ) -> None:
        self._codec = codec
        self._compression = compression
        self._known = known
        self._seen: set[bytes] = set()
        self._futures: deque[tuple[Future[Packed], int]] = deque()
        self._inflight = 0
        self._done: list[Packed] = []
        self._raw_bytes = 0

    def write(self, state: Any) -> WrittenTree:
        """Encode `state`; raises `SerializationError` before anything is written."""
        children: list[bytes] = []
        try:
            value = self._structural(state, children, 0, root=True)
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
        self._drain()
        return WrittenTree(root, self._done, self._seen, self._raw_bytes)

    # -- objects ----------------------------------------------------------------------
    def _emit(self, raw: bytes, encoding: int, *, large: bool | None = None) -> bytes:
        key = blake3_digest(raw)
        self._raw_bytes += len(raw)
        if key in self._seen:
            return key
        self._seen.add(key)
        if key in self._known:
            return key
        future = pool().submit(
            pack, raw, self._compression, encoding=encoding, key=key, large=large
        )
        self._futures.append((future, len(raw)))
        self._inflight += len(raw)
        while self._inflight > _INFLIGHT_LIMIT:
            self._collect_oldest()
        return key

    def _collect_oldest(self) -> None:
        future, size = self._futures.popleft()
        self._inflight -= size
        self._done.append(future.result())

    def _drain(self) -> None:
        while self._futures:
            self._collect_oldest()

    # -- values -----------------------------------------------------------------------
    def _value(self, value: Any, children: list[bytes], depth: int) -> bytes:
        """The encoding of `value` inside its parent; digests it refers to go to `children`."""
        t = type(value)
        if t is dict or t is list:
            if depth < STRUCT_DEPTH:
                return self._structural(value, children, depth)
            data = self._codec.pack_value(value)
            if len(data) < BIG_LEAF:
                return data
            return self._structural(value, children, depth)
        if t is bytes and len(value) >= BYTES_CHUNK:
            return self._chunked_bytes(value, children)
        return self._codec.pack_value(value)

    def _structural(
        self, value: Any, children: list[bytes], depth: int, *, root: bool = False
    ) -> bytes:
        """Encode a dict or list item by item; large results become nodes of their own."""
        own: list[bytes] = []
        if type(value) is dict:
            parts = [_headers.pack_map_header(len(value))]
            for key, item in value.items():
                parts.append(self._codec.pack_value(key))
                parts.append(self._value(item, own, depth + 1))
            data = b"".join(parts)
        elif type(value) is list:
            data = self._list(value, own, depth)
        else:
            data = self._value(value, own, depth)
        if root or len(data) < OBJECT_MIN:
            children.extend(own)
            return data
        key = self._emit(node_bytes(own, data), ENCODING_TREE)
        children.append(key)
        return _ext(EXT_REF, key)

    def _list(self, items: list[Any], children: list[bytes], depth: int) -> bytes:
        encoded: list[bytes] = []
        refs: list[list[bytes] | None] = []
        total = 0
        for item in items:
            own: list[bytes] = []
            data = self._value(item, own, depth + 1)
            encoded.append(data)
            refs.append(own or None)
            total += len(data)
        if len(items) < LIST_MIN_ITEMS or total < OBJECT_MIN:
            for item_refs in refs:
                if item_refs:
                    children.extend(item_refs)
            head: bytes = _headers.pack_array_header(len(items))
            return head + b"".join(encoded)
        chunks: list[list[Any]] = []
        start = 0
        size = 0
        for i, data in enumerate(encoded):
            size += len(data)
            if _cut_after(data, size) or i == len(encoded) - 1:
                chunk_children = [d for own in refs[start : i + 1] if own for d in own]
                chunk_head: bytes = _headers.pack_array_header(i + 1 - start)
                raw = node_bytes(chunk_children, chunk_head + b"".join(encoded[start : i + 1]))
                key = self._emit(raw, ENCODING_TREE, large=total >= LARGE_PAYLOAD)
                children.append(key)
                chunks.append([key, i + 1 - start])
                start, size = i + 1, 0
        return _ext(EXT_CHUNKED_LIST, [len(items), chunks])

    def _chunked_bytes(self, value: bytes, children: list[bytes]) -> bytes:
        view = memoryview(value)
        chunks: list[list[Any]] = []
        for start in range(0, len(value), BYTES_CHUNK):
            piece = bytes(view[start : start + BYTES_CHUNK])
            key = self._emit(piece, ENCODING_RAW, large=True)
            children.append(key)
            chunks.append([key, len(piece)])
        return _ext(EXT_CHUNKED_BYTES, [len(value), chunks])


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
