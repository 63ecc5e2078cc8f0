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
- `upgrade`: `vault.upgrade()` (and its dry run) of a format-2 SQLite vault of 2,000
  runs of 4 checkpoints each, on a fresh copy per rep: runs/s and MB/s of the file.
  Then what the upgrade leaves on the table: bytes held by a chat of 400 steps
  written in format 2, in format 3, and half in format 2, upgraded, then the rest
  (the difference is what re-encoding old journal entries would save).

    .venv/bin/python -m benchmarks.migrations --only upgrade   # about 20 s
"""

from __future__ import annotations

import argparse
import os
import random
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


# -- vault format upgrade -----------------------------------------------------------------
def old_vault(path: str, version: int) -> statevault.Vault:
    """A new vault at `path` in format `version`, opened for fast population.

    The engine writes the format its vault's metadata names, so a store created with
    old metadata is an old vault, written as the release of that format wrote it.
    """
    from statevault.backends.base import initial_meta  # noqa: PLC0415
    from statevault.backends.sqlite import SqliteBackend  # noqa: PLC0415

    SqliteBackend(path, initial_meta=initial_meta(version, {"vault_id": b"bench"})).close()
    vault = statevault.open(path, durability="process")
    if vault.format_version != version:
        raise AssertionError(f"expected a format-{version} vault")
    return vault


def populate_old(path: str, runs: int) -> int:
    """A format-2 vault of `runs` runs of 4 checkpoints each (a state, two transactions,
    a state); returns the checkpoints written."""
    with old_vault(path, 2) as vault:
        for i in range(runs):
            run = vault.run(f"run-{i:05d}")
            state: dict[str, Any] = {"id": i, "log": [f"{w} {i}" for w in WORDS * 10]}
            run.save(state)
            for step in range(2):
                with run.transaction() as s:
                    s["log"].append(f"step {step}")
            state["log"] += ["step 0", "step 1"]
            state["done"] = True
            run.save(state)
    return runs * 4


def upgrade_case(root: str, runs: int, reps: int) -> tuple[list[Row], dict[str, Any]]:
    source = os.path.join(root, "upgrade-source.db")
    checkpoints = populate_old(source, runs)
    size = os.path.getsize(source)
    dry, done = Samples(), Samples()
    for rep in range(reps + 1):
        path = os.path.join(root, f"upgrade-{rep}.db")
        shutil.copy(source, path)
        with statevault.open(path, create=False) as vault:
            t = time.perf_counter_ns()
            planned = vault.upgrade(dry_run=True)
            planned_ns = time.perf_counter_ns() - t
            t = time.perf_counter_ns()
            report = vault.upgrade()
            elapsed_ns = time.perf_counter_ns() - t
            if (planned.checkpoints, report.checkpoints, report.source) != (
                checkpoints,
                checkpoints,
                2,
            ):
                raise AssertionError(f"unexpected upgrade report {report}")
            if not vault.upgrade().current:
                raise AssertionError("the vault was not upgraded")
            if vault.run("run-00007").load()["log"][-1] != "step 1":
                raise AssertionError("a run does not load as written")
        os.remove(path)
        if rep > 0:  # the first rep warms the page cache
            dry.ns.append(planned_ns)
            done.ns.append(elapsed_ns)
        print(
            f"  rep {rep}: dry run {planned_ns / 1e6:.1f} ms, upgrade {elapsed_ns / 1e6:.1f} ms "
            f"({runs / (elapsed_ns / 1e9):,.0f} runs/s, {size / elapsed_ns * 1e3:,.0f} MB/s)",
            flush=True,
        )
    seconds = done.median / 1e9
    rows = [
        Row(f"upgrade format 2 -> 3, dry run, {runs:,} runs · sqlite", "ms", dry),
        Row(f"upgrade format 2 -> 3, {runs:,} runs · sqlite, fsync", "ms", done),
        Row(
            "upgrade throughput, runs",
            "/s",
            runs / seconds,
            n=done.n,
            note=(
                f"{checkpoints:,} checkpoints, {size / 1e6:.1f} MB file: "
                f"{size / seconds / 1e6:,.0f} MB/s. No record is rewritten (history "
                f"keeps its hashes: see engine/upgrade.py), so the time is one read of "
                f"each run's head and one meta write"
            ),
        ),
    ]
    details = {"runs": runs, "checkpoints": checkpoints, "bytes": size}
    return rows, details | {"dry_run": dry.as_dict(), "upgrade": done.as_dict()}


CHAT_STEPS = 400


def chat_message(i: int) -> dict[str, Any]:
    """~9 KB of words that compress to ~2 KB (as the golden vaults' chat run)."""
    rnd = random.Random(i)
    return {"i": i, "text": " ".join(rnd.choice(WORDS) for _ in range(1800))}


def chat(run: statevault.Run, steps: range) -> None:
    for i in steps:
        with run.transaction() as s:
            s["messages"].append(chat_message(i))
            s["step"] = i


def chat_run(vault: statevault.Vault) -> statevault.Run:
    run = vault.run("chat", policy=statevault.CheckpointPolicy(records=100))
    run.save({"messages": [], "step": 0})
    return run


def held(vault: statevault.Vault) -> tuple[int, int]:
    """(bytes of journal entries, bytes held in all: records and objects)."""
    engine = vault._engine
    backend = engine.backend
    deltas = records = 0
    for run_id in backend.list_runs():
        for stored in backend.read_checkpoints(run_id):
            records += len(stored.record)
            found = engine.record(run_id, stored.seq)
            if found is not None and found[0].kind == "delta":
                deltas += len(stored.record)
    objects = backend.get_objects(list(backend.scan_objects()))
    return deltas, records + sum(len(data) for data in objects.values())


def upgrade_space_case(root: str) -> tuple[list[Row], dict[str, Any]]:
    """What re-encoding old entries would have saved: the same chat written in format 2,
    in format 3, and half in format 2, then upgraded, then the other half."""
    half = CHAT_STEPS // 2
    sizes: dict[str, tuple[int, int]] = {}
    for name, version in (("format 2", 2), ("format 3", 3)):
        with old_vault(os.path.join(root, f"chat-{version}.db"), version) as vault:
            chat(chat_run(vault), range(1, CHAT_STEPS + 1))
            sizes[name] = held(vault)
    with old_vault(os.path.join(root, "chat-upgraded.db"), 2) as vault:
        # One handle throughout, as a long-running worker's: its writes change format
        # at the upgrade and nothing else changes.
        run = chat_run(vault)
        chat(run, range(1, half + 1))
        vault.upgrade()
        chat(run, range(half + 1, CHAT_STEPS + 1))
        sizes["upgraded"] = held(vault)
    old, new, upgraded = sizes["format 2"], sizes["format 3"], sizes["upgraded"]
    rows = [
        Row(
            f"chat {CHAT_STEPS} steps, format 2 · bytes held",
            "B",
            old[1],
            note=f"of which journal entries {old[0]:,} B",
        ),
        Row(
            f"chat {CHAT_STEPS} steps, format 3 · bytes held",
            "B",
            new[1],
            "format 2",
            old[1],
            note=f"journal entries {new[0]:,} B: relocated against the fold after them",
        ),
        Row(
            f"chat, {half} steps in format 2, upgraded, {half} more",
            "B",
            upgraded[1],
            "format 3",
            new[1],
            note=(
                f"journal entries {upgraded[0]:,} B; re-encoding the old ones would save "
                f"{upgraded[1] - new[1]:,} B, at the price of every record hash above them"
            ),
        ),
    ]
    return rows, {"held": sizes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.migrations")
    ap.add_argument("--quick", action="store_true", help="2,000 runs instead of 10,000")
    ap.add_argument("--reps", type=int, default=20, help="load reps (bulk: 3)")
    ap.add_argument("--json", metavar="PATH", help="also write every sample to PATH as JSON")
    ap.add_argument("--dir", help="where to write (default: temp dir if on the repo's disk)")
    ap.add_argument("--only", choices=("load", "bulk", "upgrade"), help="one case only")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    root = tempfile.mkdtemp(prefix="statevault-migrations-", dir=choose_dir(args.dir))
    info = machine_info(root)
    print(f"writing to {root} on {fs_type(root)}", flush=True)
    rows: list[Row] = []
    details: dict[str, Any] = {}
    try:
        if args.only in (None, "load"):
            load_rows, details["load"] = load_case(root, args.reps)
            rows += load_rows
        if args.only in (None, "bulk"):
            runs = 2000 if args.quick else 10_000
            print(f"bulk: {runs:,} runs", flush=True)
            bulk_rows, details["bulk"] = bulk_case(root, runs, reps=3)
            rows += bulk_rows
        if args.only in (None, "upgrade"):
            print("upgrade: 2,000 runs", flush=True)
            upgrade_rows, details["upgrade"] = upgrade_case(root, 2000, reps=5)
            space_rows, details["upgrade_space"] = upgrade_space_case(root)
            rows += upgrade_rows + space_rows
    finally:
        shutil.rmtree(root, ignore_errors=True)
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
            details=details,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
