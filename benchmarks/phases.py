"""Where a statevault save and load spend their time, phase by phase.

The public calls (`Run.save`, `Run.load`) run unchanged while some of the internal
functions they go through are wrapped with timers: the codec, BLAKE3, zstd, the
envelope, the tree's waits on its thread pool, and the backend's reads and writes.

Saves and loads run on two kinds of thread. The calling thread encodes or decodes and
hands compression, reads and decompression to a pool, whose work overlaps its own.
So time is accounted per thread and exclusively: a wrapped call nested in another
(zstd inside the envelope) is charged to the inner phase only.
- On the calling thread the phases and "other" (whatever runs outside any wrapped
  call: the tree walk, chunk cutting, records) add up to the measured call.
- Pool threads are reported apart, as "pool: <phase>": their busy time summed over
  the threads. It overlaps the calling thread and is not part of the sum; the calling
  thread's "wait for the pool" is the part of it that was not hidden.

A timer costs about a microsecond per call, and the encoder is called once per list
item of the state's top levels (about 22,000 times at 100 MB), so the total of a
timed run is a few percent above the clean measurement of the same call. Which
functions are wrapped follows the code as of vault format 2. A function that has
moved is simply not wrapped (its time lands in "other"), and `profile()` remains as
the cross-check: cProfile of the same public calls.
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import importlib
import inspect
import io
import os
import pstats
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import statevault
from benchmarks.floors import Phased

RUN_ID = "bench"
POOL = "pool: "
"""Prefix of the phases measured on pool threads (overlapping the calling thread)."""

# (phase, "module:Class.method" or "module:function"). Module functions are wrapped
# where they are looked up: envelope.py calls `digest` through its own namespace.
SAVE_TARGETS = (
    ("encode", "statevault.codec.encoding:Codec.pack_value"),
    ("encode", "statevault.codec.encoding:Codec.encode"),
    ("hash", "statevault.tree.write:blake3_digest"),
    ("hash", "statevault.codec.envelope:digest"),
    ("compress", "statevault.codec.compression:Compression.compress"),
    ("envelope (CRC, framing)", "statevault.tree.write:pack"),
    ("wait for the pool", "statevault.tree.write:TreeWriter._collect_oldest"),
    ("dedup check", "{backend}.has_objects"),
    ("write objects", "{backend}.put_objects"),
    ("commit", "{backend}.commit_checkpoint"),
)
LOAD_TARGETS = (
    ("read records", "{backend}.read_checkpoints"),
    ("read objects", "{backend}.get_objects"),
    ("decompress", "statevault.codec.compression:decompress"),
    ("verify hash", "statevault.codec.envelope:digest"),
    ("unpack (CRC, framing)", "statevault.tree.read:unpack_node"),
    ("wait for the pool", "statevault.tree.read:TreeReader._node"),
    ("decode", "statevault.tree.read:TreeReader._decode"),
    ("decode", "statevault.tree.read:TreeReader._decode_node"),
    ("decode", "statevault.codec.encoding:Codec.decode"),
    ("GC freeze", "gc:freeze"),
    ("GC freeze", "gc:unfreeze"),
)


def _order(targets: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p for p, _ in targets))
    pooled = tuple(POOL + p for p in names if p != "wait for the pool")
    return (*names, "other", *pooled)


SAVE_PHASES = _order(SAVE_TARGETS)
LOAD_PHASES = _order(LOAD_TARGETS)


def _resolve(spec: str, backend: object) -> tuple[object, str] | None:
    """(owner, attribute) named by `spec`, or None if it no longer exists."""
    if spec.startswith("{backend}."):
        owner: object = type(backend)
        attr = spec.split(".", 1)[1]
    else:
        module_name, _, path = spec.partition(":")
        try:
            owner = importlib.import_module(module_name)
        except ImportError:
            return None
        *parents, attr = path.split(".")
        for name in parents:
            owner = getattr(owner, name, None)
            if owner is None:
                return None
    return (owner, attr) if hasattr(owner, attr) else None


class Accounts:
    """Exclusive time per phase: of the calling thread, and of every other thread summed."""

    def __init__(self) -> None:
        self.caller = threading.get_ident()
        self.own: defaultdict[str, int] = defaultdict(int)
        self.pool: defaultdict[str, int] = defaultdict(int)
        self._local = threading.local()
        self._lock = threading.Lock()

    def reset(self) -> None:
        self.own.clear()
        self.pool.clear()

    def enter(self, phase: str) -> None:
        local = self._local
        stack: list[str] | None = getattr(local, "stack", None)
        if stack is None:
            stack = local.stack = []
        now = time.perf_counter_ns()
        if stack:
            self._charge(stack[-1], now - local.mark)
        stack.append(phase)
        local.mark = now

    def leave(self) -> None:
        local = self._local
        now = time.perf_counter_ns()
        self._charge(local.stack.pop(), now - local.mark)
        local.mark = now

    def _charge(self, phase: str, ns: int) -> None:
        if threading.get_ident() == self.caller:
            self.own[phase] += ns
        else:
            with self._lock:
                self.pool[phase] += ns

    def split(self, total_ns: int) -> dict[str, int]:
        """The calling thread's phases, its "other", and the pool's phases (prefixed)."""
        phases = dict(self.own)
        phases["other"] = total_ns - sum(self.own.values())
        phases.update({POOL + p: ns for p, ns in self.pool.items()})
        return phases


@contextlib.contextmanager
def instrumented(targets: tuple[tuple[str, str], ...], backend: object) -> Iterator[Accounts]:
    """Wrap each target with a timer; yields the accounts (call `reset()` per rep)."""
    accounts = Accounts()
    restore: list[tuple[object, str, object, bool]] = []
    try:
        for phase, spec in targets:
            found = _resolve(spec, backend)
            if found is None:
                continue
            owner, attr = found
            original = inspect.getattr_static(owner, attr)
            if isinstance(original, staticmethod | classmethod):
                continue  # none of the targets is one; skip rather than rebind wrongly
            call: Callable[..., Any] = getattr(owner, attr)

            def timed(*args: Any, _call: Any = call, _phase: str = phase, **kwargs: Any) -> Any:
                accounts.enter(_phase)
                try:
                    return _call(*args, **kwargs)
                finally:
                    accounts.leave()

            own = isinstance(owner, type) and attr in owner.__dict__
            restore.append((owner, attr, original, own or not isinstance(owner, type)))
            setattr(owner, attr, timed)
        yield accounts
    finally:
        for owner, attr, original, own in reversed(restore):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)


def _engine_backend(vault: statevault.Vault) -> object:
    # Private on purpose: the wrappers go on the class of the backend this vault uses.
    return vault._engine.backend


def save_phases(
    state: Any, new_vault: Callable[[], tuple[statevault.Vault, str]], *, reps: int
) -> Phased:
    """`Run.save(state)` into a fresh vault per rep, split into phases (first rep warms up)."""
    out = Phased()
    for i in range(reps + 1):
        vault, directory = new_vault()
        try:
            run = vault.run(RUN_ID)
            with instrumented(SAVE_TARGETS, _engine_backend(vault)) as accounts:
                gc.collect()
                accounts.reset()
                t0 = time.perf_counter_ns()
                run.save(state)
                total = time.perf_counter_ns() - t0
                phases = accounts.split(total)
        finally:
            vault.close()
            shutil.rmtree(directory, ignore_errors=True)
        if i > 0:
            out.add(phases, total=total)
    return out


def load_phases(vault: statevault.Vault, *, reps: int) -> Phased:
    """`Run.load()` of run "bench" in `vault`, split into phases (first rep warms up)."""
    out = Phased()
    run = vault.run(RUN_ID)
    for i in range(reps + 1):
        with instrumented(LOAD_TARGETS, _engine_backend(vault)) as accounts:
            gc.collect()
            accounts.reset()
            t0 = time.perf_counter_ns()
            value = run.load()
            total = time.perf_counter_ns() - t0
            phases = accounts.split(total)
        del value
        if i > 0:
            out.add(phases, total=total)
    return out


def profile(state: Any, directory: str, *, top: int = 18) -> str:
    """cProfile of one save and one load of `state` in a new SQLite vault: a text report."""
    path = os.path.join(directory, "profile.db")
    report = io.StringIO()
    with statevault.open(path) as vault:
        run = vault.run(RUN_ID)
        for name, call in (("save", lambda: run.save(state)), ("load", run.load)):
            gc.collect()
            prof = cProfile.Profile()
            prof.enable()
            result = call()
            prof.disable()
            del result
            report.write(f"\n#### cProfile: Run.{name}, top {top} functions by own time\n\n")
            stats = pstats.Stats(prof, stream=report)
            stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    return report.getvalue()
