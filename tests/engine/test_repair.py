"""`Vault.repair`: damaged runs roll back to their newest verified checkpoint, nothing
is deleted, and a second repair changes nothing.

Damage is made through the backend itself (records and objects replaced by damaged
bytes), so the same tests hold for every backend and every storage layout.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

import statevault
from statevault import ops
from statevault.backends.base import Backend


def backend_of(vault: statevault.Vault) -> Backend:
    backend: Backend = vault._backend  # the tests damage bytes below the API
    return backend


def flip(data: bytes, position: int) -> bytes:
    damaged = bytearray(data)
    damaged[position % len(damaged)] ^= 0x04
    return bytes(damaged)


def damage_record(vault: statevault.Vault, run_id: str, seq: int) -> bytes:
    """Replace record `seq` by damaged bytes, keeping the records after it; returns it."""
    backend = backend_of(vault)
    removed = backend.roll_back(run_id, seq - 1)
    original = removed[0].record
    for item in removed:
        record = flip(item.record, 20) if item.seq == seq else item.record
        backend.commit_checkpoint(run_id, item.seq, record, expected_head=item.seq - 1)
    return original


def damage_object(vault: statevault.Vault, digest: str) -> bytes:
    """Replace a stored object by damaged bytes; returns the original."""
    backend = backend_of(vault)
    key = bytes.fromhex(digest)
    original = backend.get_objects([key])[key]
    backend.delete_objects([key])
    backend.put_objects([(key, flip(original, 40))])
    return original


def big(i: int) -> dict[str, Any]:
    return {"i": i, "blob": os.urandom(9000)}


def contents(vault: statevault.Vault) -> dict[str, Any]:
    backend = backend_of(vault)
    return {
        "runs": {r: backend.read_checkpoints(r) for r in backend.list_runs()},
        "objects": sorted(backend.scan_objects()),
        "quarantine": backend.quarantined_objects(),
    }


def test_damaged_object_rolls_the_run_back(vault: statevault.Vault) -> None:
    run = vault.run("order-42")
    states = [big(i) for i in range(5)]
    for state in states:
        run.save(state)
    vault.run("fine").save({"untouched": True})
    records = {c.seq: c.record for c in backend_of(vault).read_checkpoints("order-42")}
    digest = run.checkpoint_at(4).digest
    original = damage_object(vault, digest)

    report = vault.verify()
    [problem] = report.problems
    assert (problem.kind, problem.run_id, problem.seq, problem.digest) == (
        "object",
        "order-42",
        4,
        digest,
    )
    assert "verifies through checkpoint 3" in problem.consequence
    assert report.damaged_runs["order-42"].verified_through == 3
    assert report.damaged_objects == [digest]

    repaired = vault.repair()
    [rolled] = repaired.rolled_back
    assert (rolled.run_id, rolled.head, rolled.kept_through, rolled.lost) == (
        "order-42",
        5,
        3,
        [4, 5],
    )
    assert repaired.quarantined_objects == [digest]
    assert repaired.records_set_aside == 2
    assert repaired.ok and not repaired.remaining
    assert vault.verify().ok
    assert vault.run("order-42").load() == states[2]
    assert vault.run("fine").load() == {"untouched": True}

    # Nothing was deleted: the records and the damaged bytes are in quarantine.
    kept = vault.quarantined()
    assert {(q.run_id, q.seq): q.data for q in kept if q.kind == "record"} == {
        ("order-42", 4): records[4],
        ("order-42", 5): records[5],
    }
    [damaged] = [q for q in kept if q.kind == "object"]
    assert damaged.digest == digest
    assert damaged.data == flip(original, 40)

    # Idempotent: a second repair finds nothing and changes nothing.
    before = contents(vault)
    again = vault.repair()
    assert not again.problems and not again.changed and again.ok
    assert contents(vault) == before
    # The run goes on from its repaired head.
    vault.run("order-42").save({"after": "repair"})
    assert vault.verify().ok


def test_damaged_first_record_removes_the_run(vault: statevault.Vault) -> None:
    vault.run("a").save({"n": 1})
    vault.run("a").save({"n": 2})
    vault.run("b").save({"n": 3})
    damage_record(vault, "a", 1)
    report = vault.repair()
    assert [(r.run_id, r.kept_through, r.lost) for r in report.rolled_back] == [("a", 0, [1, 2])]
    assert vault.runs() == ["b"]
    assert report.ok


def test_damaged_journal_entry(vault: statevault.Vault) -> None:
    run = vault.run("r", policy=statevault.CheckpointPolicy(records=50))
    run.save({"n": 0, "log": []})
    for i in range(6):
        run.apply([ops.increment("n"), ops.append("log", i)])
    damage_record(vault, "r", 4)
    with pytest.raises(statevault.CorruptionError):
        vault.run("r").load()
    report = vault.repair()
    assert report.rolled_back[0].lost == [4, 5, 6, 7]
    assert vault.run("r").load() == {"n": 2, "log": [0, 1]}
    assert vault.verify().ok


def test_dry_run_changes_nothing(vault: statevault.Vault) -> None:
    run = vault.run("r")
    for i in range(3):
        run.save(big(i))
    damage_record(vault, "r", 2)
    before = contents(vault)
    report = vault.repair(dry_run=True)
    assert report.dry_run
    assert [(r.run_id, r.kept_through, r.lost) for r in report.rolled_back] == [("r", 1, [2, 3])]
    assert report.ok  # what the repair would leave: nothing
    assert report.records_set_aside == 0
    assert contents(vault) == before
    assert not vault.verify().ok


def test_one_run_only(vault: statevault.Vault) -> None:
    for run_id in ("a", "b"):
        for i in range(3):
            vault.run(run_id).save({"run": run_id, "i": i})
        damage_record(vault, run_id, 3)
    report = vault.repair("a")
    assert [r.run_id for r in report.rolled_back] == ["a"]
    assert report.ok  # for run "a"
    assert {p.run_id for p in vault.verify().problems} == {"b"}
    assert vault.repair("b").ok
    assert vault.verify().ok
    with pytest.raises(statevault.InvalidRunIdError):
        vault.repair("")


def test_damaged_object_no_checkpoint_uses(vault: statevault.Vault) -> None:
    vault.run("r").save(big(0))
    digest = vault.run("r").checkpoint_at(1).digest
    vault.delete_run("r")  # the object stays until GC
    damage_object(vault, digest)
    report = vault.verify()
    assert [(p.kind, p.run_id, p.digest) for p in report.problems] == [("object", None, digest)]
    assert "quarantine" in report.problems[0].consequence
    repaired = vault.repair()
    assert repaired.quarantined_objects == [digest]
    assert not repaired.rolled_back
    assert vault.verify().ok


def test_leased_run_is_left_alone(vault: statevault.Vault) -> None:
    if not vault.capabilities.leases:
        pytest.skip("this backend has no leases")
    for i in range(3):
        vault.run("r").save({"i": i})
    damage_record(vault, "r", 3)
    grant = backend_of(vault).acquire_lease("r", "worker-7", 30)
    report = vault.repair()
    assert not report.rolled_back
    assert [p.kind for p in report.unrepaired] == ["lease"]
    assert not report.ok
    backend_of(vault).release_lease("r", grant.token)
    assert vault.repair().ok
