"""The measured operations, each as a step that times one rep of itself.

A step is a closure `step(record)` that does its untimed setup, runs the GC, times
one call, tears down, and keeps the duration when `record` is true. Steps for
statevault and for its floor are run alternately by `timing.alternate`.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import statevault
from benchmarks import floors
from benchmarks.timing import Samples

RUN_ID = "bench"
Step = Callable[[bool], None]


class Scratch:
    """Numbered fresh directories under one root, on the disk being measured."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._n = 0

    def new(self, parent: str | None = None, label: str = "") -> str:
        self._n += 1
        path = os.path.join(parent or self.root, f"{self._n:04d}{label and '-' + label}")
        os.mkdir(path)
        return path

    @contextmanager
    def case(self, label: str) -> Iterator[str]:
        """A directory for one case, removed with everything in it afterwards."""
        path = self.new(label=label)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def vault_url(backend: str, directory: str) -> str:
    if backend == "sqlite":
        return os.path.join(directory, "vault.db")
    return f"files://{os.path.join(directory, 'vault')}"


@dataclass(slots=True)
class Saved:
    samples: Samples = field(default_factory=Samples)
    stored_bytes: int = 0


def statevault_save(state: Any, scratch: Scratch, root: str, backend: str) -> tuple[Step, Saved]:
    """`Run.save(state)` into a fresh vault per rep (deleted after it, untimed).

    Deleting each rep's files keeps the page cache from growing into memory this VM has
    never touched, whose first use is several times slower (docs/performance.md).
    """
    out = Saved()

    def step(record: bool) -> None:
        directory = scratch.new(root)
        vault = statevault.open(vault_url(backend, directory))
        try:
            run = vault.run(RUN_ID)
            gc.collect()
            t0 = time.perf_counter_ns()
            checkpoint = run.save(state)
            t1 = time.perf_counter_ns()
        finally:
            vault.close()
            shutil.rmtree(directory, ignore_errors=True)
        if record:
            out.samples.ns.append(t1 - t0)
            out.stored_bytes = checkpoint.stored_bytes

    return step, out


@dataclass(slots=True)
class FloorSaved:
    phased: floors.Phased = field(default_factory=floors.Phased)
    stored_bytes: int = 0


def floor_save(state: Any, root: str, *, level: int | None = None) -> tuple[Step, FloorSaved]:
    """The floor save into a new file per rep (deleted after it, untimed).

    `level`: the zstd level; None is the floor's own (statevault's level for the size).
    """
    out = FloorSaved()
    path = os.path.join(root, f"floor-save-{level or 'default'}.zst")

    def step(record: bool) -> None:
        gc.collect()
        times, stored = floors.save_once(state, path, level=level)
        os.unlink(path)
        if record:
            out.phased.add(times)
            out.stored_bytes = stored

    return step, out


def statevault_load(run: statevault.Run) -> tuple[Step, Samples]:
    """`Run.load()` of the run's newest checkpoint; the result is freed untimed."""
    out = Samples()

    def step(record: bool) -> None:
        gc.collect()
        t0 = time.perf_counter_ns()
        value = run.load()
        t1 = time.perf_counter_ns()
        del value
        if record:
            out.ns.append(t1 - t0)

    return step, out


def floor_load(path: str) -> tuple[Step, floors.Phased]:
    out = floors.Phased()

    def step(record: bool) -> None:
        gc.collect()
        times = floors.load_once(path)
        if record:
            out.add(times)

    return step, out


def small_saves(
    runs: dict[str, statevault.Run],
    states: list[Any],
    raw_fd: int,
    *,
    blocks: int,
    per_block: int,
) -> tuple[dict[str, Samples], Samples]:
    """Small saves on each run, interleaved in blocks with raw 4 KiB append+fsync.

    Returns each run's latencies and the raw ones. States are taken in order, a fresh
    one for every save, so no save repeats the previous content.
    """
    block = os.urandom(4096)
    samples = {name: Samples() for name in runs}
    raw = Samples()
    clock = time.perf_counter_ns
    taken = 0
    for b in range(blocks):
        batch = states[taken : taken + per_block]
        taken += per_block
        order = list(runs.items())
        if b % 2:
            order.reverse()
        gc.collect()
        raw.extend(floors.small_write_fsync(raw_fd, block, per_block))
        for name, run in order:
            gc.collect()
            out = samples[name].ns
            for s in batch:
                t0 = clock()
                run.save(s)
                out.append(clock() - t0)
    return samples, raw
