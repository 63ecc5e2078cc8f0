"""Durable small commits per second from 1, 4 and 16 threads of one process.

Usage, from the repository root:

    .venv/bin/python -m benchmarks.group_commit            # about 2.5 minutes
    .venv/bin/python -m benchmarks.group_commit --reps 3 --commits 1200

Each thread commits small checkpoints (a few hundred bytes) to a run of its own, with
`durability="fsync"`, three ways (and each again with `durability="process"`, no fsync,
for the ceiling that the CPU sets):
- `api`: `vault.run(f"t{i}").save(state)`, the public call (encoding, sealing and the
  commit included);
- `journal`: `run.apply([set, increment])`, a journal entry of two operations on the
  same small state, under the default checkpoint policy (a fold every 100 entries);
- `backend`: `SqliteBackend.commit_checkpoint` with a ready 300-byte record, so only
  the storage path is measured;
- `files`: `Run.save` as `api`, on the files backend (`files://`), where each run has
  a log of its own: threads committing to different runs fsync different files.

A configuration's throughput is its total commits divided by the wall time from the
moment every thread is released to the moment the last one finishes. Beside it, the
process's CPU time per commit over the same span (`os.times`: user, the Python and
SQLite work, of which the GIL lets one thread run Python at a time; system, mostly the
kernel's share of each fsync), which bounds what more threads can gain on this
machine's cores. Configurations
are measured alternately, each in a fresh vault, and the median of the reps is
printed; on this shared VM the machine drifts by tens of percent over a minute, so
numbers of one run are compared with each other, never with another run's.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

# Measure the statevault of this checkout, whatever the environment has installed.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(os.path.join(_SRC, "statevault")):
    sys.path.insert(0, _SRC)

import statevault  # noqa: E402 - after the path is set
from benchmarks.report import fs_type  # noqa: E402
from benchmarks.run import choose_dir  # noqa: E402
from statevault.backends.base import Durability  # noqa: E402
from statevault.backends.sqlite import SqliteBackend  # noqa: E402

THREADS = (1, 4, 16)
KINDS = ("api", "journal", "backend", "files")
CEILING_KINDS = ("api/process", "journal/process", "backend/process", "files/process")
"""The same paths with `durability="process"` (no fsync): what the CPU alone allows."""
RECORD_BYTES = 300
NOTE_CHARS = 48
TARGET_SPEEDUP = 5.0

Worker = Callable[[], None]


def progress_state(t: int, n: int) -> dict[str, Any]:
    """A small progress checkpoint; its sealed record is about `RECORD_BYTES` long."""
    return {
        "step": n,
        "status": "running",
        "cursor": f"{t:04x}{n:028x}",
        "updated": 1_767_225_600.25 + n,
        # Hex digits, so that compression leaves the record at about its raw size.
        "note": hashlib.sha256(b"%d:%d" % (t, n)).hexdigest()[:NOTE_CHARS],
    }


def _vault_workers(
    path: str,
    durability: Durability,
    items: list[list[Any]],
    commit: Callable[[statevault.Run, Any], object],
) -> tuple[list[Worker], Callable[[], None]]:
    """Thread `t` calls `commit(run, item)` for each of `items[t]`, on run `t{t}`.

    Each run starts from a saved `progress_state` (before the clock): the items are
    built beforehand too, so the benchmark measures committing them."""
    vault = statevault.open(path, durability=durability)
    runs = [vault.run(f"t{i}") for i in range(len(items))]
    for t, run in enumerate(runs):
        run.save(progress_state(t, 0))

    def worker(t: int) -> Worker:
        def go() -> None:
            run = runs[t]
            for item in items[t]:
                commit(run, item)

        return go

    return [worker(t) for t in range(len(items))], vault.close


def _api_workers(
    path: str, threads: int, per_thread: int, durability: Durability
) -> tuple[list[Worker], Callable[[], None]]:
    states = [[progress_state(t, n) for n in range(1, per_thread + 1)] for t in range(threads)]
    return _vault_workers(path, durability, states, statevault.Run.save)


def journal_ops(t: int, n: int) -> list[statevault.ops.Op]:
    """One journal entry's operations: a new cursor and the next step."""
    return [
        statevault.ops.set("cursor", f"{t:04x}{n:028x}"),
        statevault.ops.increment("step", 1),
    ]


def _journal_workers(
    path: str, threads: int, per_thread: int, durability: Durability
) -> tuple[list[Worker], Callable[[], None]]:
    entries = [[journal_ops(t, n) for n in range(1, per_thread + 1)] for t in range(threads)]
    return _vault_workers(path, durability, entries, statevault.Run.apply)


def _backend_workers(
    path: str, threads: int, per_thread: int, durability: Durability
) -> tuple[list[Worker], Callable[[], None]]:
    backend = SqliteBackend(path, initial_meta={}, durability=durability)

    def worker(t: int) -> Worker:
        def go() -> None:
            run_id = f"t{t}"
            for seq in range(1, per_thread + 1):
                record = (b"%s:%d:" % (run_id.encode(), seq)).ljust(RECORD_BYTES, b"r")
                backend.commit_checkpoint(run_id, seq, record, expected_head=seq - 1)

        return go

    return [worker(t) for t in range(threads)], backend.close


