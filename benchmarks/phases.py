"""Where a statevault save and load spend their time, phase by phase.

The public calls (`Run.save`, `Run.load`) run unchanged while a few of the internal
functions they go through are wrapped with timers: the codec, BLAKE3, zstd, and the
backend's read and commit calls. Whatever is not inside a wrapped call (framing, the
CRC, checkpoint records, copies) is reported as "other", so the phases always add up
to the measured call. A wrapper costs about a microsecond per call, and each wrapped
function runs once or twice per save, so the breakdown of a large state is exact to
well under 1%.

Which functions are wrapped follows the code as of format version 1. A function that
has moved is simply not wrapped (its time lands in "other"), and `profile()` remains
as the cross-check: cProfile of the same public calls.
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
import time
from collections.abc import Callable, Iterator
from typing import Any

import statevault
from benchmarks.floors import Phased

RUN_ID = "bench"

# (phase, "module:Class.method" or "module:function"). Module functions are wrapped
# where they are looked up: envelope.py calls `digest` through its own namespace.
SAVE_TARGETS = (
    ("encode", "statevault.codec.encoding:Codec.encode"),
    ("hash", "statevault.codec.envelope:digest"),
    ("compress", "statevault.codec.compression:Compression.compress"),
    ("dedup check", "{backend}.has_objects"),
    ("commit", "{backend}.commit_checkpoint"),
)
LOAD_TARGETS = (
    ("read record", "{backend}.read_checkpoints"),
    ("read object", "{backend}.get_objects"),
    ("decompress", "statevault.codec.compression:decompress"),
    ("verify hash", "statevault.codec.envelope:digest"),
    ("decode", "statevault.codec.encoding:Codec.decode"),
)
SAVE_PHASES = (*(p for p, _ in SAVE_TARGETS), "other")
LOAD_PHASES = (*(p for p, _ in LOAD_TARGETS), "other")


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


@contextlib.contextmanager
def instrumented(targets: tuple[tuple[str, str], ...], backend: object) -> Iterator[dict[str, int]]:
    """Wrap each target with a timer; yields {phase: ns spent inside it}, reset per use."""
    totals = dict.fromkeys((phase for phase, _ in targets), 0)
    restore: list[tuple[object, str, object, bool]] = []
    clock = time.perf_counter_ns
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
                t0 = clock()
                try:
                    return _call(*args, **kwargs)
                finally:
                    totals[_phase] += clock() - t0

            own = isinstance(owner, type) and attr in owner.__dict__
            restore.append((owner, attr, original, own or not isinstance(owner, type)))
            setattr(owner, attr, timed)
        yield totals
    finally:
        for owner, attr, original, own in reversed(restore):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)


def _engine_backend(vault: statevault.Vault) -> object:
    # Private on purpose: the wrappers go on the class of the backend this vault uses.
    return vault._engine.backend


def _split(total_ns: int, inside: dict[str, int]) -> dict[str, int]:
    phases = dict(inside)
    phases["other"] = total_ns - sum(inside.values())
    return phases


def save_phases(
    state: Any, new_vault: Callable[[], tuple[statevault.Vault, str]], *, reps: int
) -> Phased:
    """`Run.save(state)` into a fresh vault per rep, split into phases (first rep warms up)."""
    out = Phased()
    for i in range(reps + 1):
        vault, directory = new_vault()
        try:
            run = vault.run(RUN_ID)
            with instrumented(SAVE_TARGETS, _engine_backend(vault)) as inside:
                gc.collect()
                t0 = time.perf_counter_ns()
                run.save(state)
                total = time.perf_counter_ns() - t0
        finally:
            vault.close()
            shutil.rmtree(directory, ignore_errors=True)
        if i > 0:
            out.add(_split(total, inside))
    return out


def load_phases(vault: statevault.Vault, *, reps: int) -> Phased:
    """`Run.load()` of run "bench" in `vault`, split into phases (first rep warms up)."""
    out = Phased()
    run = vault.run(RUN_ID)
    for i in range(reps + 1):
        with instrumented(LOAD_TARGETS, _engine_backend(vault)) as inside:
            gc.collect()
            t0 = time.perf_counter_ns()
            value = run.load()
            total = time.perf_counter_ns() - t0
        del value
        if i > 0:
            out.add(_split(total, inside))
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
