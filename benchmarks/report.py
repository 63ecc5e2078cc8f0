"""The printed report: result rows against targets, phase tables, machine facts."""

from __future__ import annotations

import compileall
import importlib.metadata
import json
import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zstandard

import statevault
from benchmarks.floors import Phased
from benchmarks.timing import Samples, fmt_ns, fmt_range

_PLAIN_UNITS: dict[str, Callable[[float], str]] = {
    "%": lambda v: f"{v:.1%}",
    "B": lambda v: f"{v:,.0f} B",
    "MB": lambda v: f"{v / 1e6:,.1f} MB",
    "x": lambda v: f"{v:.2f}x",
    "/s": lambda v: f"{v:,.0f}/s",
}
"""Units of values that are not durations (durations are "ms" or "µs", in ns)."""


@dataclass(slots=True)
class Row:
    """One line of the results table.

    `value` and `floor` are samples (shown as their median, or p99 or max when `stat`
    says so) or a plain number in `unit` (a fraction, bytes, a rate). The ratio is
    value / floor.
    """

    case: str
    unit: str  # "ms" or "µs" (durations in ns), or one of _PLAIN_UNITS
    value: Samples | float
    floor_name: str = ""
    floor: Samples | float | None = None
    target: str = ""
    result: str = "ctx"  # PASS, MISS or ctx (context, no target)
    note: str = ""
    stat: str = "median"  # or "p99" or "max"
    n: int = 1
    """How many values a plain-number `value` summarizes (Samples count their own)."""
    spread: str = "—"
    """The min - max column for a plain-number `value`."""

    def _stat(self, v: Samples | float) -> float:
        if not isinstance(v, Samples):
            return v
        if self.stat == "p99":
            return v.percentile(99)
        return v.max if self.stat == "max" else v.median

    def _show(self, v: float) -> str:
        shown = _PLAIN_UNITS.get(self.unit)
        return shown(v) if shown else fmt_ns(v, self.unit)

    def cells(self) -> list[str]:
        value = self._stat(self.value)
        n, spread = str(self.n), self.spread
        if isinstance(self.value, Samples):
            n = str(self.value.n)
            if self.stat == "median" and self.value.n > 1:
                spread = fmt_range(self.value, self.unit)
        floor_text = ratio = "—"
        if self.floor is not None:
            floor = self._stat(self.floor)
            floor_text, ratio = self._show(floor), f"{value / floor:.2f}x"
        return [
            self.case,
            n,
            self._show(value),
            spread,
            self.floor_name or "—",
            floor_text,
            ratio,
            self.target or "—",
            self.result,
        ]

    def as_dict(self) -> dict[str, Any]:
        def dump(v: Samples | float | None) -> Any:
            return v.as_dict() if isinstance(v, Samples) else v

        return {
            "case": self.case,
            "unit": self.unit,
            "stat": self.stat,
            "value": dump(self.value),
            "floor_name": self.floor_name,
            "floor": dump(self.floor),
            "target": self.target,
            "result": self.result,
            "note": self.note,
        }


@dataclass(slots=True)
class Report:
    rows: list[Row] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        """Keep the row and print it at once, so a long run shows progress."""
        self.rows.append(row)
        print(f"  {row.case}: {' | '.join(row.cells()[1:])}", flush=True)


def judge(value: float, limit: float) -> str:
    return "PASS" if value <= limit else "MISS"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def results_table(rows: list[Row]) -> str:
    header = ["case", "n", "value", "min - max", "floor", "floor value", "ratio", "target"]
    return markdown([*header, "result"], [r.cells() for r in rows])


def phase_table(title: str, phased: Phased, order: tuple[str, ...]) -> str:
    """Median of each phase and its share of the median total (shares need not add
    up to exactly 100%: a median of sums is not a sum of medians).

    Phases named "pool: ..." ran on other threads, overlapping the rest: they have no
    share and are not part of the total.
    """
    total = phased.total.median
    body = [
        [
            name,
            fmt_ns(phased.phases[name].median, "ms"),
            "overlaps"
            if name.startswith("pool: ")
            else f"{phased.phases[name].median / total:.0%}",
        ]
        for name in order
        if name in phased.phases
    ]
    body.append(["**total** (median of per-rep totals)", fmt_ns(total, "ms"), ""])
    return f"#### {title} (n={phased.total.n})\n\n" + markdown(["phase", "median", "share"], body)


def phase_dump(phased: Phased | None) -> dict[str, Any] | None:
    if phased is None:
        return None
    return {k: v.as_dict() for k, v in phased.phases.items()}


# -- the machine -----------------------------------------------------------------------
def fs_type(path: str) -> str:
    """The filesystem holding `path`, from /proc/mounts (Linux), else "unknown"."""
    real, best, kind = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                device, mount, fstype = line.split()[:3]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, f"{fstype} ({device} on {mount})"
    except OSError:
        pass
    return kind


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _checkout() -> str:
    """The git commit of the statevault being measured, and whether its src/ is edited."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(statevault.__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", src, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", src, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}{' with uncommitted changes in src/' if dirty else ''}"


def compile_bytecode() -> str:
    """Compile statevault's modules to bytecode, as `pip install` does, and say so.

    Where `PYTHONDONTWRITEBYTECODE` is set (this machine sets it) and statevault runs
    from its source tree, a module imported lazily is compiled again in every process:
    the chat benchmark's first transaction took ~6-9 ms for that alone (importing
    `engine/tracking.py`), 1.4-1.7 ms with its bytecode cached, as in an installed copy.
    """
    package = os.path.dirname(statevault.__file__)
    compileall.compile_dir(package, quiet=1)
    return f"compiled under {package} (as an install does)"


def machine_info(bench_dir: str) -> dict[str, str]:
    versions = {}
    for dist in ("statevault", "msgspec", "msgpack", "zstandard", "lz4", "blake3"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpu": f"{os.cpu_count()} x {_cpu_model()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "libzstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "libraries": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "statevault from": os.path.dirname(statevault.__file__),
        "statevault commit": _checkout(),
        "bench dir": f"{bench_dir} on {fs_type(bench_dir)}",
    }


def write_json(
    path: str, *, machine: Any, elapsed: float, rows: Sequence[Any], details: Any
) -> None:
    """Write a run's rows and details to `path` (the `--json` option of every benchmark)."""
    with open(path, "w") as f:
        json.dump(
            {
                "machine": machine,
                "argv": sys.argv[1:],
                "elapsed_s": elapsed,
                "rows": [r.as_dict() for r in rows],
                "details": details,
            },
            f,
            indent=1,
        )
    print(f"wrote {path}")
