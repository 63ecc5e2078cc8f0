"""Lazy read: one small field of a large stored state, from a fresh process.

Run: `.venv/bin/python -m benchmarks.lazy_read` (a ~100 MB state) or with `--big`
(~1 GB; needs ~4 GB of memory and a few minutes to build). The vault is written once
by a child process; then each measurement is a new interpreter that imports
statevault, opens the vault and reads one field with `run.get(path)`, reporting the
wall time of open + get and how much its resident memory grew over the import.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

_READER = r"""
import json, resource, sys, time
import statevault
def rss():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024
before = rss()
t = time.perf_counter()
vault = statevault.open(sys.argv[1])
value = vault.run("big").get(sys.argv[2])
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"ms": elapsed * 1e3, "growth": rss() - before, "peak_growth": peak - before,
                  "value": repr(value)[:60]}))
"""

_WRITER = r"""
import sys
sys.path.insert(0, sys.argv[3])
from benchmarks.workloads import typical_state, json_size
import statevault
state = typical_state(int(sys.argv[2]), seed=1)
with statevault.open(sys.argv[1]) as vault:
    checkpoint = vault.run("big").save(state)
print(len(state["steps"]), json_size(state), checkpoint.stored_bytes)
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="a ~1 GB state instead of ~100 MB")
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    size = 1_000_000_000 if args.big else 100_000_000
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    directory = tempfile.mkdtemp(prefix="statevault-lazy-", dir=os.path.dirname(repo))
    path = os.path.join(directory, "big.db")
    try:
        out = subprocess.run(
            [sys.executable, "-c", _WRITER, path, str(size), repo],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        steps, json_bytes, stored = int(out[0]), int(out[1]), int(out[2])
        field = f"steps.{steps * 2 // 3}.status"
        runs = []
        for _ in range(args.reps):
            result = subprocess.run(
                [sys.executable, "-c", _READER, path, field],
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(result.stdout))
        ms = statistics.median(r["ms"] for r in runs)
        growth = statistics.median(r["growth"] for r in runs) / 2**20
        peak = statistics.median(r["peak_growth"] for r in runs) / 2**20
        print(
            f"state: {json_bytes / 1e6:.0f} MB of JSON, {steps} steps, stored {stored / 1e6:.1f} MB"
        )
        print(f"read {field!r} = {runs[0]['value']}")
        print("| case | n | median | target | result |")
        print("|---|---|---|---|---|")
        verdict = "PASS" if ms <= 20 else "MISS"
        print(f"| open + get, fresh process | {len(runs)} | {ms:.2f} ms | ≤ 20 ms | {verdict} |")
        verdict = "PASS" if peak <= 20 else "MISS"
        print(
            f"| RSS growth over import (peak) | {len(runs)} | {growth:.1f} MB ({peak:.1f} MB) "
            f"| ≤ 20 MB | {verdict} |"
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
