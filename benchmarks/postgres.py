"""PostgreSQL backend: small durable commits against bare psycopg, writer scaling, leases.

Usage, from the repository root (needs a PostgreSQL server; about a minute):

    .venv/bin/python -m benchmarks.postgres
    .venv/bin/python -m benchmarks.postgres --dsn postgresql://user@host/db --reps 5 --json pg.json

The DSN defaults to `STATEVAULT_TEST_PG` or `postgresql://postgres@127.0.0.1:5432/test`.
Everything is written to a schema made for the run and dropped at the end.

Cases, all with `durability="fsync"` (`synchronous_commit=on`):
- small commit latency, in interleaved blocks of 50 operations of each kind:
  `api` is `run.save(small_state)` (encoding, sealing, the object check and the
  commit); `backend` is `PostgresBackend.commit_checkpoint` with a ready 300-byte
  record; the floor is bare psycopg, one connection, `INSERT` of one 300-byte row
  and `COMMIT`. Target: `api` median <= 2x the floor.
- writer scaling: 1 and 16 writers, each committing small checkpoints to a run of its
  own, as threads of this process (`api`, `backend`) and, for the server's own
  ceiling, bare psycopg threads on connections of their own. Throughput is commits
  divided by the wall time from release to the last writer's end, median of reps.
  Target: 16 writers >= 4x one writer, on the `backend` path.
- the server's own ceiling, if `pgbench` is on the PATH: PostgreSQL's C client runs
  the same one-row `INSERT` with 1 and 16 connections (`-j 2`), `--pgbench-seconds`
  each. It shows how far the server scales when the client costs almost no CPU, where
  Python clients (bare psycopg included) share the machine's CPUs with the server.
- lease acquire+release: `backend.acquire_lease` then `release_lease` (the pair
  timed), and `with run.lease(renew=False)` with an empty block. Target: the backend
  pair's median <= 2 ms.
- chat storage: the agent chat of benchmarks/incremental.py (1000 transactions, each
  appending a ~2 KB message), then the bytes the server holds for it (records and
  objects, as stored) against msgspec + zstd-3 of the final state. Target (issue 3):
  at most 2x. Journal entries are relocated after each fold (`rewrite_records`).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
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

import psycopg  # noqa: E402 - after the path is set
from psycopg import sql  # noqa: E402

import statevault  # noqa: E402
from benchmarks.incremental import (  # noqa: E402
    CHAT_MESSAGE_CHARS,
    TARGET_STORAGE_RATIO,
    _chat_step,
    _empty_chat,
    zstd3_size,
)
from benchmarks.report import Row, judge, machine_info, results_table, write_json  # noqa: E402
from benchmarks.timing import Samples, alternate  # noqa: E402
from benchmarks.workloads import chat_messages, small_state  # noqa: E402
from statevault.backends.postgres import PostgresBackend  # noqa: E402

DEFAULT_DSN = os.environ.get("STATEVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
RECORD_BYTES = 300
BLOCK = 50
WRITERS = (1, 16)
TARGET_LATENCY_RATIO = 2.0
TARGET_SPEEDUP = 4.0
TARGET_LEASE_NS = 2e6

Worker = Callable[[], None]


def with_options(dsn: str, **options: str) -> str:
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{dsn}{'&' if '?' in dsn else '?'}{extra}"


def record(run_id: str, seq: int) -> bytes:
    return (b"%s:%d:" % (run_id.encode(), seq)).ljust(RECORD_BYTES, b"r")


class Bench:
    """One schema for the whole run, its vault and backend, and a bare connection."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.url = with_options(dsn, schema=schema, pool_size="16")
        self.vault = statevault.open(self.url)
        self.backend = PostgresBackend(self.url, initial_meta={})
        self.table = sql.Identifier(schema, "bare_rows")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, v bytea NOT NULL)").format(
                    self.table
                )
            )
        self.insert = sql.SQL("INSERT INTO {} (v) VALUES (%s)").format(self.table)

    def close(self) -> None:
        self.vault.close()
        self.backend.close()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    def bare_commit(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(self.insert, (os.urandom(RECORD_BYTES),))
        conn.commit()


# -- the server's own ceiling: pgbench ---------------------------------------------------
def pgbench_rates(bench: Bench, seconds: int) -> dict[int, float] | None:
    """Commits/s of pgbench's C client inserting one 300-byte row per transaction, with
    1 and 16 connections; None if pgbench is not installed."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        return None
    statement = sql.SQL("INSERT INTO {} (v) VALUES (convert_to(repeat('x', {}), 'UTF8'));")
    with psycopg.connect(bench.dsn) as conn:
        text = statement.format(bench.table, sql.Literal(RECORD_BYTES)).as_string(conn)
    rates = {}
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(text + "\n")
        script.flush()
        for clients in WRITERS:
            threads = str(min(clients, os.cpu_count() or 1))
            command = [pgbench, "-n", "-f", script.name, "-c", str(clients), "-j", threads]
            done = subprocess.run(
                [*command, "-T", str(seconds), bench.dsn],
                capture_output=True,
                text=True,
                check=True,
            )
            found = re.search(r"^tps = ([0-9.]+)", done.stdout, re.MULTILINE)
            if found is None:
                raise RuntimeError(f"pgbench printed no tps:\n{done.stdout}\n{done.stderr}")
            rates[clients] = float(found.group(1))
    return rates


# -- latency ----------------------------------------------------------------------------
def latency(bench: Bench, *, reps: int) -> dict[str, Samples]:
    """Per-commit times of `api`, `backend` and the bare floor, interleaved by block."""
    samples = {"api": Samples(), "backend": Samples(), "bare": Samples()}
    run = bench.vault.run("latency-api")
    counter = {"api": 0, "backend": 0}
    states = [small_state(i) for i in range((reps + 1) * BLOCK)]
    bare = psycopg.connect(bench.dsn)  # not autocommit: INSERT then COMMIT, as an app does

    def api(counts: bool) -> None:
        for _ in range(BLOCK):
            state = states[counter["api"]]
            counter["api"] += 1
            t = time.perf_counter_ns()
            run.save(state)
            if counts:
                samples["api"].ns.append(time.perf_counter_ns() - t)

    def backend(counts: bool) -> None:
        for _ in range(BLOCK):
            seq = counter["backend"] = counter["backend"] + 1
            rec = record("latency-backend", seq)
            t = time.perf_counter_ns()
            bench.backend.commit_checkpoint("latency-backend", seq, rec, expected_head=seq - 1)
            if counts:
                samples["backend"].ns.append(time.perf_counter_ns() - t)

    def floor(counts: bool) -> None:
        for _ in range(BLOCK):
            t = time.perf_counter_ns()
            bench.bare_commit(bare)
            if counts:
                samples["bare"].ns.append(time.perf_counter_ns() - t)

    try:
        alternate([api, backend, floor], reps=reps, warmup=1)
    finally:
        bare.close()
    return samples


# -- scaling ----------------------------------------------------------------------------
def _workers(bench: Bench, kind: str, writers: int, per_writer: int, tag: str) -> list[Worker]:
    def api(i: int) -> Worker:
        run = bench.vault.run(f"{tag}-{i}")
        states = [small_state(n) for n in range(per_writer)]

        def go() -> None:
            for state in states:
                run.save(state)

        return go

    def backend(i: int) -> Worker:
        run_id = f"{tag}-{i}"
        records = [record(run_id, seq) for seq in range(1, per_writer + 1)]

        def go() -> None:
            for seq, rec in enumerate(records, start=1):
                bench.backend.commit_checkpoint(run_id, seq, rec, expected_head=seq - 1)

        return go

    def bare(i: int) -> Worker:
        conn = psycopg.connect(bench.dsn)

        def go() -> None:
            try:
                for _ in range(per_writer):
                    bench.bare_commit(conn)
            finally:
                conn.close()

        return go

    make = {"api": api, "backend": backend, "bare": bare}[kind]
    return [make(i) for i in range(writers)]


def throughput(bench: Bench, kind: str, writers: int, commits: int, tag: str) -> float:
    per_writer = commits // writers
    workers = _workers(bench, kind, writers, per_writer, tag)
    start = threading.Barrier(writers + 1)
    failures: list[BaseException] = []

    def body(work: Worker) -> None:
        start.wait()
        try:
            work()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=body, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise failures[0]
    return per_writer * writers / elapsed


def scaling(bench: Bench, *, reps: int, commits: int) -> dict[tuple[str, int], list[float]]:
    configs = [(kind, n) for kind in ("api", "backend", "bare") for n in WRITERS]
    rates: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    for i in range(1 + reps):  # one warm-up round
        for kind, n in configs if i % 2 == 0 else configs[::-1]:
            rate = throughput(bench, kind, n, commits, f"scale-{kind}-{n}-{i}")
            if i > 0:
                rates[(kind, n)].append(rate)
    return rates


# -- leases -----------------------------------------------------------------------------
def leases(bench: Bench, *, reps: int) -> dict[str, Samples]:
    samples = {"backend": Samples(), "api": Samples()}
    run = bench.vault.run("lease-api")

    def backend(counts: bool) -> None:
        for _ in range(BLOCK):
            t = time.perf_counter_ns()
            grant = bench.backend.acquire_lease("lease-backend", "bench", 30)
            bench.backend.release_lease("lease-backend", grant.token)
            if counts:
                samples["backend"].ns.append(time.perf_counter_ns() - t)

    def api(counts: bool) -> None:
        for _ in range(BLOCK):
            t = time.perf_counter_ns()
            with run.lease(ttl=30, renew=False):
                pass
            if counts:
                samples["api"].ns.append(time.perf_counter_ns() - t)

    alternate([backend, api], reps=reps, warmup=1)
    return samples


# -- main -------------------------------------------------------------------------------
def chat_storage(bench: Bench, *, steps: int) -> tuple[int, int]:
    """(bytes the server holds for the chat run, zstd-3 size of its final state)."""
    run = bench.vault.run("chat")
    state = _empty_chat()
    run.save(state)
    for i, message in enumerate(chat_messages(steps, chars=CHAT_MESSAGE_CHARS), 1):
        with run.transaction() as view:
            _chat_step(view, i, message)
        _chat_step(state, i, message)
    if run.load() != state:
        raise AssertionError("the chat state does not load back equal")
    held = sum(len(c.record) for c in bench.backend.read_checkpoints("chat"))
    digests = list(bench.backend.scan_objects())
    for start in range(0, len(digests), 256):
        held += sum(map(len, bench.backend.get_objects(digests[start : start + 256]).values()))
    return held, zstd3_size(state)


def server_facts(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        facts = {"server": str(conn.execute("SHOW server_version").fetchone()[0])}  # type: ignore[index]
        for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method"):
            facts[name] = str(conn.execute(sql.SQL("SHOW {}").format(sql.SQL(name))).fetchone()[0])  # type: ignore[index]
    return facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.postgres")
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="the server (a database to write in)")
    ap.add_argument("--reps", type=int, default=5, help="measured rounds per case")
    ap.add_argument("--commits", type=int, default=1600, help="commits per scaling rep")
    ap.add_argument("--chat-steps", type=int, default=1000, help="steps of the chat workload")
    ap.add_argument(
        "--pgbench-seconds", type=int, default=6, help="length of each pgbench run (0: skip)"
    )
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    facts = server_facts(args.dsn)
    print(
        f"PostgreSQL {facts['server']} at {args.dsn}; {os.cpu_count()} CPUs; "
        + ", ".join(f"{k}={v}" for k, v in facts.items() if k != "server"),
        flush=True,
    )
    bench = Bench(args.dsn, f"statevault_bench_{secrets.token_hex(4)}")
    rows: list[Row] = []
    try:
        lat = latency(bench, reps=args.reps)
        rows.append(
            Row(
                "small commit · run.save, median",
                "µs",
                lat["api"],
                "bare INSERT+COMMIT",
                lat["bare"],
                f"≤ {TARGET_LATENCY_RATIO:g}x floor",
                judge(lat["api"].median / lat["bare"].median, TARGET_LATENCY_RATIO),
            )
        )
        rows.append(
            Row("small commit · backend, median", "µs", lat["backend"], "bare", lat["bare"])
        )
        rows.append(Row("small commit · run.save, p99", "µs", lat["api"], stat="p99"))
        rows.append(Row("bare INSERT+COMMIT, p99", "µs", lat["bare"], stat="p99"))

        rates = scaling(bench, reps=args.reps, commits=args.commits)
        for kind in ("api", "backend", "bare"):
            one = statistics.median(rates[(kind, 1)])
            many = statistics.median(rates[(kind, WRITERS[-1])])
            judged = kind == "backend"
            for n, rate in ((1, one), (WRITERS[-1], many)):
                values = rates[(kind, n)]
                rows.append(
                    Row(
                        f"{kind} commits/s · {n} writer{'s' if n > 1 else ''}",
                        "/s",
                        rate,
                        n=len(values),
                        spread=f"{min(values):,.0f} - {max(values):,.0f}",
                    )
                )
            rows.append(
                Row(
                    f"{kind} · {WRITERS[-1]} writers / 1",
                    "x",
                    many / one,
                    target=f"≥ {TARGET_SPEEDUP:g}x" if judged else "",
                    result=("PASS" if many / one >= TARGET_SPEEDUP else "MISS")
                    if judged
                    else "ctx",
                )
            )

        ceiling = pgbench_rates(bench, args.pgbench_seconds) if args.pgbench_seconds else None
        if ceiling is not None:
            for n, rate in ceiling.items():
                rows.append(
                    Row(
                        f"pgbench (C client) commits/s · {n} connection{'s' if n > 1 else ''}",
                        "/s",
                        rate,
                    )
                )
            rows.append(
                Row(
                    f"pgbench · {WRITERS[-1]} connections / 1",
                    "x",
                    ceiling[WRITERS[-1]] / ceiling[1],
                    note="the server's own scaling, with a client that needs almost no CPU",
                )
            )

        held = leases(bench, reps=args.reps)
        rows.append(
            Row(
                "lease acquire+release · backend, median",
                "µs",
                held["backend"],
                target="≤ 2 ms",
                result=judge(held["backend"].median, TARGET_LEASE_NS),
            )
        )
        rows.append(Row("lease acquire+release · run.lease(), median", "µs", held["api"]))

        stored, reference = chat_storage(bench, steps=args.chat_steps)
        rows.append(
            Row(
                f"chat storage after {args.chat_steps} steps · records + objects",
                "B",
                stored,
                "msgspec + zstd-3 of the final state",
                reference,
                f"≤ {TARGET_STORAGE_RATIO:g}x floor",
                judge(stored / reference, TARGET_STORAGE_RATIO),
            )
        )
    finally:
        bench.close()

    print()
    print(results_table(rows))
    if args.json:
        write_json(
            args.json,
            machine={**machine_info(os.getcwd()), **facts},
            elapsed=time.perf_counter() - started,
            rows=rows,
            details={},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
