"""kill -9 of real writer processes, at random moments and at named crash points.

Each cycle forks a worker that runs a seeded workload (saves, transactions, applies,
folds, run deletions) and acknowledges each op only after its call returned; the
worker is SIGKILLed; the vault is reopened with no manual step and must equal the
model after a prefix of the ops between the last acknowledged and the last issued
(see `kill_harness`). Some cycles also kill the process that recovers the vault, and
check that the result equals an uninterrupted recovery of a copy of the same crash.

The default run is short; `-m slow` runs 15 times as many cycles.
"""

from __future__ import annotations

import random
import shutil
import statistics
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kill_harness import (
    BACKENDS,
    ForkServer,
    KillBackend,
    Outcome,
    Workload,
    check_recovered,
    seeds,
    workload_points,
)

from postgres_support import require_postgres

OPS_PER_CYCLE = 30
CYCLES_PER_VAULT = 6
"""A vault lives this many crashes (its history growing) before a fresh one starts."""
RANDOM_CYCLES = 40
SLOW_FACTOR = 15
RARE_HUGE = 4 * OPS_PER_CYCLE
"""Random kills see a huge save in one cycle of four: it takes most of a cycle's time,
so more would put most kills inside it. The crash-point cycles have one each (one
point fires only inside a huge save)."""


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    fork_server = ForkServer()
    yield fork_server
    fork_server.close()


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.postgres) if name == "postgres" else name
        for name in sorted(BACKENDS)
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KillBackend]:
    chosen = BACKENDS[request.param]
    if chosen.discard is not None:
        require_postgres()  # skips with the reason, or fails under CI=true
    yield chosen
    if chosen.discard is not None:
        for directory in tmp_path.iterdir():
            chosen.discard(directory)


@dataclass
class Tally:
    """What a series of cycles did, for the assertions and docs/reliability.md."""

    cycles: int = 0
    killed: int = 0
    acked: int = 0
    in_flight_landed: int = 0
    recovery_kills: int = 0
    fired: set[str] | None = None

    def __str__(self) -> str:
        return (
            f"{self.cycles} cycles, {self.killed} workers killed, {self.acked} acknowledged "
            f"commits (0 lost), {self.in_flight_landed} in-flight ops found committed, "
            f"{self.recovery_kills} recoveries killed"
        )


class Series:
    """Cycles on one backend: each continues the previous vault's workload from the
    prefix its recovery matched, until the vault is replaced by a fresh one."""

    def __init__(
        self, server: ForkServer, backend: KillBackend, root: Path, *, seed: int, huge_every: int
    ) -> None:
        self.server = server
        self.huge_every = huge_every
        self.backend = backend
        self.root = root
        self.seeds = seeds(seed)
        self.rnd = random.Random(seed)
        self.tally = Tally(fired=set())
        self._vaults = 0
        self._new_vault()

    def _new_vault(self) -> None:
        if self._vaults:
            # Old vaults hold huge states: keep the test's disk use bounded.
            for old in self.root.iterdir():
                if self.backend.discard is not None:
                    self.backend.discard(old)
                shutil.rmtree(old)
        self._vaults += 1
        self.directory = self.root / f"v{self._vaults}"
        self.directory.mkdir(parents=True)
        if self.backend.discard is not None:
            self.backend.discard(self.directory)  # a schema left by an earlier session
        self.url = self.backend.url(self.directory)
        self.workload = Workload(next(self.seeds), huge_every=self.huge_every)
        self.start = 0
        self.cycles_here = 0

    def cycle(
        self,
        *,
        crash_at: str | None = None,
        kill_after: float | None = None,
        kill_recovery: bool = False,
    ) -> Outcome:
        if self.cycles_here >= CYCLES_PER_VAULT:
            self._new_vault()
        self.cycles_here += 1
        outcome = self.server.cycle(
            self.url,
            seed=self.workload.seed,
            huge_every=self.huge_every,
            start=self.start,
            count=OPS_PER_CYCLE,
            crash_at=crash_at,
            kill_after=kill_after,
        )
        assert not outcome.errors, f"the worker failed: {outcome.errors}"
        if self.backend.settle is not None:
            self.backend.settle(self.directory)
        # Not ready: killed while opening (a crash point in the vault's creation); an
        # open that fails would have reported its error.
        assert outcome.ready or outcome.killed, "the worker could not open the vault"
        assert outcome.killed or outcome.done, f"the worker died by signal {outcome.signal}"
        expected = list(range(self.start, self.start + len(outcome.acked)))
        assert outcome.acked == expected, "acknowledgements out of order"
        acked_through = self.start + len(outcome.acked)
        last = self.start + OPS_PER_CYCLE
        issued = last if outcome.done else min(acked_through + 1, last)
        if outcome.killed and crash_at is not None:
            assert self.tally.fired is not None
            self.tally.fired.add(crash_at.partition("@")[0])
        if kill_recovery:
            p = self._recover_under_kills(acked_through, issued)
        else:
            p = check_recovered(self.url, self.workload, acked_through, issued)
        self.tally.cycles += 1
        self.tally.killed += outcome.killed
        self.tally.acked += len(outcome.acked)
        self.tally.in_flight_landed += p > acked_through
        self.start = p
        return outcome

    def _recover_under_kills(self, acked_through: int, issued: int) -> int:
        """Kill recovering processes; the result must equal an uninterrupted recovery."""
        copy = self.backend.copy
        reference: int | None = None
        if copy is not None:
            side = self.directory.parent / f"{self.directory.name}-copy{self.tally.cycles}"
            copy_url = copy(self.directory, side)
            reference = check_recovered(copy_url, self.workload, acked_through, issued)
        for _ in range(self.rnd.randint(1, 3)):
            outcome = self.server.cycle(
                self.url,
                seed=self.workload.seed,
                huge_every=self.huge_every,
                mode="recover",
                crash_at="files.open.after_sweep_step@1" if self.rnd.random() < 0.5 else None,
                kill_after=self.rnd.uniform(0, 0.03),
            )
            assert not outcome.errors, f"recovery failed: {outcome.errors}"
            if self.backend.settle is not None:
                self.backend.settle(self.directory)
            self.tally.recovery_kills += outcome.killed
        p = check_recovered(self.url, self.workload, acked_through, issued)
        if reference is not None:
            assert p == reference, "an interrupted recovery recovered another state"
        # And once more: recovery that already ran changes nothing.
        assert check_recovered(self.url, self.workload, acked_through, issued) == p
        return p


