"""`vault.migrate` and `vault.undo_migration`: every run to one version, or back."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
from typing import Any

import msgspec
import pytest

import statevault


class V1(msgspec.Struct):
    id: str
    total: float


class V2(msgspec.Struct):
    id: str
    total_cents: int


def up(state: dict[str, Any]) -> dict[str, Any]:
    if state["id"] == "poison":
        raise ValueError("cannot price a poisoned order")
    state["total_cents"] = round(state.pop("total") * 100)
    return state


def down(state: dict[str, Any]) -> dict[str, Any]:
    state["total"] = state.pop("total_cents") / 100
    return state


def populate(vault: statevault.Vault) -> None:
    vault.schema("order", V1, version=1)
    for i in range(5):
        vault.run(f"order-{i}", schema="order").save(V1(f"order-{i}", i + 0.5))
    vault.run("poison", schema="order").save(V1("poison", 1.0))
    vault.run("plain").save({"id": "plain", "total": 1.0})
    vault.schema("other", V2, version=1)
    vault.run("other-1", schema="other").save(V2("x", 1))
    vault.schema("order", V2, version=2)
    vault.migration("order", 1, 2)(up)
    vault.migration("order", 2, 1)(down)
    vault.run("order-new", schema="order").save(V2("order-new", 7))


def heads(vault: statevault.Vault) -> dict[str, int]:
    result = {}
    for run_id in vault.runs():
        head = vault.run(run_id).head
        assert head is not None
        result[run_id] = head.seq
    return result


@pytest.mark.parametrize("workers", [1, 4])
def test_migrate_reports_each_run_and_leaves_failures_alone(
    vault: statevault.Vault, workers: int
) -> None:
    populate(vault)
    before = heads(vault)
    seen: list[str] = []
    report = vault.migrate("order", to=2, workers=workers, progress=lambda o: seen.append(o.run_id))
    assert sorted(seen) == sorted(vault.runs())
    assert [o.run_id for o in report.migrated] == [f"order-{i}" for i in range(5)]
    assert [o.run_id for o in report.current] == ["order-new"]
    assert [o.run_id for o in report.skipped] == ["other-1", "plain"]
    (failed,) = report.failed
    assert failed.run_id == "poison"
    assert "cannot price a poisoned order" in failed.reason
    assert "step 1->2" in failed.reason
    assert not report.ok
    after = heads(vault)
    assert after["poison"] == before["poison"]
    for i in range(5):
        run = vault.run(f"order-{i}")
        head = run.head
        assert head is not None
        assert (head.seq, head.schema, head.schema_version) == (2, "order", 2)
        assert head.meta["migration"] == {
            "schema": "order",
            "from_version": 1,
            "to_version": 2,
            "from_seq": 1,
        }
        assert run.load() == {"id": f"order-{i}", "total_cents": round((i + 0.5) * 100)}
    # Running it again finds the migrated runs current: the same command resumes.
    again = vault.migrate("order", to=2, workers=workers)
    assert len(again.current) == 6
    assert [o.run_id for o in again.failed] == ["poison"]
    assert heads(vault) == after


def test_dry_run_writes_nothing(vault: statevault.Vault) -> None:
    populate(vault)
    before = heads(vault)
    report = vault.migrate("order", dry_run=True)
    assert report.dry_run
    assert len(report.migrated) == 5
    assert len(report.failed) == 1
    assert heads(vault) == before
    stored = {(d.name, d.version) for d in vault.stored_schemas()}
    assert stored == {("order", 1), ("order", 2), ("other", 1)}


def test_a_glob_selects_runs(vault: statevault.Vault) -> None:
    populate(vault)
    report = vault.migrate("order", runs="order-[0-2]")
    assert [o.run_id for o in report.migrated] == ["order-0", "order-1", "order-2"]
    assert report.ok
    assert vault.run("order-3").head.schema_version == 1  # type: ignore[union-attr]


def test_an_interrupted_migration_resumes(vault: statevault.Vault) -> None:
    populate(vault)
    done: list[str] = []

    def stop_after_two(outcome: statevault.RunOutcome) -> None:
        done.append(outcome.run_id)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vault.migrate("order", workers=1, progress=stop_after_two)
    report = vault.migrate("order", workers=1)
    migrated = {o.run_id for o in report.migrated}
    current = {o.run_id for o in report.current}
    assert migrated | current >= {f"order-{i}" for i in range(5)}
    assert len(migrated & set(done)) == 0
    for i in range(5):
        assert vault.run(f"order-{i}", schema="order").load() == V2(
            f"order-{i}", round((i + 0.5) * 100)
        )


def test_the_way_back_down_and_undo(vault: statevault.Vault) -> None:
    populate(vault)
    vault.migrate("order")
    # Down through the registered 2 -> 1 steps: a new checkpoint at version 1.
    report = vault.migrate("order", to=1, runs="order-[01]")
    assert [o.run_id for o in report.migrated] == ["order-0", "order-1"]
    head = vault.run("order-0").head
    assert head is not None
    assert head.schema_version == 1
    assert vault.run("order-0").load() == {"id": "order-0", "total": 0.5}
    # Undo restores the stored state from before each run's newest migration.
    undone = vault.undo_migration("order", runs="order-[234]")
    assert [o.run_id for o in undone.migrated] == ["order-2", "order-3", "order-4"]
    for i in (2, 3, 4):
        run = vault.run(f"order-{i}")
        assert run.load() == run.load(at=1)
        head = run.head
        assert head is not None
        assert (head.seq, head.schema_version) == (3, 1)
        assert head.meta["migration"] == {"schema": "order", "undone_seq": 2, "restored_seq": 1}
    again = vault.undo_migration("order", runs="order-[234]")
    assert len(again.skipped) == 3  # an undo is not undone twice


def test_a_target_without_a_type_is_refused(vault: statevault.Vault) -> None:
    populate(vault)
    with pytest.raises(
        statevault.SchemaError, match="no type is registered for schema 'order' version 3"
    ):
        vault.migrate("order", to=3)


KILLER = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
import statevault
from test_bulk import V1, V2, up
done = []
def kill_after_some(outcome):
    done.append(outcome)
    if len(done) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
with statevault.open(sys.argv[1]) as vault:
    vault.schema("order", V1, version=1)
    vault.schema("order", V2, version=2)
    vault.migration("order", 1, 2)(up)
    vault.migrate("order", workers=4, progress=kill_after_some)
"""


