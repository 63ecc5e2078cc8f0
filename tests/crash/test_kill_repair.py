"""`repair` is safe under kill -9: killed anywhere, run again, it ends where an
uninterrupted repair ends, and nothing it moved aside is ever lost.

A damaged vault is made once per backend (a damaged state object, a damaged record, a
damaged journal entry, a damaged object no checkpoint uses). Each cycle copies it,
has a forked worker repair the copy and kills it (at a repair, roll-back, quarantine
or commit crash point, or at a random moment), then repairs it to the end in this
process and compares everything stored with the reference: runs, objects, quarantine.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from kill_harness import BACKENDS, ForkServer, KillBackend

import statevault
from statevault import faults, ops
from statevault.backends.base import Backend

SLOW_FACTOR = 15


@pytest.fixture(scope="module")
def server() -> Any:
    fork_server = ForkServer()
    yield fork_server
    fork_server.close()


# Each cycle repairs a fresh copy of one damaged vault, which a server's vault has not
# (PostgreSQL's damage is the server's to detect; its kill -9 runs in test_kill.py).
@pytest.fixture(params=sorted(name for name, b in BACKENDS.items() if b.copy is not None))
def backend(request: pytest.FixtureRequest) -> KillBackend:
    return BACKENDS[request.param]


def _backend(vault: statevault.Vault) -> Backend:
    found: Backend = vault._backend  # damage is made below the API
    return found


def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at % len(damaged)] ^= 0x08
    return bytes(damaged)


def _damage_record(vault: statevault.Vault, run_id: str, seq: int) -> None:
    backend = _backend(vault)
    for item in backend.roll_back(run_id, seq - 1):
        record = _flip(item.record, 25) if item.seq == seq else item.record
        backend.commit_checkpoint(run_id, item.seq, record, expected_head=item.seq - 1)


def _damage_object(vault: statevault.Vault, digest: str) -> None:
    backend = _backend(vault)
    key = bytes.fromhex(digest)
    data = backend.get_objects([key])[key]
    backend.delete_objects([key])
    backend.put_objects([(key, _flip(data, 50))])


def make_damaged_vault(url: str) -> None:
    rnd = random.Random(5)
    with statevault.open(url, policy=statevault.CheckpointPolicy(records=50)) as vault:
        objects = vault.run("objects")
        for i in range(4):
            objects.save({"i": i, "blob": rnd.randbytes(7000)})
        records = vault.run("records")
        for i in range(5):
            records.save({"i": i})
        journal = vault.run("journal")
        journal.save({"n": 0, "log": []})
        for i in range(6):
            journal.apply([ops.increment("n"), ops.append("log", i)])
        gone = vault.run("gone")
        gone.save({"blob": rnd.randbytes(9000)})
        orphan = gone.checkpoint_at(1).digest
        vault.delete_run("gone")
        vault.run("whole").save({"fine": True, "blob": rnd.randbytes(8000)})
        _damage_object(vault, objects.checkpoint_at(3).digest)
        _damage_record(vault, "records", 2)
        _damage_record(vault, "journal", 5)
        _damage_object(vault, orphan)
        assert len(vault.verify().problems) == 4


def snapshot(url: str) -> dict[str, Any]:
    """Everything a vault stores, through the backend: runs, objects and quarantine."""
    with statevault.open(url) as vault:
        backend = _backend(vault)
        objects = sorted(backend.scan_objects())
        return {
            "runs": {r: backend.read_checkpoints(r) for r in backend.list_runs()},
            "objects": dict(
                zip(objects, map(backend.get_objects([*objects]).get, objects), strict=True)
            ),
            "quarantine": backend.quarantined_objects(),
            "verifies": vault.verify().ok,
        }


def repair_points(backend: KillBackend) -> list[str]:
    import statevault.backends.files  # noqa: PLC0415 - registers its points
    import statevault.backends.sqlite  # noqa: F401, PLC0415

    reached = ("repair.", "files.rollback.", "files.quarantine.", "files.objects.", "sqlite.")
    return sorted(
        name
        for name in faults.POINTS
        if name.startswith(reached) and name.startswith((*backend.points, "repair."))
    )


class RepairCycles:
    def __init__(self, server: ForkServer, backend: KillBackend, root: Path) -> None:
        self.server = server
        self.backend = backend
        self.root = root
        pristine = root / "pristine"
        pristine.mkdir()
        make_damaged_vault(backend.url(pristine))
        self.pristine = pristine
        reference = root / "reference"
        assert backend.copy is not None
        url = backend.copy(pristine, reference)
        with statevault.open(url) as vault:
            report = vault.repair()
            assert report.ok and len(report.rolled_back) == 3
        self.expected = snapshot(url)
        assert self.expected["verifies"]
        self.cycles = self.killed = 0
        self.fired: set[str] = set()

    def cycle(self, *, crash_at: str | None = None, kill_after: float | None = None) -> None:
        assert self.backend.copy is not None
        work = self.root / "work"
        if work.exists():
            shutil.rmtree(work)
        url = self.backend.copy(self.pristine, work)
        outcome = self.server.cycle(url, mode="repair", crash_at=crash_at, kill_after=kill_after)
        assert not outcome.errors, outcome.errors
        self.cycles += 1
        self.killed += outcome.killed
        if outcome.killed and crash_at is not None:
            self.fired.add(crash_at.partition("@")[0])
        # Recovery needs no manual step: open, repair again, and end where the
        # uninterrupted repair ended.
        with statevault.open(url) as vault:
            again = vault.repair()
            assert again.ok, [str(p) for p in again.remaining]
            if outcome.done:
                assert not again.changed, "a finished repair left work for the next one"
        assert snapshot(url) == self.expected


def test_repair_killed_at_every_point(
    server: ForkServer, backend: KillBackend, tmp_path: Path
) -> None:
    cycles = RepairCycles(server, backend, tmp_path)
    points = repair_points(backend)
    for point in points:
        for hit in (1, 2, 3):
            cycles.cycle(crash_at=f"{point}@{hit}")
    never = sorted(
        p for p in set(points) - cycles.fired if not p.startswith("files.objects.after_")
    )
    assert not never, f"crash points repair never reached: {never}"
    tally = f"{len(points)} points, {cycles.cycles} cycles, {cycles.killed} killed"
    print(f"\n{backend.name} repair: {tally}")


def test_repair_killed_at_random_moments(
    server: ForkServer, backend: KillBackend, tmp_path: Path
) -> None:
    cycles = RepairCycles(server, backend, tmp_path)
    rnd = random.Random(11)
    for _ in range(15):
        cycles.cycle(kill_after=rnd.uniform(0, 0.03))
    print(f"\n{backend.name} repair random kills: {cycles.cycles} cycles, {cycles.killed} killed")


@pytest.mark.slow
def test_repair_killed_many(server: ForkServer, backend: KillBackend, tmp_path: Path) -> None:
    cycles = RepairCycles(server, backend, tmp_path)
    rnd = random.Random(12)
    points = repair_points(backend)
    for _ in range(15 * SLOW_FACTOR):
        if rnd.random() < 0.5:
            cycles.cycle(crash_at=f"{rnd.choice(points)}@{rnd.randint(1, 6)}")
        else:
            cycles.cycle(kill_after=rnd.uniform(0, 0.05))
    print(f"\n{backend.name} repair (slow): {cycles.cycles} cycles, {cycles.killed} killed")


def test_fixture_has_every_kind_of_damage(tmp_path: Path) -> None:
    url = str(tmp_path / "v.db")
    make_damaged_vault(url)
    with statevault.open(url) as vault:
        kinds = sorted((p.kind, p.run_id or "") for p in vault.verify().problems)
    assert kinds == [
        ("object", ""),
        ("object", "objects"),
        ("record", "journal"),
        ("record", "records"),
    ]
    assert os.path.exists(url)
