"""A small durable commit on the files backend: layout 2 (segments) against layout 1 and
against the disk's own floor, in one run.

Usage, from the repository root:

    .venv/bin/python -m benchmarks.commit_latency               # about 20 s
    .venv/bin/python -m benchmarks.commit_latency --reps 2000 --record 256

Cases, each committing records of `--record` bytes (a journal entry's typical size)
to one run, `durability="fsync"`, through the backend (what the layout changes):
- `floor: overwrite+fdatasync`: `pwrite` of the same bytes into a pre-written file and
  `fdatasync`, the cheapest durable write this machine has (see
  ../shared/research/limits.md);
- `floor: append+fsync`: the same bytes appended to a growing file and fsynced;
- `files layout 1`: one file per record (temp file, fsync, link, directory fsync);
- `files layout 2`: one frame per record in a pre-filled segment (pwrite, fdatasync).

Cases take turns commit by commit, in an order that flips each round, so they share
the machine's drift. Medians and p99 are printed, with each case's ratio to the floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

# Measure the statevault of this checkout, whatever the environment has installed.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if os.path.isdir(os.path.join(_SRC, "statevault")):
    sys.path.insert(0, _SRC)

from benchmarks.run import choose_dir  # noqa: E402
from benchmarks.timing import Samples, alternate, fmt_ns  # noqa: E402
from statevault.backends.files import FilesBackend  # noqa: E402


def _floor(path: str, size: int, record: bytes, *, overwrite: bool) -> Callable[[bool], None]:
    samples = _SAMPLES.setdefault(
        "floor: overwrite+fdatasync" if overwrite else "floor: append+fsync", Samples()
    )
    flags = os.O_RDWR | os.O_CREAT | (0 if overwrite else os.O_APPEND)
    fd = os.open(path, flags, 0o644)
    if overwrite:
        os.write(fd, b"\xa5" * size)
        os.fsync(fd)
    offset = [0]

    def step(counted: bool) -> None:
        start = time.perf_counter_ns()
        if overwrite:
            os.pwrite(fd, record, offset[0] % (size - len(record)))
            os.fdatasync(fd)
        else:
            os.write(fd, record)
            os.fsync(fd)
        elapsed = time.perf_counter_ns() - start
        offset[0] += len(record) + 32
        if counted:
            samples.ns.append(elapsed)

    return step


def _files(root: str, layout: int, record: bytes) -> Callable[[bool], None]:
    name = f"files layout {layout}"
    samples = _SAMPLES.setdefault(name, Samples())
    backend = FilesBackend(root, initial_meta={"format": b"3"}, layout=layout)
    head = [0]

    def step(counted: bool) -> None:
        start = time.perf_counter_ns()
        backend.commit_checkpoint("run", head[0] + 1, record, expected_head=head[0])
        elapsed = time.perf_counter_ns() - start
        head[0] += 1
        if counted:
            samples.ns.append(elapsed)

    return step


_SAMPLES: dict[str, Samples] = {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--record", type=int, default=256, help="record size in bytes")
    parser.add_argument("--dir", default=None, help="where to write (default: a real disk)")
    args = parser.parse_args(argv)
    record = os.urandom(args.record)
    work = tempfile.mkdtemp(prefix="statevault-commit-", dir=choose_dir(args.dir))
    try:
        steps = [
            _floor(os.path.join(work, "floor-overwrite"), 4 << 20, record, overwrite=True),
            _floor(os.path.join(work, "floor-append"), 0, record, overwrite=False),
            _files(os.path.join(work, "layout1"), 1, record),
            _files(os.path.join(work, "layout2"), 2, record),
        ]
        alternate(steps, reps=args.reps, warmup=max(20, args.reps // 20))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floor = _SAMPLES["floor: overwrite+fdatasync"].median
    print(f"small durable commit, {args.record}-byte records, {args.reps} commits per case")
    print(f"{'case':30} {'median':>10} {'p99':>10} {'vs floor':>9}")
    for name, samples in _SAMPLES.items():
        print(
            f"{name:30} {fmt_ns(samples.median, 'µs'):>10} "
            f"{fmt_ns(samples.percentile(99), 'µs'):>10} {samples.median / floor:>8.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