def random_kills(series: Series, cycles: int) -> None:
    # How long a whole workload takes here, learnt from those that finished: kills are
    # spread over it, so that most land and they land anywhere in it.
    duration = statistics.median(series.cycle().elapsed for _ in range(3))
    for n in range(cycles):
        outcome = series.cycle(
            kill_after=series.rnd.uniform(0, duration),
            kill_recovery=n % 3 == 2,
        )
        if outcome.done:
            duration = 0.9 * outcome.elapsed


def test_kill_at_random_moments(server: ForkServer, backend: KillBackend, tmp_path: Path) -> None:
    series = Series(
        server, backend, tmp_path, seed=zlib.crc32(backend.name.encode()), huge_every=RARE_HUGE
    )
    random_kills(series, RANDOM_CYCLES)
    assert series.tally.killed > RANDOM_CYCLES // 2, f"too few kills landed: {series.tally}"
    print(f"\n{backend.name} random kills: {series.tally}")


def test_kill_at_every_crash_point(
    server: ForkServer, backend: KillBackend, tmp_path: Path
) -> None:
    series = Series(server, backend, tmp_path, seed=7, huge_every=OPS_PER_CYCLE)
    points = workload_points(backend)
    assert points, "no crash points registered for this backend"
    for point in points:
        for hit in (1, 2, series.rnd.randint(3, 12)):
            series.cycle(crash_at=f"{point}@{hit}", kill_recovery=hit == 2)
    assert series.tally.fired is not None
    never = sorted(set(points) - series.tally.fired)
    assert not never, f"crash points the workload never reached: {never}"
    print(f"\n{backend.name} crash points: {len(points)} points, {series.tally}")


@pytest.mark.slow
def test_kill_at_random_moments_many(
    server: ForkServer, backend: KillBackend, tmp_path: Path
) -> None:
    series = Series(
        server,
        backend,
        tmp_path,
        seed=1234 + zlib.crc32(backend.name.encode()),
        huge_every=RARE_HUGE,
    )
    random_kills(series, RANDOM_CYCLES * SLOW_FACTOR)
    print(f"\n{backend.name} random kills (slow): {series.tally}")


@pytest.mark.slow
def test_kill_at_every_crash_point_many(
    server: ForkServer, backend: KillBackend, tmp_path: Path
) -> None:
    series = Series(server, backend, tmp_path, seed=99, huge_every=OPS_PER_CYCLE)
    points = workload_points(backend)
    for point in points:
        for _ in range(SLOW_FACTOR * 3):
            hit = series.rnd.randint(1, 20)
            series.cycle(crash_at=f"{point}@{hit}", kill_recovery=series.rnd.random() < 0.3)
    print(f"\n{backend.name} crash points (slow): {len(points)} points, {series.tally}")
