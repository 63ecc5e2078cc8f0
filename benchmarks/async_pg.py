"""The async API on PostgreSQL: statevault's `a`-calls against psycopg's own async driver.

Usage, from the repository root (needs a PostgreSQL server; about 40 s):

    .venv/bin/python -m benchmarks.async_pg
    .venv/bin/python -m benchmarks.async_pg --tasks 64 --ops 50 --reps 5

statevault drives brief async calls on the event loop's own thread, their statements
going through psycopg's `AsyncConnection` (`statevault.bridge`). This measures, in one
run, three ways of doing one small durable write per operation:

- `asave`: `await run.asave(small_state)`, each task on a run of its own, through
  `statevault.open_async` with a pool of `--pool` connections (the driven path);
- `asave on threads`: the same save run on the vault's own threads, the way calls
  that are not brief go (and every call went before the driven path);
- `atransaction`: `async with run.atransaction() as s: s["n"] += 1`, held in a
  greenlet on the loop (before, each transaction ran on a thread of its own);
- floor `psycopg async`: `INSERT` of one 300-byte row and `COMMIT` per operation, on
  a `psycopg_pool.AsyncConnectionPool` of the same size, each task on its own rows.

Each is measured with one task (latency, median of every operation) and with `--tasks`
tasks at once (throughput: operations over the wall time, median of reps). A save
does more than the floor's insert (encoding, sealing, the compare-and-swap on the
run's head), so the floor bounds what any async design could reach.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

# Measure the statevault of this checkout, whatever the environment has installed.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(os.path.join(_SRC, "statevault")):
    sys.path.insert(0, _SRC)

import psycopg  # noqa: E402 - after the path is set
from psycopg import sql  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402

import statevault  # noqa: E402
from benchmarks.postgres import DEFAULT_DSN, RECORD_BYTES, with_options  # noqa: E402
from benchmarks.report import Row, machine_info, results_table, write_json  # noqa: E402
from benchmarks.timing import Samples  # noqa: E402
from benchmarks.workloads import small_state  # noqa: E402

Op = Callable[[int, int], Awaitable[None]]
"""One operation: (task number, operation number)."""


async def _timed(op: Op, task: int, ops: int, samples: Samples | None) -> None:
    for n in range(ops):
        start = time.perf_counter_ns()
        await op(task, n)
        if samples is not None:
            samples.ns.append(time.perf_counter_ns() - start)


async def _throughput(op: Op, tasks: int, ops: int) -> float:
    start = time.perf_counter()
    await asyncio.gather(*(_timed(op, t, ops, None) for t in range(tasks)))
    return tasks * ops / (time.perf_counter() - start)


async def measure(dsn: str, *, tasks: int, ops: int, reps: int, pool: int) -> list[Row]:
    schema = f"statevault_bench_{secrets.token_hex(4)}"
    table = sql.Identifier(schema, "bare_rows")
    vault = await statevault.open_async(with_options(dsn, schema=schema, pool_size=str(pool)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, v bytea NOT NULL)").format(table)
        )
    insert = sql.SQL("INSERT INTO {} (v) VALUES (%s)").format(table)
    bare_pool = AsyncConnectionPool(dsn, min_size=pool, max_size=pool, open=False)
    await bare_pool.open(wait=True)
    runs: dict[tuple[str, int], statevault.Run] = {}
    round_tag = [0]

    def run_of(kind: str, task: int) -> statevault.Run:
        key = (f"{kind}-{round_tag[0]}", task)
        if key not in runs:
            runs[key] = vault.run(f"{key[0]}-{task}")
        return runs[key]

    async def asave(task: int, n: int) -> None:
        await run_of("driven", task).asave(small_state(n))

    async def threaded(task: int, n: int) -> None:
        run = run_of("threads", task)
        # What a call that is not brief gets: the vault's own threads.
        await vault._engine.offload(lambda: run.save(small_state(n)), brief=False)

    async def transaction(task: int, n: int) -> None:
        async with run_of("transaction", task).atransaction(default={"n": 0}) as state:
            state["n"] += 1

    async def native(task: int, n: int) -> None:
        async with bare_pool.connection() as conn:
            await conn.execute(insert, (os.urandom(RECORD_BYTES),))

    cases: list[tuple[str, Op]] = [
        ("asave", asave),
        ("threads", threaded),
        ("transaction", transaction),
        ("native", native),
    ]
    latency = {name: Samples() for name, _ in cases}
    rates: dict[str, list[float]] = {name: [] for name, _ in cases}
    try:
        for i in range(1 + reps):  # one warm-up round
            round_tag[0] = i
            counted = i > 0
            for name, op in cases[i % 4 :] + cases[: i % 4]:  # each goes first in turn
                await _timed(op, 10_000 + i, ops, latency[name] if counted else None)
                rate = await _throughput(op, tasks, ops)
                if counted:
                    rates[name].append(rate)
    finally:
        await bare_pool.close()
        await vault.aclose()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    floor = "psycopg async INSERT+COMMIT"
    rows = []
    labels = {
        "asave": "await run.asave",
        "threads": "asave on threads",
        "transaction": "async with run.atransaction() (one change)",
    }
    for name, label in labels.items():
        rows.append(Row(f"1 task · {label}, median", "µs", latency[name], floor, latency["native"]))
    for name, label in labels.items():
        rows.append(
            Row(
                f"{tasks} tasks · {label} ops/s",
                "/s",
                statistics.median(rates[name]),
                floor,
                statistics.median(rates["native"]),
                n=reps,
                spread=f"{min(rates[name]):,.0f} - {max(rates[name]):,.0f}",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.async_pg")
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="the server (a database to write in)")
    ap.add_argument("--tasks", type=int, default=64, help="concurrent tasks")
    ap.add_argument("--ops", type=int, default=40, help="operations per task per round")
    ap.add_argument("--reps", type=int, default=5, help="measured rounds")
    ap.add_argument("--pool", type=int, default=16, help="connections on each side")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    rows = asyncio.run(
        measure(args.dsn, tasks=args.tasks, ops=args.ops, reps=args.reps, pool=args.pool)
    )
    print(results_table(rows))
    if args.json:
        write_json(
            args.json,
            machine=machine_info(os.getcwd()),
            elapsed=time.perf_counter() - started,
            rows=rows,
            details={"tasks": args.tasks, "ops": args.ops, "reps": args.reps, "pool": args.pool},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
