"""Reading a state tree: objects are fetched and decompressed ahead of the decoder.

Decoding holds the GIL and runs on the calling thread, in document order. As soon
as a node is unpacked (fetched, decompressed, digest-checked, on the pool) its
children are requested, so by the time the decoder reaches a reference the object
is usually ready: fetching and decompression overlap decoding.
"""

from __future__ import annotations

import threading
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
    decode_ndarray,
    gc_paused,
)
from statevault.codec.envelope import ENCODING_MSGPACK, ENCODING_RAW, ENCODING_TREE, unpack
from statevault.errors import CorruptionError, SerializationError
from statevault.tree.write import pool

Fetch = Callable[[list[bytes]], dict[bytes, bytes]]
"""Reads objects by digest (a backend's `get_objects`)."""

_node_decoder = msgspec.msgpack.Decoder(tuple[list[bytes], msgspec.Raw])
_BATCH = 16


@dataclass(frozen=True, slots=True)
class Node:
    """An unpacked object: its encoding, its children and its value bytes (or raw bytes)."""

    encoding: int
    children: list[bytes]
    value: bytes | memoryview


def unpack_node(data: bytes, key: bytes) -> Node:
    """Verify and parse one stored object."""
    unpacked = unpack(data, key)
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
    """

    def __init__(self, fetch: Fetch, codec: Codec) -> None:
        self._fetch = fetch
        self._codec = codec
        self._futures: dict[bytes, Future[Node]] = {}
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

    # -- prefetching --------------------------------------------------------------------
    def _request(self, keys: Iterable[bytes]) -> None:
        batch: list[tuple[bytes, Future[Node]]] = []
        with self._lock:
            for key in keys:
                self.digests.add(key)
                if key not in self._futures:
                    future: Future[Node] = Future()
                    self._futures[key] = future
                    batch.append((key, future))
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
            if future.cancelled():
                continue
            data = found.get(key)
            try:
                if data is None:
                    raise CorruptionError("the object is missing from the vault", digest=key.hex())
                node = unpack_node(data, key)
            except BaseException as exc:
                future.set_exception(exc)
                continue
            if node.children:
                self._request(node.children)
            future.set_result(node)

    def _node(self, key: bytes) -> Node:
        with self._lock:
            future = self._futures.get(key)
        if future is None:  # not announced by any parent: fetch it now
            self._request([key])
            with self._lock:
                future = self._futures[key]
        return future.result()

    def _cancel(self) -> None:
        with self._lock:
            futures = list(self._futures.values())
        for future in futures:
            future.cancel()

    # -- decoding -----------------------------------------------------------------------
    def _decode(self, data: bytes | memoryview) -> Any:
        try:
            return self._decoder.decode(data)
        except (CorruptionError, SerializationError):
            raise
        except (msgspec.DecodeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise CorruptionError(f"stored value does not decode ({exc})") from exc

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
            return b"".join(bytes(self._raw_node(key).value) for key, _size in chunks)
        if code == EXT_NDARRAY:
            return decode_ndarray(self._decoder.decode(data))
        return self._codec.decode_ext(code, data)

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
    try:
        decoder.decode(node.value)
    except (CorruptionError, SerializationError):
        raise
    except (msgspec.DecodeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise CorruptionError(f"stored value does not decode ({exc})") from exc
