"""Leases: what taking a run's lease costs, and what fencing adds to a commit.

Usage, from the repository root:

    .venv/bin/python -m benchmarks.leases               # about 20 s
    .venv/bin/python -m benchmarks.leases --reps 5 --ops 400 --json out.json
    .venv/bin/python -m benchmarks.leases --pg postgresql://postgres@127.0.0.1:5432/test

Cases, on each backend (SQLite, files, memory, and PostgreSQL with `--pg URL`, in a
schema made for the run and dropped after it), with `durability="fsync"`:
- `lease acquire+release`: `with run.lease(ttl=30, renew=False): pass`, the public
  call: a durable grant (a new fencing token) and a durable release. Target: median
  at most 2 ms on the persistent backends.
- `commit with lease` against `commit without`: `run.save(state)` of a small progress
  state, inside one held lease (each commit carries the token, checked by the backend
  with the compare-and-swap) or with no lease. The ratio is the cost of fencing.

Operations are timed one by one, the cases taking turns operation by operation in an
order that flips each time, so all cases share the machine's drift. A state is built
inside the timed call (microseconds, the same for both commit cases).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# Measure the statevault of this checkout, whatever the environment has installed.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(os.path.join(_SRC, "statevault")):
    sys.path.insert(0, _SRC)

import statevault  # noqa: E402 - after the path is set
from benchmarks.cases import vault_url  # noqa: E402
from benchmarks.report import Report, Row, judge, machine_info, results_table, write_json  # noqa: E402
from benchmarks.run import choose_dir  # noqa: E402
from benchmarks.timing import Samples, alternate  # noqa: E402

BACKENDS = ("sqlite", "files", "memory")
TARGET_ACQUIRE_RELEASE_MS = 2.0


def _state(n: int) -> dict[str, Any]:
    return {"step": n, "status": "running", "cursor": f"{n:032x}", "note": "progress" * 8}


PG_SCHEMA = "statevault_bench_leases"


def _url(backend: str, directory: str, pg: str | None) -> str:
    if backend == "postgres":
        assert pg is not None
        return f"{pg}{'&' if '?' in pg else '?'}schema={PG_SCHEMA}_{os.getpid()}"
    return "memory://" if backend == "memory" else vault_url(backend, directory)


def _drop_pg_schema(pg: str) -> None:
    import psycopg  # noqa: PLC0415 - only with --pg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}_{os.getpid()}" CASCADE')


def _timed(samples: Samples, record: bool, call: Callable[[], object]) -> None:
    t0 = time.perf_counter_ns()
    call()
    elapsed = time.perf_counter_ns() - t0
    if record:
        samples.ns.append(elapsed)


def measure(
    backend: str, root: str, *, reps: int, ops: int, pg: str | None = None
) -> dict[str, Samples]:
    """Samples of each case on one backend: `reps` rounds of `ops` operations per case.

    The cases take turns operation by operation (in an order that flips each time),
    so a comparison is between neighbours in time: on this shared VM the disk's speed
    drifts several-fold within seconds, which batches of one case would measure.
    """
    directory = tempfile.mkdtemp(prefix=f"{backend}-", dir=root)
    vault = statevault.open(_url(backend, directory, pg))
    results = {name: Samples() for name in ("acquire+release", "with lease", "without")}
    plain, leased, cycled = vault.run("plain"), vault.run("leased"), vault.run("cycled")
    counter = iter(range(1 << 62))

    def cycle() -> None:
        with cycled.lease(ttl=30, renew=False):
            pass

    def case(name: str, call: Callable[[], object]) -> Callable[[bool], None]:
        def step(record: bool) -> None:
            _timed(results[name], record, call)

        return step

    steps = [
        case("acquire+release", cycle),
        case("with lease", lambda: leased.save(_state(next(counter)))),
        case("without", lambda: plain.save(_state(next(counter)))),
    ]
    try:
        # One lease for all "with lease" commits, long enough for the whole run.
        with leased.lease(ttl=3600, renew=False):
            alternate(steps, reps=reps * ops, warmup=min(ops, 20))
    finally:
        vault.close()
        shutil.rmtree(directory, ignore_errors=True)
        if backend == "postgres" and pg is not None:
            _drop_pg_schema(pg)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.leases")
    ap.add_argument("--reps", type=int, default=3, help="measured rounds per case")
    ap.add_argument("--ops", type=int, default=200, help="operations per case and round")
    ap.add_argument("--json", metavar="PATH", help="also write every sample to PATH as JSON")
    ap.add_argument("--dir", help="where to write (default: temp dir if on the repo's disk)")
    ap.add_argument("--pg", metavar="URL", help="also measure PostgreSQL at this URL")
    args = ap.parse_args(argv)
    backends = [*BACKENDS, "postgres"] if args.pg else list(BACKENDS)

    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="statevault-leases-", dir=choose_dir(args.dir))
    info = machine_info(root)
    print("## statevault lease benchmarks\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    report = Report()
    details: dict[str, Any] = {}
    try:
        for backend in backends:
            print(f"\n{backend}:", flush=True)
            results = measure(backend, root, reps=args.reps, ops=args.ops, pg=args.pg)
            details[backend] = {name: s.as_dict() for name, s in results.items()}
            cycle = results["acquire+release"]
            persistent = backend != "memory"
            report.add(
                Row(
                    f"{backend}: lease acquire+release",
                    "ms",
                    cycle,
                    target=f"<= {TARGET_ACQUIRE_RELEASE_MS:g} ms" if persistent else "",
                    result=(
                        judge(cycle.median / 1e6, TARGET_ACQUIRE_RELEASE_MS)
                        if persistent
                        else "ctx"
                    ),
                )
            )
            report.add(
                Row(
                    f"{backend}: commit with lease",
                    "ms",
                    results["with lease"],
                    floor_name="commit without",
                    floor=results["without"],
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print("\n### Results (medians; ratio = with lease / without)\n")
    print(results_table(report.rows))
    elapsed = time.perf_counter() - started
    print(f"\ntotal time {elapsed:.0f} s", flush=True)
    if args.json:
        write_json(args.json, machine=info, elapsed=elapsed, rows=report.rows, details=details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
