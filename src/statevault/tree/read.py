"""Reading a state tree: objects are fetched and decompressed ahead of the decoder.

Decoding holds the GIL and runs on the calling thread, in document order. As soon
as a node is unpacked (fetched, decompressed, digest-checked, on the pool) its
children are requested, so by the time the decoder reaches a reference the object
is usually ready: fetching and decompression overlap decoding.
"""

from __future__ import annotations

import mmap
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import msgspec

from statevault.codec.encoding import (
    EXT_CHUNKED_BYTES,
    EXT_CHUNKED_LIST,
    EXT_NDARRAY,
    EXT_REF,
    Codec,
    decode_checked,
    decode_ndarray,
    gc_paused,
)
from statevault.codec.envelope import (
    ENCODING_MSGPACK,
    ENCODING_RAW,
    ENCODING_TREE,
    Dictionaries,
    unpack,
    unpack_mapped,
)
from statevault.errors import CorruptionError
from statevault.tree.write import pool

Fetch = Callable[[list[bytes]], dict[bytes, bytes]]
"""Reads objects by digest (a backend's `get_objects`)."""
Map = Callable[[bytes], memoryview | None]
"""Maps one object's stored bytes into memory (a backend's `map_object`)."""

_node_decoder = msgspec.msgpack.Decoder(tuple[list[bytes], msgspec.Raw])
_BATCH = 16
_WINDOW = 64
"""Objects fetched ahead of the decoder at most (~10 MB of typical chunks): enough to
keep the pool busy, and a bound on a load's memory beyond the state itself."""
_INLINE_OBJECTS = 32
"""A load's first objects, up to this many, are fetched and unpacked on the calling
thread, each request in one backend call: for a small tree (a chat's 2 MB state is
~20 chunks) the pool's hand-offs cost more than its overlap gains, and far more when
other processes compete for the cores (each hand-off waits for the GIL)."""


@dataclass(frozen=True, slots=True)
class Node:
    """An unpacked object: its encoding, its children and its value bytes (or raw bytes)."""

    encoding: int
    children: list[bytes]
    value: bytes | memoryview


def unpack_node(data: bytes, key: bytes, dictionaries: Dictionaries | None = None) -> Node:
    """Verify and parse one stored object (`dictionaries`: see `envelope.unpack`)."""
    unpacked = unpack(data, key, dictionaries=dictionaries)
    if unpacked.encoding == ENCODING_TREE:
        try:
            children, value = _node_decoder.decode(unpacked.raw)
        except msgspec.DecodeError as exc:
            raise CorruptionError(f"tree node does not decode ({exc})", digest=key.hex()) from exc
        return Node(ENCODING_TREE, children, memoryview(value))
    return Node(unpacked.encoding, [], unpacked.raw)