@pytest.mark.parametrize("kind", ["sqlite", "files"])
def test_a_killed_migration_leaves_every_run_whole_and_resumes(
    kind: str, tmp_path: pathlib.Path
) -> None:
    url = str(tmp_path / "v.db") if kind == "sqlite" else f"files://{tmp_path / 'v'}"
    with statevault.open(url) as vault:
        vault.schema("order", V1, version=1)
        for i in range(60):
            vault.run(f"order-{i:02d}", schema="order").save(V1(f"order-{i:02d}", i / 4))
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, url, str(pathlib.Path(__file__).parent), "25"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with statevault.open(url) as vault:
        vault.schema("order", V1, version=1)
        vault.schema("order", V2, version=2)
        vault.migration("order", 1, 2)(up)
        versions = {r: vault.run(r).head.schema_version for r in vault.runs()}  # type: ignore[union-attr]
        assert set(versions.values()) <= {1, 2}
        assert 25 <= list(versions.values()).count(2) < 60  # some migrated, not all
        assert vault.verify().ok
        report = vault.migrate("order")
        assert report.ok
        assert len(report.migrated) + len(report.current) == 60
        assert len(report.current) == list(versions.values()).count(2)
        for i in range(60):
            run = vault.run(f"order-{i:02d}", schema="order")
            assert run.load() == V2(f"order-{i:02d}", round(i / 4 * 100))
