"""Run the statevault benchmarks and print one table of results against the targets.

Usage, from the repository root:

    .venv/bin/python -m benchmarks               # everything, about 50-60 s
    .venv/bin/python -m benchmarks --quick       # without the ~100 MB state, about 8 s
    .venv/bin/python -m benchmarks --json out.json --profile

Every number printed comes from this one run: statevault and the plain-library floor
it is compared with are measured alternately, on the same disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

import statevault
from benchmarks import cases, floors, phases
from benchmarks.cases import RUN_ID, Scratch, vault_url
from benchmarks.report import (
    Report,
    Row,
    fs_type,
    judge,
    machine_info,
    phase_dump,
    phase_table,
    results_table,
    write_json,
)
from benchmarks.timing import alternate
from benchmarks.workloads import json_size, small_state, typical_state

MB = 10**6

# Targets from the performance issue; sizes are of the state's JSON encoding.
TARGET_SAVE_1MB_MS = 10
TARGET_LOAD_1MB_MS = 5
TARGET_STORED_FRACTION = 0.40
TARGET_SAVE_100MB_MS = 500
TARGET_LOAD_100MB_MS = 400
TARGET_SMALL_RATIO = 3.0


@dataclass(frozen=True, slots=True)
class Size:
    """One large-state size: its reps and targets."""

    label: str
    json_bytes: int
    seed: int
    reps: int
    warmup: int
    phase_reps: int
    save_target_ms: float
    load_target_ms: float
    judge_stored: bool


SIZE_1MB = Size("1 MB", 1 * MB, 1, 50, 3, 10, TARGET_SAVE_1MB_MS, TARGET_LOAD_1MB_MS, True)
SIZE_100MB = Size("100 MB", 100 * MB, 2, 5, 1, 3, TARGET_SAVE_100MB_MS, TARGET_LOAD_100MB_MS, False)

SMALL_BLOCKS = 10
SMALL_PER_BLOCK = 50
SMALL_WARMUP = 20


def _try_phases(fn: Callable[[], floors.Phased]) -> floors.Phased | None:
    try:
        return fn()
    except (AttributeError, ImportError, TypeError, KeyError) as exc:
        print(f"  (phase breakdown unavailable: {type(exc).__name__}: {exc})", flush=True)
        return None


def large_state(size: Size, state: Any, scratch: Scratch, report: Report) -> None:
    """Save and load of one large state on SQLite, against the floor; sizes; phases."""
    jsize = json_size(state)
    level = floors.level_for(len(msgspec.msgpack.encode(state)))  # statevault's, so the floor's
    other = floors.ZSTD_LEVEL if level == floors.ZSTD_LEVEL_LARGE else floors.ZSTD_LEVEL_LARGE
    print(f"\n{size.label} state: {jsize:,} B of JSON, {len(state['steps'])} steps", flush=True)
    with scratch.case(f"large-{size.label.replace(' ', '')}") as root:
        sv_step, saved = cases.statevault_save(state, scratch, root, "sqlite")
        floor_step, floor = cases.floor_save(state, root)
        what_if_step, what_if = cases.floor_save(state, root, level=other)
        alternate([sv_step, floor_step, what_if_step], reps=size.reps, warmup=size.warmup)
        floor_saved = floor.phased

        floor_file = os.path.join(root, "floor-load.zst")
        _, floor_stored = floors.save_once(state, floor_file)
        with statevault.open(vault_url("sqlite", scratch.new(root))) as vault:
            writer = vault.run(RUN_ID)
            writer.save({"older": True})  # the measured checkpoint is the newest, not the only
            writer.save(state)
            if vault.run(RUN_ID).load() != state:
                raise AssertionError(f"the {size.label} state does not load back equal")
            sv_load_step, loaded = cases.statevault_load(vault.run(RUN_ID))
            floor_load_step, floor_loaded = cases.floor_load(floor_file)
            alternate([sv_load_step, floor_load_step], reps=size.reps, warmup=size.warmup)
            load_phases = _try_phases(lambda: phases.load_phases(vault, reps=size.phase_reps))

        def new_vault() -> tuple[statevault.Vault, str]:
            directory = scratch.new(root)
            return statevault.open(vault_url("sqlite", directory)), directory

        save_phases = _try_phases(
            lambda: phases.save_phases(state, new_vault, reps=size.phase_reps)
        )

    report.add(
        Row(
            f"save {size.label} · sqlite, fsync",
            "ms",
            saved.samples,
            "encode+compress+hash+write+fsync",
            floor_saved.total,
            f"≤ {size.save_target_ms} ms",
            judge(saved.samples.median / 1e6, size.save_target_ms),
        )
    )
    report.add(
        Row(
            f"load {size.label} · sqlite (warm cache)",
            "ms",
            loaded,
            "read+decompress+decode",
            floor_loaded.total,
            f"≤ {size.load_target_ms} ms",
            judge(loaded.median / 1e6, size.load_target_ms),
        )
    )
    fraction = saved.stored_bytes / jsize
    report.add(
        Row(
            f"stored {size.label} / JSON size · sqlite",
            "%",
            fraction,
            f"msgspec + zstd-{level} bytes / JSON",
            floor_stored / jsize,
            f"≤ {TARGET_STORED_FRACTION:.0%}",
            judge(fraction, TARGET_STORED_FRACTION) if size.judge_stored else "ctx",
            note=f"{saved.stored_bytes:,} B stored, {floor_stored:,} B floor, {jsize:,} B JSON",
        )
    )
    report.add(
        Row(
            f"what-if: floor save {size.label} with zstd-{other}",
            "ms",
            what_if.phased.total,
            f"the zstd-{level} floor",
            floor_saved.total,
            note=f"stores {what_if.stored_bytes / jsize:.1%} of the JSON size",
        )
    )
    for title, phased, order in (
        (f"Floor save, {size.label}", floor_saved, floors.SAVE_PHASES),
        (f"statevault Run.save, {size.label}, SQLite fsync", save_phases, phases.SAVE_PHASES),
        (f"Floor load, {size.label}", floor_loaded, floors.LOAD_PHASES),
        (f"statevault Run.load, {size.label}, SQLite", load_phases, phases.LOAD_PHASES),
    ):
        if phased is not None:
            report.tables.append(phase_table(title, phased, order))
    report.details[size.label] = {
        "json_bytes": jsize,
        "stored_bytes": saved.stored_bytes,
        "floor_stored_bytes": floor_stored,
        "floor_save_phases": phase_dump(floor_saved),
        "floor_zstd_level": level,
        "what_if_zstd_level": other,
        "what_if_save_phases": phase_dump(what_if.phased),
        "what_if_stored_bytes": what_if.stored_bytes,
        "floor_load_phases": phase_dump(floor_loaded),
        "save_phases": phase_dump(save_phases),
        "load_phases": phase_dump(load_phases),
    }


def files_backend(state: Any, scratch: Scratch, report: Report) -> None:
    """The files backend on the 1 MB state, for context."""
    size = SIZE_1MB
    with scratch.case("files-1MB") as root:
        save_step, saved = cases.statevault_save(state, scratch, root, "files")
        alternate([save_step], reps=size.reps, warmup=size.warmup)
        with statevault.open(vault_url("files", scratch.new(root))) as vault:
            writer = vault.run(RUN_ID)
            writer.save({"older": True})
            writer.save(state)
            load_step, loaded = cases.statevault_load(vault.run(RUN_ID))
            alternate([load_step], reps=size.reps, warmup=size.warmup)
    report.add(Row("save 1 MB · files, fsync", "ms", saved.samples))
    report.add(Row("load 1 MB · files (warm cache)", "ms", loaded))
    report.add(Row("stored 1 MB / JSON size · files", "%", saved.stored_bytes / json_size(state)))


def small(scratch: Scratch, report: Report, *, files: bool) -> None:
    """Latency of small saves against a raw 4 KiB append+fsync in the same directory."""
    n = SMALL_BLOCKS * SMALL_PER_BLOCK
    states = [small_state(i) for i in range(SMALL_WARMUP + n)]
    print(f"\nsmall saves: {n} per case, ~{json_size(states[0])} B of JSON each", flush=True)
    configs = [("sqlite, fsync", "sqlite", "fsync")]
    if files:
        configs.append(("files, fsync", "files", "fsync"))
    configs.append(("sqlite, durability=process", "sqlite", "process"))
    if files:
        configs.append(("files, durability=process", "files", "process"))
    with scratch.case("small") as root:
        vaults = {
            name: statevault.open(vault_url(backend, scratch.new(root)), durability=durability)
            for name, backend, durability in configs
        }
        fd = os.open(os.path.join(root, "raw.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            runs = {name: vault.run(RUN_ID) for name, vault in vaults.items()}
            for run in runs.values():
                for s in states[:SMALL_WARMUP]:
                    run.save(s)
            floors.small_write_fsync(fd, os.urandom(4096), SMALL_WARMUP)
            samples, raw = cases.small_saves(
                runs, states[SMALL_WARMUP:], fd, blocks=SMALL_BLOCKS, per_block=SMALL_PER_BLOCK
            )
        finally:
            os.close(fd)
            for vault in vaults.values():
                vault.close()
    for name, s in samples.items():
        judged = name == "sqlite, fsync"
        report.add(
            Row(
                f"small save · {name}, median",
                "µs",
                s,
                "4 KiB append+fsync",
                raw,
                f"≤ {TARGET_SMALL_RATIO:g}x floor" if judged else "",
                judge(s.median / raw.median, TARGET_SMALL_RATIO) if judged else "ctx",
            )
        )
        report.add(
            Row(f"small save · {name}, p99", "µs", s, "4 KiB append+fsync p99", raw, stat="p99")
        )
    report.details["small"] = {"raw_4k_append_fsync": raw.as_dict()}
    report.details["small"].update({name: s.as_dict() for name, s in samples.items()})


# -- main ------------------------------------------------------------------------------
def choose_dir(requested: str | None) -> str:
    """Where vaults are written: the system temp dir if it is on the repo's disk.

    A tmpfs /tmp would make every fsync free, so then the repo's parent is used.
    """
    if requested:
        return os.path.abspath(requested)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.gettempdir()
    same_disk = os.stat(tmp).st_dev == os.stat(repo).st_dev
    if same_disk and not fs_type(tmp).startswith("tmpfs"):
        return tmp
    return os.path.dirname(repo)


def files_backend_available() -> bool:
    try:
        import statevault.backends.files  # noqa: F401, PLC0415 - a probe, nothing more
    except ImportError:
        return False
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="statevault save/load benchmarks against plain-library floors and targets",
    )
    ap.add_argument("--quick", action="store_true", help="skip the ~100 MB state")
    ap.add_argument("--json", metavar="PATH", help="also write every sample to PATH as JSON")
    ap.add_argument("--dir", help="where to write (default: temp dir if on the repo's disk)")
    ap.add_argument("--profile", action="store_true", help="add cProfile of a save and a load")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    scratch = Scratch(tempfile.mkdtemp(prefix="statevault-bench-", dir=choose_dir(args.dir)))
    info = machine_info(scratch.root)
    print("## statevault benchmarks\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print("- perf_counter_ns; GC on, collected before each rep; reps of statevault and")
    print("  its floor alternate; loads read a warm page cache; MB = 10^6 B", flush=True)
    has_files = files_backend_available()
    if not has_files:
        print("\n(statevault.backends.files is missing: the files-backend rows are skipped)")
    report = Report()
    profile_text = ""
    try:
        sizes = [SIZE_1MB] if args.quick else [SIZE_1MB, SIZE_100MB]
        for size in sizes:
            t0 = time.perf_counter()
            state = typical_state(size.json_bytes, seed=size.seed)
            print(f"\ngenerated the {size.label} state in {time.perf_counter() - t0:.1f} s")
            large_state(size, state, scratch, report)
            if size is SIZE_1MB:
                if has_files:
                    files_backend(state, scratch, report)
                small(scratch, report, files=has_files)
            if args.profile and size is sizes[-1]:
                with scratch.case("profile") as d:
                    profile_text = phases.profile(state, d)
            del state
    finally:
        shutil.rmtree(scratch.root, ignore_errors=True)

    print("\n### Results (medians unless the case says p99; ratio = statevault / floor)\n")
    print(results_table(report.rows))
    print("\nfloor: the same work done with plain libraries in this run (benchmarks/floors.py).")
    print("ctx: context, no target. Stored sizes are the checkpoint's stored_bytes.")
    for row in report.rows:
        if row.note:
            print(f"- {row.case}: {row.note}")
    print()
    for table in report.tables:
        print(table + "\n")
    if profile_text:
        print(profile_text)
    elapsed = time.perf_counter() - started
    print(f"total time {elapsed:.0f} s", flush=True)
    if args.json:
        write_json(
            args.json, machine=info, elapsed=elapsed, rows=report.rows, details=report.details
        )
    return 0