def api_record_bytes(root: str) -> dict[str, int]:
    """The size of one record as `api` and as `journal` store it."""
    directory = tempfile.mkdtemp(prefix="size-", dir=root)
    path = os.path.join(directory, "vault.db")
    try:
        with statevault.open(path) as vault:
            run = vault.run("t0")
            run.save(progress_state(0, 1))
            run.apply(journal_ops(0, 2))
        backend = SqliteBackend(path, initial_meta={}, create=False)
        try:
            return {
                kind: len(backend.read_checkpoint("t0", seq) or b"")
                for kind, seq in (("api", 1), ("journal", 2))
            }
        finally:
            backend.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure(kind: str, threads: int, commits: int, root: str) -> tuple[float, float, float]:
    """(commits per second, user and system CPU seconds per commit) of one rep, in a
    fresh vault removed afterwards."""
    path_kind, _, mode = kind.partition("/")
    directory = tempfile.mkdtemp(prefix=f"{path_kind}-{threads}-", dir=root)
    path = os.path.join(directory, "vault.db")
    if path_kind == "files":
        path = f"files://{os.path.join(directory, 'vault')}"
    per_thread = commits // threads
    make = {
        "api": _api_workers,
        "files": _api_workers,
        "journal": _journal_workers,
        "backend": _backend_workers,
    }[path_kind]
    workers, close = make(path, threads, per_thread, "process" if mode else "fsync")
    start = threading.Barrier(threads + 1)
    failures: list[BaseException] = []

    def body(work: Worker) -> None:
        start.wait()
        try:
            work()
        except BaseException as exc:
            failures.append(exc)

    pool = [threading.Thread(target=body, args=(w,)) for w in workers]
    try:
        for t in pool:
            t.start()
        gc.collect()
        start.wait()
        t0 = time.perf_counter()
        cpu0 = os.times()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - t0
        cpu1 = os.times()
    finally:
        close()
        shutil.rmtree(directory, ignore_errors=True)
    if failures:
        raise failures[0]
    done = per_thread * threads
    return done / elapsed, (cpu1.user - cpu0.user) / done, (cpu1.system - cpu0.system) / done


def scaling(
    root: str,
    *,
    reps: int,
    commits: int,
    kinds: tuple[str, ...] = KINDS,
    cpu: dict[tuple[str, int], list[tuple[float, float]]] | None = None,
) -> dict[tuple[str, int], list[float]]:
    """Commits per second of every (kind, threads) configuration: `reps` values each.

    `cpu`, if given, receives (user, system) CPU seconds per commit of each rep.

    One warm-up round, then `reps` rounds; configurations alternate within a round, in
    an order that flips every round, each rep in a fresh vault under `root`.
    """
    configs = [(kind, n) for kind in kinds for n in THREADS]
    rates: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    warmup = 1
    for i in range(warmup + reps):
        # Alternate the order so that no configuration always runs first after a pause.
        for config in configs if i % 2 == 0 else configs[::-1]:
            rate, user, system = measure(*config, commits, root)
            if i >= warmup:
                rates[config].append(rate)
                if cpu is not None:
                    cpu.setdefault(config, []).append((user, system))
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.group_commit")
    ap.add_argument("--reps", type=int, default=5, help="measured reps per configuration")
    ap.add_argument("--commits", type=int, default=2400, help="commits per rep (all threads)")
    ap.add_argument("--dir", help="where to write (default: temp dir if on the repo's disk)")
    args = ap.parse_args(argv)

    root = tempfile.mkdtemp(prefix="statevault-group-commit-", dir=choose_dir(args.dir))
    print(f"writing to {root} on {fs_type(root)}; {os.cpu_count()} CPUs", flush=True)
    try:
        record_bytes = {**api_record_bytes(root), "backend": RECORD_BYTES}
        record_bytes["files"] = record_bytes["api"]
        record_bytes.update({f"{kind}/process": record_bytes[kind] for kind in KINDS})
        cpu: dict[tuple[str, int], list[tuple[float, float]]] = {}
        rates = scaling(
            root, reps=args.reps, commits=args.commits, kinds=KINDS + CEILING_KINDS, cpu=cpu
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print()
    print(
        f"commits/s (durability='fsync'; '/process': durability='process', no fsync), median "
        f"of {args.reps} reps of {args.commits} commits; each thread commits to a run of its own"
    )
    print(
        f"{'path':<16}{'record':>8}{'threads':>8}{'commits/s':>12}{'min':>9}{'max':>9}"
        f"{'vs 1 thread':>13}{'cpu/commit: user':>18}{'sys':>8}"
    )
    ok = True
    for kind in KINDS + CEILING_KINDS:
        base = statistics.median(rates[(kind, 1)])
        for n in THREADS:
            values = rates[(kind, n)]
            med = statistics.median(values)
            user = statistics.median(u for u, _ in cpu[(kind, n)]) * 1e6
            system = statistics.median(s for _, s in cpu[(kind, n)]) * 1e6
            print(
                f"{kind:<16}{record_bytes[kind]:>6} B{n:>8}{med:>12,.0f}{min(values):>9,.0f}"
                f"{max(values):>9,.0f}{med / base:>12.1f}x{user:>15.0f} us{system:>5.0f} us"
            )
        speedup = statistics.median(rates[(kind, THREADS[-1])]) / base
        if kind in KINDS:
            ok = ok and speedup >= TARGET_SPEEDUP
    for kind in KINDS:
        needed = TARGET_SPEEDUP * statistics.median(rates[(kind, 1)])
        alone, most = (statistics.median(rates[(f"{kind}/process", n)]) for n in (1, THREADS[-1]))
        print(
            f"{kind}: {TARGET_SPEEDUP:g}x one durable thread is {needed:,.0f}/s; without any "
            f"fsync, {THREADS[-1]} threads do {most:,.0f}/s ({most / needed:.2f}x of that) "
            f"and one thread {alone:,.0f}/s ({alone / needed:.2f}x)"
        )
    print(
        f"\ntarget: {THREADS[-1]} threads >= {TARGET_SPEEDUP:g}x one thread on every path: "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