class TreeReader:
    """Loads one state tree.

    Args:
        fetch: reads objects by digest.
        codec: decodes everything that is not a tree reference.
        mapper: maps objects into memory. With it, a NumPy array stored as one
            uncompressed raw object comes back read-only over a map of the stored bytes
            (no copy), and nothing is fetched ahead (a large array is never read whole).
    """

    def __init__(self, fetch: Fetch, codec: Codec, *, mapper: Map | None = None) -> None:
        self._fetch = fetch
        self._codec = codec
        self._map = mapper
        self._in_array = 0
        self._futures: dict[bytes, Future[Node]] = {}
        self._deferred: deque[bytes] = deque()
        self._outstanding = 0
        self._inline_left = _INLINE_OBJECTS
        self._lock = threading.Lock()
        self._decoder = msgspec.msgpack.Decoder(ext_hook=self._ext_hook)
        self.digests: set[bytes] = set()
        """Every object digest of the tree, filled in as it loads."""

    def load(self, root_key: bytes, root_data: bytes) -> Any:
        """The state whose root object is `root_data` (stored under `root_key`)."""
        root = unpack_node(root_data, root_key)
        self.digests.add(root_key)
        if root.encoding == ENCODING_MSGPACK:  # a format-1 root: one whole value
            return self._codec.decode(root.value)
        if root.encoding != ENCODING_TREE:
            raise CorruptionError("a state root must be a tree node", digest=root_key.hex())
        self._request(root.children)
        try:
            with gc_paused(bool(root.children) or len(root.value) >= 1 << 20):
                return self._decode(root.value)
        finally:
            self._cancel()

    def load_value(self, data: bytes) -> Any:
        """Decode one value that may hold references (children are fetched as met)."""
        try:
            with gc_paused(True):
                return self._decode(data)
        finally:
            self._cancel()

    # -- prefetching ----------------------------------------------------------------------
    def _request(self, keys: Iterable[bytes]) -> None:
        """Announce objects the decoder will need; fetch them ahead, within the window."""
        with self._lock:
            for key in keys:
                self.digests.add(key)
                if self._map is not None:
                    continue  # each object is read when it is met (`_node`)
                if key not in self._futures:
                    self._futures[key] = Future()
                    self._deferred.append(key)
            batch = self._take_deferred()
        self._submit(batch)

    def _take_deferred(self) -> list[tuple[bytes, Future[Node]]]:
        """Deferred requests that fit in the window (lock held)."""
        batch: list[tuple[bytes, Future[Node]]] = []
        while self._deferred and self._outstanding < _WINDOW:
            key = self._deferred.popleft()
            future = self._futures.get(key)
            if future is not None and not future.running() and not future.done():
                future.set_running_or_notify_cancel()
                batch.append((key, future))
                self._outstanding += 1
        return batch

    def _submit(self, batch: list[tuple[bytes, Future[Node]]]) -> None:
        if not batch:
            return
        with self._lock:
            inline = len(batch) <= self._inline_left
            if inline:
                self._inline_left -= len(batch)
        if inline:
            self._load_batch(batch)
            return
        for start in range(0, len(batch), _BATCH):
            pool().submit(self._load_batch, batch[start : start + _BATCH])

    def _load_batch(self, batch: list[tuple[bytes, Future[Node]]]) -> None:
        try:
            found = self._fetch([key for key, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for key, future in batch:
            data = found.get(key)
            try:
                if data is None:
                    raise CorruptionError("the object is missing from the vault", digest=key.hex())
                node = unpack_node(data, key)
            except BaseException as exc:
                future.set_exception(exc)
                continue
            future.set_result(node)
            if node.children:
                self._request(node.children)

    def _node(self, key: bytes) -> Node:
        with self._lock:
            future = self._futures.get(key)
            if future is None:  # consumed before (a shared subtree), or never announced
                future = self._futures[key] = Future()
            urgent: list[tuple[bytes, Future[Node]]] = []
            if not future.running() and not future.done():
                # Needed now but still waiting for room in the window: fetch it anyway,
                # or the decoder would wait on a window that only it can drain.
                future.set_running_or_notify_cancel()
                urgent.append((key, future))
                self._outstanding += 1
        self._submit(urgent)
        try:
            return future.result()
        finally:
            with self._lock:
                self._futures.pop(key, None)  # consumed: its bytes can go
                self._outstanding -= 1
                batch = self._take_deferred()
            self._submit(batch)

    def _cancel(self) -> None:
        with self._lock:
            self._deferred.clear()

    # -- decoding -----------------------------------------------------------------------
    def _decode(self, data: bytes | memoryview) -> Any:
        return decode_checked(self._decoder, data)

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code == EXT_REF:
            return self._decode_node(bytes(self._decoder.decode(data)))
        if code == EXT_CHUNKED_LIST:
            _count, chunks = self._decoder.decode(data)
            items: list[Any] = []
            for key, _n in chunks:
                items.extend(self._decode_node(key))
            return items
        if code == EXT_CHUNKED_BYTES:
            _length, chunks = self._decoder.decode(data)
            if self._in_array and len(chunks) == 1:
                mapped = self._mapped_raw(chunks[0][0])
                if mapped is not None:
                    return mapped
            return b"".join(bytes(self._raw_node(key).value) for key, _size in chunks)
        if code == EXT_NDARRAY:
            if self._map is None:
                return decode_ndarray(self._decoder.decode(data))
            self._in_array += 1
            try:
                fields = self._decoder.decode(data)
            finally:
                self._in_array -= 1
            # A memoryview here is a map of the stored bytes (`_mapped_raw`); a chunked
            # or compressed buffer arrives joined, as bytes, and is copied as usual.
            return decode_ndarray(fields, copy=not isinstance(fields[2], memoryview))
        return self._codec.decode_ext(code, data)

    def _mapped_raw(self, key: bytes) -> memoryview | None:
        """The raw bytes of object `key` over a map of it, checked; None if it cannot be
        mapped or is compressed (then it is read and copied as usual)."""
        assert self._map is not None
        view = self._map(key)
        if view is None:
            return None
        unpacked = unpack_mapped(view, key, release=_page_releaser(view))
        if unpacked is None:
            return None
        if unpacked.encoding != ENCODING_RAW:
            raise CorruptionError("a byte chunk names an object of another kind", digest=key.hex())
        return memoryview(unpacked.raw)

    def _decode_node(self, key: bytes) -> Any:
        node = self._node(key)
        if node.encoding != ENCODING_TREE:
            raise CorruptionError(
                "a reference names an object that is not a tree node", digest=key.hex()
            )
        return self._decoder.decode(node.value)

    def _raw_node(self, key: bytes) -> Node:
        node = self._node(key)
        if node.encoding != ENCODING_RAW:
            raise CorruptionError("a byte chunk names an object of another kind", digest=key.hex())
        return node


def _page_releaser(view: memoryview) -> Callable[[int, int], None] | None:
    """Lets the pages of a checked range of a memory map go (`madvise(MADV_DONTNEED)`):
    checking a 1 GB map then holds one window of it, not all of it. The pages stay in
    the page cache, and come back on access without a disk read."""
    mapped = view.obj
    if not isinstance(mapped, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return None

    def release(offset: int, length: int) -> None:
        start = offset - offset % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, start, offset + length - start)

    return release


_opaque = {EXT_REF, EXT_CHUNKED_LIST, EXT_CHUNKED_BYTES}


def check_value(node: Node, codec: Codec) -> None:
    """Decode one node's own value, references left unresolved: proves it is well formed."""
    if node.encoding == ENCODING_RAW:
        return

    def hook(code: int, data: memoryview) -> Any:
        if code in _opaque:
            return None
        if code == EXT_NDARRAY:  # its buffer may be chunked: check the structure only
            decoder.decode(data)
            return None
        return codec.decode_ext(code, data)

    decoder = msgspec.msgpack.Decoder(ext_hook=hook)
    decode_checked(decoder, node.value)


# -- partial reads ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ref:
    key: bytes


@dataclass(frozen=True, slots=True)
class _Chunks:
    count: int
    chunks: list[list[Any]]


@dataclass(frozen=True, slots=True)
class _ByteChunks:
    payload: bytes


class PathReader:
    """Reads one path of a state tree, fetching only the nodes on the way.

    Each node on the path is decoded with its references left as placeholders; a
    chunked list is indexed through its chunks' item counts, so only the chunk that
    holds the item is read. The value found is then loaded whole.

    Args:
        fetch: reads objects by digest.
        codec: decodes everything that is not a tree reference.
        mapper: maps arrays' objects instead of copying them (see `TreeReader`).
    """

    def __init__(self, fetch: Fetch, codec: Codec, *, mapper: Map | None = None) -> None:
        self._fetch = fetch
        self._codec = codec
        self._map = mapper
        self._lazy = msgspec.msgpack.Decoder(ext_hook=self._lazy_hook)

    def get(self, root_key: bytes, root_data: bytes, keys: list[Any], step: Step) -> Any:
        """The value at `keys`; `step(container, key, keys_so_far)` walks plain values."""
        current = self.root(root_key, root_data)
        for depth, key in enumerate(keys):
            current = self.child(current, key, keys[:depth], step)
        return self.whole(current)

    def root(self, root_key: bytes, root_data: bytes) -> Any:
        """The root's value, its references left as placeholders."""
        root = unpack_node(root_data, root_key)
        if root.encoding == ENCODING_MSGPACK:
            return self._codec.decode(root.value)
        return self._resolve(self._lazy_value(root.value))

    def child(self, value: Any, key: Any, before: list[Any], step: Step) -> Any:
        """`value[key]` with its references left as placeholders (one node read at most)."""
        if isinstance(value, _Chunks):
            found = self._chunk_item(value, key, before)
        else:
            found = step(self._resolve_bytes(value), key, before)
        return self._resolve(found)

    @staticmethod
    def is_container(value: Any) -> bool:
        """Whether `value` (as `root` or `child` returned it) has parts to read lazily."""
        return isinstance(value, (dict, list, _Chunks))

    @staticmethod
    def length(value: Any) -> int:
        return value.count if isinstance(value, _Chunks) else len(value)

    def whole(self, value: Any) -> Any:
        """`value` loaded whole, every placeholder in it replaced."""
        return self._whole(value)

    def _lazy_hook(self, code: int, data: memoryview) -> Any:
        if code == EXT_REF:
            return _Ref(bytes(self._lazy.decode(data)))
        if code == EXT_CHUNKED_LIST:
            count, chunks = self._lazy.decode(data)
            return _Chunks(count, chunks)
        if code in (EXT_CHUNKED_BYTES, EXT_NDARRAY):
            return _ByteChunks(
                bytes(msgspec.msgpack.encode(msgspec.msgpack.Ext(code, bytes(data))))
            )
        return self._codec.decode_ext(code, data)

    def _lazy_value(self, data: bytes | memoryview) -> Any:
        return decode_checked(self._lazy, data)

    def _node(self, key: bytes) -> Node:
        data = self._fetch([key]).get(key)
        if data is None:
            raise CorruptionError("the object is missing from the vault", digest=key.hex())
        return unpack_node(data, key)

    def _resolve(self, value: Any) -> Any:
        while isinstance(value, _Ref):
            value = self._lazy_value(self._node(value.key).value)
        return value

    def _resolve_bytes(self, value: Any) -> Any:
        return self._whole(value) if isinstance(value, _ByteChunks) else value

    def _chunk_item(self, chunks: _Chunks, key: Any, before: list[Any]) -> Any:
        if not isinstance(key, int) or isinstance(key, bool):
            raise KeyError(f"{_where(before)} is a list; index it with a number, not {key!r}")
        index = key + chunks.count if key < 0 else key
        if not 0 <= index < chunks.count:
            raise KeyError(f"{_where(before)} has {chunks.count} items; there is no [{key}]")
        for digest, n in chunks.chunks:
            if index < n:
                return self._lazy_value(self._node(digest).value)[index]
            index -= n
        raise CorruptionError("a chunked list's counts do not add up to its length")

    def _whole(self, value: Any) -> Any:
        """Replace every placeholder inside `value` by what it stands for, loaded whole."""
        if isinstance(value, (_Ref, _Chunks, _ByteChunks)):
            if isinstance(value, _Ref):
                payload = msgspec.msgpack.encode(msgspec.msgpack.Ext(EXT_REF, _packed(value.key)))
            elif isinstance(value, _Chunks):
                payload = msgspec.msgpack.encode(
                    msgspec.msgpack.Ext(EXT_CHUNKED_LIST, _packed([value.count, value.chunks]))
                )
            else:
                payload = value.payload
            reader = TreeReader(self._fetch, self._codec, mapper=self._map)
            return reader.load_value(payload)
        if type(value) is dict:
            return {k: self._whole(v) for k, v in value.items()}
        if type(value) is list:
            return [self._whole(v) for v in value]
        return value


Step = Callable[[Any, Any, list[Any]], Any]


def _packed(value: Any) -> bytes:
    return msgspec.msgpack.encode(value)


def _where(keys: list[Any]) -> str:
    return "".join(f"[{k!r}]" for k in keys) or "the state"
