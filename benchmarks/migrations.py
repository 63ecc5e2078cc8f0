"""Schema migrations: migrate-on-load through a 4-step chain, and bulk migration (SQLite).

Usage, from the repository root:

    .venv/bin/python -m benchmarks.migrations            # about 40 s
    .venv/bin/python -m benchmarks.migrations --quick    # 2,000 runs instead of 10,000
    .venv/bin/python -m benchmarks.migrations --json out.json

Cases:
- `load`: one ~1 MB state (a document of 2,000 records) stored at version 1 and at
  version 5 of a schema whose steps 1->2->3->4->5 add a field, rename a top-level
  field, rename a field in every record, and retype a field (float to int cents).
  Three loads are timed alternately: the plain decode (a handle without schema),
  the typed load of the version-5 state (decode + validate into the type), and the
  typed load of the version-1 state (decode + the 4 steps + validate). The target:
  the migrating load adds at most 2x the plain decode time to it.
- `bulk`: `vault.migrate` of N small runs (~200 B states) from version 1 to 2 on
  SQLite with durability="fsync" (the runs are written beforehand with
  durability="process", which does not change what is measured). Target: >= 2,000
  runs/s for 10,000 runs. Each rep migrates a fresh copy of the vault file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import msgspec

# Measure the statevault of this checkout, whatever the environment has installed.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(os.path.join(_SRC, "statevault")):
    sys.path.insert(0, _SRC)

import statevault  # noqa: E402 - after the path is set
from benchmarks.report import Row, fs_type, judge, machine_info, results_table, write_json  # noqa: E402
from benchmarks.run import choose_dir  # noqa: E402
from benchmarks.timing import Samples, alternate  # noqa: E402

TARGET_LOAD_OVERHEAD = 2.0
TARGET_BULK_RATE = 2000.0
RECORDS = 2600


# -- the schema's history ---------------------------------------------------------------
class EntryV1(msgspec.Struct):
    key: str
    text: str
    score: float
    tags: list[str]


class DocV1(msgspec.Struct):
    id: str
    title: str
    entries: list[EntryV1]
    price: float


class EntryV3(msgspec.Struct):
    key: str
    body: str
    score: float
    tags: list[str]


class DocV5(msgspec.Struct):
    id: str
    name: str
    entries: list[EntryV3]
    price_cents: int
    owner: str = "nobody"


def add_owner(state: dict[str, Any]) -> dict[str, Any]:
    state["owner"] = "nobody"
    return state


def rename_title(state: dict[str, Any]) -> dict[str, Any]:
    state["name"] = state.pop("title")
    return state


def rename_text(state: dict[str, Any]) -> dict[str, Any]:
    for entry in state["entries"]:
        entry["body"] = entry.pop("text")
    return state


def cents(state: dict[str, Any]) -> dict[str, Any]:
    state["price_cents"] = round(state.pop("price") * 100)
    return state


STEPS = [(1, 2, add_owner), (2, 3, rename_title), (3, 4, rename_text), (4, 5, cents)]

WORDS = ["order", "ship", "pay", "retry", "wait", "done", "queue", "step", "agent", "tool"]


def doc_v1(i: int) -> DocV1:
    entries = [
        EntryV1(
            f"e{n:05d}",
            " ".join(WORDS[(n * 7 + j + i) % 10] for j in range(60)),
            n / 7,
            [WORDS[n % 10], WORDS[(n + 3) % 10]],
        )
        for n in range(RECORDS)
    ]
    return DocV1(f"doc-{i}", "a document", entries, 12.5)


def doc_v5(v1: DocV1) -> DocV5:
    entries = [EntryV3(e.key, e.text, e.score, e.tags) for e in v1.entries]
    return DocV5(v1.id, v1.title, entries, round(v1.price * 100))


def register(vault: statevault.Vault, version: int) -> None:
    vault.schema("doc", {1: DocV1, 5: DocV5}[version], version=version)
    for source, target, function in STEPS:
        vault.migration("doc", source, target)(function)


# -- cases ------------------------------------------------------------------------------
def load_case(root: str, reps: int) -> tuple[list[Row], dict[str, Any]]:
    path = os.path.join(root, "load.db")
    v1 = doc_v1(0)
    with statevault.open(path) as vault:
        register(vault, 1)
        vault.run("old", schema="doc").save(v1)
    with statevault.open(path) as vault:
        register(vault, 5)
        vault.run("new", schema="doc").save(doc_v5(v1))
    size = len(msgspec.json.encode(v1))
    vault = statevault.open(path)
    register(vault, 5)
    plain_run = vault.run("new")
    typed_run = vault.run("new", schema="doc")
    migrating_run = vault.run("old", schema="doc")
    if migrating_run.load() != typed_run.load():
        raise AssertionError("the migrated state differs from the one saved at version 5")
    samples = {"plain": Samples(), "typed": Samples(), "migrating": Samples()}

    def step(name: str, run: statevault.Run) -> Any:
        def go(counts: bool) -> None:
            t = time.perf_counter_ns()
            run.load()
            if counts:
                samples[name].ns.append(time.perf_counter_ns() - t)

        return go

    alternate(
        [
            step("plain", plain_run),
            step("typed", typed_run),
            step("migrating", migrating_run),
        ],
        reps=reps,
        warmup=3,
    )
    vault.close()
    plain, typed, migrating = (samples[k].median for k in ("plain", "typed", "migrating"))
    added = (migrating - plain) / plain
    rows = [
        Row("load 1 MB, plain decode (no schema)", "ms", samples["plain"]),
        Row(
            "load 1 MB, typed at version 5",
            "ms",
            samples["typed"],
            "plain decode",
            samples["plain"],
        ),
        Row(
            "load 1 MB, typed from version 1 (4 steps)",
            "ms",
            samples["migrating"],
            "plain decode",
            samples["plain"],
        ),
        Row(
            "migrate-on-load: added time / plain decode",
            "x",
            added,
            target=f"≤ {TARGET_LOAD_OVERHEAD:g}x",
            result=judge(added, TARGET_LOAD_OVERHEAD),
            note=f"{size:,} B of JSON; chain alone adds {(migrating - typed) / 1e6:.2f} ms",
        ),
    ]
    return rows, {k: s.as_dict() for k, s in samples.items()} | {"json_bytes": size}


def populate(path: str, runs: int) -> None:
    with statevault.open(path, durability="process") as vault:
        register(vault, 1)
        vault.schema("small", EntryV1, version=1)
        for i in range(runs):
            vault.run(f"run-{i:05d}", schema="small").save(
                EntryV1(f"k{i}", "some words " * 8, i / 3, ["a", "b"])
            )


def small_up(state: dict[str, Any]) -> dict[str, Any]:
    state["body"] = state.pop("text")
    return state


def bulk_case(root: str, runs: int, reps: int) -> tuple[list[Row], dict[str, Any]]:
    source = os.path.join(root, "bulk-source.db")
    populate(source, runs)
    rates: list[float] = []
    for rep in range(reps + 1):
        path = os.path.join(root, f"bulk-{rep}.db")
        shutil.copy(source, path)
        with statevault.open(path) as vault:
            vault.schema("small", EntryV1, version=1)
            vault.schema("small", EntryV3, version=2)
            vault.migration("small", 1, 2)(small_up)
            t = time.perf_counter()
            report = vault.migrate("small", to=2)
            elapsed = time.perf_counter() - t
            if len(report.migrated) != runs or not report.ok:
                raise AssertionError(f"bulk migration incomplete: {report.failed[:3]}")
            again = time.perf_counter()
            resumed = vault.migrate("small", to=2)
            resume_elapsed = time.perf_counter() - again
            assert len(resumed.current) == runs
        os.remove(path)
        if rep > 0:  # the first rep warms the page cache and imports
            rates.append(runs / elapsed)
        print(
            f"  rep {rep}: {runs / elapsed:,.0f} runs/s migrated, "
            f"{runs / resume_elapsed:,.0f} runs/s found current",
            flush=True,
        )
    rate = statistics.median(rates)
    row = Row(
        f"bulk migrate {runs:,} small runs · sqlite, fsync",
        "/s",
        rate,
        target=f"≥ {TARGET_BULK_RATE:,.0f}/s",
        result="PASS" if rate >= TARGET_BULK_RATE else "MISS",
        n=len(rates),
        spread=f"{min(rates):,.0f} - {max(rates):,.0f}/s",
    )
    return [row], {"runs": runs, "rates": rates}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.migrations")
    ap.add_argument("--quick", action="store_true", help="2,000 runs instead of 10,000")
    ap.add_argument("--reps", type=int, default=20, help="load reps (bulk: 3)")
    ap.add_argument("--json", metavar="PATH", help="also write every sample to PATH as JSON")
    ap.add_argument("--dir", help="where to write (default: temp dir if on the repo's disk)")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="statevault-migrations-", dir=choose_dir(args.dir))
    info = machine_info(root)
    print(f"writing to {root} on {fs_type(root)}", flush=True)
    try:
        load_rows, load_details = load_case(root, args.reps)
        runs = 2000 if args.quick else 10_000
        print(f"bulk: {runs:,} runs", flush=True)
        bulk_rows, bulk_details = bulk_case(root, runs, reps=3)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = load_rows + bulk_rows
    print("\n### Migrations (medians; ratio = case / floor)\n")
    print(results_table(rows))
    for row in rows:
        if row.note:
            print(f"- {row.case}: {row.note}")
    elapsed = time.perf_counter() - started
    print(f"total time {elapsed:.0f} s")
    if args.json:
        write_json(
            args.json,
            machine=info,
            elapsed=elapsed,
            rows=rows,
            details={"load": load_details, "bulk": bulk_details},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
