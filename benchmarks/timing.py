"""Timing helpers: samples, their statistics, interleaved reps and formatting.

Every measurement is `time.perf_counter_ns` around one call. The cyclic GC stays on
while timing (a real program runs with it), but each step runs a full collection
before its clock starts, so garbage from the previous rep is not charged to the next.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Samples:
    """Durations of one measured operation, in nanoseconds."""

    ns: list[int] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.ns)

    @property
    def median(self) -> float:
        return statistics.median(self.ns)

    @property
    def min(self) -> int:
        return min(self.ns)

    @property
    def max(self) -> int:
        return max(self.ns)

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile (p in 0-100): a value that was actually observed."""
        ordered = sorted(self.ns)
        rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
        return ordered[int(rank) - 1]

    def extend(self, other: Samples) -> None:
        self.ns.extend(other.ns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "median_ns": self.median,
            "min_ns": self.min,
            "max_ns": self.max,
            "p99_ns": self.percentile(99),
            "samples_ns": self.ns,
        }


def alternate(steps: Sequence[Callable[[bool], None]], *, reps: int, warmup: int) -> None:
    """Run every step once per round, for `warmup` + `reps` rounds.

    Each step times itself and keeps its own samples; it is told whether the round
    counts (False during warm-up). Interleaving statevault with its floor puts both
    under the same machine conditions, which on a shared VM drift by tens of percent
    over a minute; the order flips every round so neither always runs first.
    """
    for i in range(warmup + reps):
        for step in steps if i % 2 == 0 else steps[::-1]:
            step(i >= warmup)


def fmt_ns(ns: float, unit: str) -> str:
    """`ns` in `unit` ("ms" or "µs") with three significant digits or so."""
    value = ns / (1e6 if unit == "ms" else 1e3)
    if value >= 100:
        return f"{value:,.0f} {unit}"
    if value >= 10:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def fmt_range(s: Samples, unit: str) -> str:
    return f"{fmt_ns(s.min, unit)} - {fmt_ns(s.max, unit)}"
