"""Memory-mapped arrays: loading a large NumPy array without copying it, from a fresh process.

Run: `.venv/bin/python -m benchmarks.mmap_read` (a 1 GB float64 array; needs ~3 GB of
memory and ~2 GB of disk while it runs) or `--mb 100` for a smaller one. A child
process saves `{"weights": array, "step": 1}` to a files vault opened with
`mmap_arrays=True` (one raw, uncompressed object). Then each measurement is a new
interpreter that imports NumPy and statevault, opens the vault and loads the state,
alternately with `run.load(mmap=True)` and with a plain `run.load()` (a copy),
reporting the wall time of open + load, how much its resident memory grew over the
import after the load, and at its peak (VmHWM). The mapped load checks the whole
object (CRC-32 and BLAKE3) before it returns, 16 MiB at a time, letting each window's
pages go after it is checked.
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
import json, sys, time
import numpy as np
import statevault
def status(key):
    with open("/proc/self/status") as f:
        return int(f.read().split(key + ":")[1].split()[0]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
before = status("VmRSS")
t = time.perf_counter()
vault = statevault.open(sys.argv[1])
state = vault.run("model").load(mmap=sys.argv[2] == "mmap")
elapsed = time.perf_counter() - t
after, peak = status("VmRSS"), status("VmHWM")
weights = state["weights"]
base = weights
while isinstance(base, np.ndarray):
    base = base.base
mapped = isinstance(base, memoryview) and type(base.obj).__name__ == "mmap"
print(json.dumps({"ms": elapsed * 1e3, "growth": after - before, "peak": peak - before,
                  "nbytes": weights.nbytes, "writeable": bool(weights.flags.writeable),
                  "mapped": mapped, "checksum": float(weights[::65536].sum())}))
"""

_WRITER = r"""
import sys
import numpy as np
import statevault
n = int(sys.argv[2]) // 8
weights = np.random.default_rng(7).random(n)
with statevault.open(sys.argv[1], mmap_arrays=True) as vault:
    checkpoint = vault.run("model").save({"weights": weights, "step": 1})
print(weights.nbytes, checkpoint.stored_bytes, float(weights[::65536].sum()))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1000, help="array size in MB (10^6 B)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    directory = tempfile.mkdtemp(prefix="statevault-mmap-", dir=os.path.dirname(repo))
    url = f"files://{os.path.join(directory, 'vault')}"
    env = {**os.environ, "PYTHONPATH": os.path.join(repo, "src")}
    try:
        out = subprocess.run(
            [sys.executable, "-c", _WRITER, url, str(args.mb * 10**6)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        ).stdout.split()
        nbytes, stored, checksum = int(out[0]), int(out[1]), float(out[2])
        runs: dict[str, list[dict[str, float]]] = {"mmap": [], "copy": []}
        for i in range(args.reps):
            for how in ("mmap", "copy") if i % 2 == 0 else ("copy", "mmap"):
                result = subprocess.run(
                    [sys.executable, "-c", _READER, url, how],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                run = json.loads(result.stdout)
                if run["checksum"] != checksum:
                    raise AssertionError(f"{how}: the loaded array differs from the saved one")
                runs[how].append(run)
        print(f"array: {nbytes / 1e6:,.0f} MB of float64, stored {stored / 1e6:,.0f} MB (files)")
        print("| load, fresh process | n | open + load | RSS growth | peak growth | zero-copy |")
        print("|---|---|---|---|---|---|")
        for how, label in (("mmap", "load(mmap=True)"), ("copy", "load()")):
            rs = runs[how]
            ms = statistics.median(r["ms"] for r in rs)
            growth = statistics.median(r["growth"] for r in rs) / 1e6
            peak = statistics.median(r["peak"] for r in rs) / 1e6
            mapped = all(r["mapped"] and not r["writeable"] for r in rs)
            print(
                f"| {label} | {len(rs)} | {ms:,.0f} ms | {growth:,.1f} MB | {peak:,.1f} MB "
                f"| {'yes (read-only)' if mapped else 'no'} |"
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
