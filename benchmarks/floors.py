"""The limits statevault is judged against, measured with plain libraries in the same run.

A save's floor is what any durable save of the same value must at least do:
msgspec.msgpack encode, zstd compress (at the level statevault uses for that size),
BLAKE3 of the encoded bytes, and one write + fsync of the compressed bytes to a new,
empty file (created before the clock starts). A load's floor is the way back: read
the file, decompress, decode. No framing, no database, no rename, no checks.

Settings follow statevault's own choices where the floor has the same freedom: zstd
level 3, but level 1 from 8 MiB of encoded state (statevault's level for large
values), zstd on every core from 8 MiB, BLAKE3 on every core from 4 MiB, write()
calls of at most 1 MiB (as statevault's file I/O; see docs/performance.md, "Machine
effects"), and the GC paused while decoding more than 1 MiB. Each phase is timed on
its own, so the floor's total is their sum.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import blake3
import msgspec
import zstandard

from benchmarks.timing import Samples

WRITE_CHUNK = 1 << 20
ZSTD_LEVEL = 3
ZSTD_LEVEL_LARGE = 1
_LARGE_FROM = 8 << 20
_THREADED_COMPRESS_FROM = 8 << 20
_THREADED_HASH_FROM = 4 << 20
_GC_PAUSE_FROM = 1 << 20

SAVE_PHASES = ("encode", "compress", "hash", "write+fsync")
LOAD_PHASES = ("read", "decompress", "decode")


@dataclass(slots=True)
class Phased:
    """Per-phase samples; a rep's total is the sum of its phases, or its measured time."""

    phases: dict[str, Samples] = field(default_factory=dict)
    total: Samples = field(default_factory=Samples)

    def add(self, times: dict[str, int], *, total: int | None = None) -> None:
        """One rep's phases; its total is their sum unless given (overlapping phases)."""
        for name, ns in times.items():
            self.phases.setdefault(name, Samples()).ns.append(ns)
        self.total.ns.append(sum(times.values()) if total is None else total)


@contextlib.contextmanager
def gc_paused(pause: bool) -> Iterator[None]:
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def level_for(raw_size: int) -> int:
    """The zstd level statevault uses for a state of `raw_size` encoded bytes."""
    return ZSTD_LEVEL_LARGE if raw_size >= _LARGE_FROM else ZSTD_LEVEL


def _compressor(size: int, level: int) -> zstandard.ZstdCompressor:
    threads = -1 if size >= _THREADED_COMPRESS_FROM else 0
    return zstandard.ZstdCompressor(level=level, threads=threads, write_content_size=True)


def _hash(data: bytes) -> bytes:
    if len(data) >= _THREADED_HASH_FROM:
        return blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest()
    return blake3.blake3(data).digest()


def write_fsync(fd: int, data: bytes) -> None:
    """Write `data` to the open file `fd` in <= 1 MiB calls, then fsync it."""
    view = memoryview(data)
    for offset in range(0, len(view), WRITE_CHUNK):
        os.write(fd, view[offset : offset + WRITE_CHUNK])
    os.fsync(fd)


def save_once(state: Any, path: str, *, level: int | None = None) -> tuple[dict[str, int], int]:
    """One floor save of `state` into the new file `path`: (phase ns, stored bytes).

    `level` is the zstd level; None is statevault's own (`level_for`). Other levels are
    "what if" rows, not the floor.

    The file is created before the clock starts: creating a file costs ~0.5 ms on this
    VM (docs/performance.md), and the SQLite default creates none per save, so counting
    it would flatter statevault.
    """
    clock = time.perf_counter_ns
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        t0 = clock()
        raw = msgspec.msgpack.encode(state)
        t1 = clock()
        chosen = level_for(len(raw)) if level is None else level
        compressor = _compressor(len(raw), chosen)  # built untimed: statevault caches its own
        t2 = clock()
        packed = compressor.compress(raw)
        t3 = clock()
        _hash(raw)
        t4 = clock()
        write_fsync(fd, packed)
        t5 = clock()
    finally:
        os.close(fd)
    times = {"encode": t1 - t0, "compress": t3 - t2, "hash": t4 - t3, "write+fsync": t5 - t4}
    return times, len(packed)


def load_once(path: str) -> dict[str, int]:
    """One floor load of the file `path`: phase ns (the value is dropped untimed)."""
    clock = time.perf_counter_ns
    decompressor = zstandard.ZstdDecompressor()
    t0 = clock()
    with open(path, "rb") as f:
        packed = f.read()
    t1 = clock()
    raw = decompressor.decompress(packed)
    t2 = clock()
    with gc_paused(len(raw) >= _GC_PAUSE_FROM):
        value = msgspec.msgpack.decode(raw)
    # While the GC was paused, every new container piled up in the youngest generation;
    # the first allocation after it is re-enabled pays one pass over all of them (~90 ms
    # for 100 MB here). Charge it to the load, as statevault's own load pays it too.
    gc.collect(0)
    t3 = clock()
    del value
    return {"read": t1 - t0, "decompress": t2 - t1, "decode": t3 - t2}


def small_write_fsync(fd: int, block: bytes, n: int) -> Samples:
    """`n` appends of `block` to the open file `fd`, each followed by fsync."""
    out = Samples()
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        os.write(fd, block)
        os.fsync(fd)
        out.ns.append(clock() - t0)
    return out
