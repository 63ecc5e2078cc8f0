"""SQLite integrity checks: what the catalog of heads and `cell_size_check` cost, and
what `PRAGMA quick_check` at open would have cost instead.

Usage, from the repository root:

    .venv/bin/python -m benchmarks.integrity              # about a minute
    .venv/bin/python -m benchmarks.integrity --ops 400 --mb 100 --json out.json

Cases (SQLite, `durability="fsync"`):
- `commit`: `run.save(state)` of a small progress state on a vault whose catalog of
  heads is kept by its triggers, against the same on a vault whose triggers were
  dropped (the catalog table left, so nothing else differs). The ratio is the cost
  of keeping the catalog. Measured with `durability="fsync"`, and again with
  `"process"` (no WAL flush), where the triggers' own work is not hidden by the flush.
- `runs()` and `load()`: on a vault of `--runs` runs, checked against the catalog,
  against a copy without the catalog (layout 1, read unchecked).
- `open+read` against `quick_check`: opening a vault of about `--mb` MB, listing its
  runs and loading one run's newest state (1 MB), against SQLite's `PRAGMA quick_check` of the same
  file (what checking every page at open would add).
- `scan, cell_size_check on/off`: reading every object row of that file through a new
  SQLite connection, with the setting on (as statevault opens) and off: its cost on
  pages read cold from SQLite's cache (warm in the OS cache).

Operations are timed one by one, cases taking turns in an order that flips each time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
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
from benchmarks.report import Report, Row, machine_info, results_table, write_json  # noqa: E402
from benchmarks.run import choose_dir  # noqa: E402
from benchmarks.timing import Samples, alternate  # noqa: E402

_TRIGGERS = ("statevault_heads_insert", "statevault_heads_delete")


def _state(n: int) -> dict[str, Any]:
    return {"step": n, "status": "running", "cursor": f"{n:032x}", "note": "progress" * 8}


def _sql(path: str, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _without_catalog(path: str, *, keep_table: bool) -> None:
    drops = [f"DROP TRIGGER {name}" for name in _TRIGGERS]
    _sql(path, *drops, *([] if keep_table else ["DROP TABLE statevault_heads"]))


def _case(
    results: dict[str, Samples], name: str, call: Callable[[], object]
) -> Callable[[bool], None]:
    def step(record: bool) -> None:
        t0 = time.perf_counter_ns()
        call()
        elapsed = time.perf_counter_ns() - t0
        if record:
            results[name].ns.append(elapsed)

    return step


def measure_commits(root: str, *, ops: int, durability: str) -> dict[str, Samples]:
    kept = os.path.join(root, f"kept-{durability}.db")
    dropped = os.path.join(root, f"dropped-{durability}.db")
    for path in (kept, dropped):
        statevault.open(path).close()
    _without_catalog(dropped, keep_table=True)
    results = {"kept": Samples(), "dropped": Samples()}
    counter = iter(range(1 << 62))
    with (
        statevault.open(kept, durability=durability) as a,  # type: ignore[arg-type]
        statevault.open(dropped, durability=durability) as b,  # type: ignore[arg-type]
    ):
        run_a, run_b = a.run("r"), b.run("r")
        alternate(
            [
                _case(results, "kept", lambda: run_a.save(_state(next(counter)))),
                _case(results, "dropped", lambda: run_b.save(_state(next(counter)))),
            ],
            reps=ops,
            warmup=min(ops, 20),
        )
    return results


def measure_reads(root: str, *, runs: int, ops: int) -> dict[str, Samples]:
    checked, plain = os.path.join(root, "checked.db"), os.path.join(root, "plain.db")
    with statevault.open(checked, durability="process") as vault:
        for i in range(runs):
            vault.run(f"run-{i:05d}").save(_state(i))
    shutil.copyfile(checked, plain)
    _without_catalog(plain, keep_table=False)
    results = {name: Samples() for name in ("runs checked", "runs", "load checked", "load")}
    middle = f"run-{runs // 2:05d}"
    with statevault.open(checked) as a, statevault.open(plain) as b:
        # Each pair alone: a listing of every run before a load would leave the load
        # that follows it with cold caches, and in `alternate` that is always the same one.
        for checked, plain in (("runs checked", "runs"), ("load checked", "load")):
            calls = {"runs": (a.runs, b.runs), "load": (a.run(middle).load, b.run(middle).load)}
            call_a, call_b = calls[plain]
            alternate(
                [_case(results, checked, call_a), _case(results, plain, call_b)],
                reps=ops,
                warmup=min(ops, 20),
            )
    return results


def measure_big(root: str, *, mb: int, reps: int) -> tuple[dict[str, Samples], int]:
    path = os.path.join(root, "big.db")
    chunk = 1 << 20
    with statevault.open(path, durability="process") as vault:
        for i in range(mb):
            vault.run(f"big-{i % 10}").save({"i": i, "blob": os.urandom(chunk)})
    size = os.path.getsize(path)

    def open_and_read() -> None:
        with statevault.open(path, create=False) as vault:
            vault.run(vault.runs()[0]).load()

    def quick_check() -> None:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            conn.close()

    def scan(setting: str) -> Callable[[], None]:
        def run() -> None:
            conn = sqlite3.connect(path)
            try:
                conn.execute(f"PRAGMA cell_size_check={setting}")
                for (data,) in conn.execute("SELECT data FROM statevault_objects"):
                    assert data
            finally:
                conn.close()

        return run

    names = ("open+read", "quick_check", "scan on", "scan off")
    results = {name: Samples() for name in names}
    alternate(
        [
            _case(results, "open+read", open_and_read),
            _case(results, "quick_check", quick_check),
            _case(results, "scan on", scan("ON")),
            _case(results, "scan off", scan("OFF")),
        ],
        reps=reps,
        warmup=1,
    )
    return results, size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.integrity")
    ap.add_argument("--ops", type=int, default=300, help="measured commits and reads per case")
    ap.add_argument("--runs", type=int, default=1000, help="runs in the vault read")
    ap.add_argument("--mb", type=int, default=100, help="size of the large vault, in MB")
    ap.add_argument("--reps", type=int, default=15, help="measured rounds on the large vault")
    ap.add_argument("--json", metavar="PATH", help="also write every sample to PATH as JSON")
    ap.add_argument("--dir", help="where to write (default: temp dir if on the repo's disk)")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="statevault-integrity-", dir=choose_dir(args.dir))
    info = machine_info(root)
    print("## statevault SQLite integrity-check benchmarks\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    report = Report()
    details: dict[str, Any] = {}
    try:
        commits = measure_commits(root, ops=args.ops, durability="fsync")
        report.add(
            Row(
                "commit, catalog kept by triggers",
                "ms",
                commits["kept"],
                floor_name="commit, triggers dropped",
                floor=commits["dropped"],
            )
        )
        # Without the WAL flush, whose time varies several-fold here, the triggers'
        # own work shows.
        unflushed = measure_commits(root, ops=args.ops, durability="process")
        report.add(
            Row(
                'commit, catalog kept, durability="process"',
                "µs",
                unflushed["kept"],
                floor_name="triggers dropped",
                floor=unflushed["dropped"],
            )
        )
        reads = measure_reads(root, runs=args.runs, ops=args.ops)
        report.add(
            Row(
                f"runs() of {args.runs:,} runs, checked",
                "ms",
                reads["runs checked"],
                floor_name="unchecked (layout 1)",
                floor=reads["runs"],
            )
        )
        report.add(
            Row(
                "load() of a small state, checked",
                "µs",
                reads["load checked"],
                floor_name="unchecked (layout 1)",
                floor=reads["load"],
            )
        )
        big, size = measure_big(root, mb=args.mb, reps=args.reps)
        report.add(
            Row(
                f"PRAGMA quick_check, {size / 1e6:,.0f} MB",
                "ms",
                big["quick_check"],
                floor_name="open, runs(), load one 1 MB state",
                floor=big["open+read"],
            )
        )
        report.add(
            Row(
                f"read every object row, cell_size_check on, {size / 1e6:,.0f} MB",
                "ms",
                big["scan on"],
                floor_name="cell_size_check off",
                floor=big["scan off"],
            )
        )
        details = {
            f"{label} {name}": s.as_dict()
            for label, part in (
                ("fsync", commits),
                ("process", unflushed),
                ("", reads),
                ("", big),
            )
            for name, s in part.items()
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print("\n### Results (medians; ratio = case / the one beside it)\n")
    print(results_table(report.rows))
    elapsed = time.perf_counter() - started
    print(f"\ntotal time {elapsed:.0f} s", flush=True)
    if args.json:
        write_json(args.json, machine=info, elapsed=elapsed, rows=report.rows, details=details)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
