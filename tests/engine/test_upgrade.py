"""`Vault.upgrade`: older vaults brought to the newest format, history kept, on request only."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import statevault
from statevault import faults
from statevault.backends.base import StepProgress, UpgradeStep, initial_meta
from statevault.backends.memory import MemoryBackend
from statevault.codec.compression import Compression
from statevault.codec.encoding import Codec
from statevault.codec.envelope import dictionary_reference
from statevault.codec.registry import GLOBAL_REGISTRY, TypeRegistry
from statevault.engine.checkpoints import Engine
from statevault.engine.upgrade import upgrade
from upgrade_support import (
    DATA,
    NEWEST,
    OLD_GOLDEN,
    copy_golden,
    file_bytes,
    fill,
    format_of,
    golden_id,
    history,
    layout_steps,
    make_golden,
    old_vault_url,
)


def check_new_writes(vault: statevault.Vault) -> None:
    """New entries are written in the newest format and get what it brings: a state
    saved as a tree, transactions, and deltas relocated against the fold after them."""
    assert vault.format_version == NEWEST
    engine = vault._engine
    run = vault.run("after-upgrade", policy=statevault.CheckpointPolicy(records=4))
    state: dict[str, Any] = {"messages": [], "step": 0}
    run.save(state)
    for i in range(1, 9):
        with run.transaction() as s:
            s["messages"].append(make_golden.chat_message(i))
            s["step"] = i
        state["messages"].append(make_golden.chat_message(i))
        state["step"] = i
    assert run.load() == state
    kinds = [c.kind for c in reversed(run.checkpoints())]
    assert kinds.count("fold") == 2
    relocated = 0
    for checkpoint in run.checkpoints():
        found = engine.record("after-upgrade", checkpoint.seq)
        assert found is not None
        record, _ = found
        assert record.v == 2  # sealed as format 3 seals
        if record.kind == "delta" and dictionary_reference(record.inline or b"") is not None:
            relocated += 1
    # Relocation needs a backend that can rewrite records below the head.
    assert relocated == (8 if vault.capabilities.rewrite_records else 0)
    assert run.get("messages.3.i") == 4


@pytest.mark.parametrize("golden", OLD_GOLDEN, ids=golden_id)
def test_golden_vault_upgrades_with_history_kept(
    golden: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    url = copy_golden(golden, tmp_path)
    version = format_of(golden)
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == version  # opening never upgrades
        before = history(vault)
        dry = vault.upgrade(dry_run=True)
        assert (dry.source, dry.target, dry.dry_run) == (version, NEWEST, True)
        assert [s.name for s in dry.steps] == [
            *layout_steps(golden),
            f"vault format {version} -> {NEWEST}",
        ]
        assert dry.runs == len(before)
        assert dry.checkpoints == sum(len(h) for h in before.values())
        assert vault.format_version == version
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == version
        seen: list[tuple[str, int, int]] = []
        report = vault.upgrade(progress=lambda *args: seen.append(args))
        assert (report.source, report.target, report.dry_run) == (version, NEWEST, False)
        assert not report.current
        if not url.startswith("files://"):
            assert (report.records, report.bytes) == (0, 0)  # no record is rewritten
        assert seen[-1] == (f"vault format {version} -> {NEWEST}", 1, 1)
        assert vault.format_version == NEWEST
        # This handle writes the new format at once, on top of the old history.
        first = sorted(before)[0]
        assert vault.run(first).save({"upgraded": True}).seq == len(before[first]) + 1
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == NEWEST
        after = history(vault)
        grown = after.pop(first)
        assert grown[:-1] == before.pop(first)
        assert grown[-1][4] == {"upgraded": True}
        assert after == before
        check_new_writes(vault)
        report = vault.verify()
        assert report.ok, report.problems
        again = vault.upgrade()
        assert again.current
        assert (again.source, again.target) == (NEWEST, NEWEST)


@pytest.mark.parametrize("golden", OLD_GOLDEN, ids=golden_id)
def test_dry_run_changes_no_byte(golden: pathlib.Path, tmp_path: pathlib.Path) -> None:
    url = copy_golden(golden, tmp_path)
    before = file_bytes(tmp_path)
    with statevault.open(url, create=False) as vault:
        report = vault.upgrade(dry_run=True)
        assert report.steps
    assert file_bytes(tmp_path) == before


def engine_for(backend: Any) -> Engine:
    return Engine(backend, Codec(TypeRegistry(GLOBAL_REGISTRY)), Compression.parse("zstd"))


@pytest.fixture
def opener(
    backend_kind: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[int], Callable[[], statevault.Vault]]]:
    """make(version) -> a function that opens the same old-format vault again and again."""
    memory: dict[str, statevault.Vault] = {}

    def make(version: int) -> Callable[[], statevault.Vault]:
        if backend_kind == "memory":
            backend = MemoryBackend(initial_meta=initial_meta(version, {}), name="old")
            memory["vault"] = statevault.Vault(backend, engine_for(backend))
            return lambda: memory["vault"]
        schema = request.getfixturevalue("pg_schema") if backend_kind == "postgres" else ""
        url = old_vault_url(backend_kind, version, tmp_path, schema)
        return lambda: statevault.open(url, create=False)

    yield make
    if "vault" in memory:
        memory["vault"].close()


@pytest.mark.parametrize("version", range(1, NEWEST))
def test_old_format_vault_upgrades_on_every_backend(
    opener: Callable[[int], Callable[[], statevault.Vault]], backend_kind: str, version: int
) -> None:
    reopen = opener(version)
    vault = reopen()
    assert vault.format_version == version
    fill(vault)
    before = history(vault)
    assert {record_version(vault, run_id) for run_id in before} == {1}
    if backend_kind != "memory":
        vault.close()
        vault = reopen()
    report = vault.upgrade()
    assert (report.source, report.target, report.runs) == (version, NEWEST, len(before))
    if backend_kind != "memory":
        vault.close()
        vault = reopen()
    assert vault.format_version == NEWEST
    assert history(vault) == before
    check_new_writes(vault)
    assert vault.verify().ok
    assert vault.upgrade().current
    vault.close()


def record_version(vault: statevault.Vault, run_id: str) -> int:
    found = vault._engine.record(run_id, 1)
    assert found is not None
    return found[0].v


def test_a_newer_vault_is_refused_and_left_as_it_was(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "v.db")
    with statevault.open(path) as vault:
        vault.run("r").save({"a": 1})
        backend = vault._backend
        backend.set_meta("format", str(NEWEST + 1).encode())
        with pytest.raises(statevault.UnsupportedFormatError) as caught:
            vault.upgrade()
        assert (caught.value.found, caught.value.supported) == (NEWEST + 1, NEWEST)
        assert backend.get_meta()["format"] == str(NEWEST + 1).encode()
    with pytest.raises(statevault.UnsupportedFormatError):
        statevault.open(path)


class LayoutBackend(MemoryBackend):
    """A memory backend with a layout of its own, kept in a meta entry, whose upgrade
    rewrites every run's records (byte for byte, so the vault reads the same)."""

    def plan_layout_upgrade(self) -> UpgradeStep | None:
        if self.get_meta().get("layout") == b"2":
            return None
        records = [c for r in self.list_runs() for c in self.read_checkpoints(r)]
        return UpgradeStep(
            "memory layout 1 -> 2",
            runs=len(self.list_runs()),
            records=len(records),
            bytes=sum(len(c.record) for c in records),
        )

    def upgrade_layout(self, progress: StepProgress | None = None) -> UpgradeStep | None:
        planned = self.plan_layout_upgrade()
        if planned is None:
            return None
        for done, run_id in enumerate(self.list_runs(), start=1):
            stored = self.read_checkpoints(run_id)[1:]  # the head is never rewritten
            self.rewrite_records(run_id, [(c.seq, c.record, c.record) for c in stored])
            if progress is not None:
                progress(done, planned.runs)
        self.set_meta("layout", b"2")
        return planned


def test_a_backend_layout_step_runs_before_the_format_and_only_when_pending() -> None:
    backend = LayoutBackend(initial_meta=initial_meta(2, {}), name="layout")
    vault = statevault.Vault(backend, engine_for(backend))
    fill(vault)
    before = history(vault)

    dry = vault.upgrade(dry_run=True)
    assert [s.name for s in dry.steps] == ["memory layout 1 -> 2", f"vault format 2 -> {NEWEST}"]
    assert dry.steps[0].runs == len(before)
    assert dry.records == dry.steps[0].records > 0
    assert dry.bytes > 0
    assert "layout" not in backend.get_meta()

    seen: list[tuple[str, int, int]] = []
    report = vault.upgrade(progress=lambda *args: seen.append(args))
    assert [s.name for s in report.steps] == [s.name for s in dry.steps]
    names = [name for name, _, _ in seen if name != "reading runs"]
    assert names.index("memory layout 1 -> 2") < names.index(f"vault format 2 -> {NEWEST}")
    assert backend.get_meta()["layout"] == b"2"
    assert history(vault) == before
    assert vault.upgrade().current

    # A backend whose layout is behind while the format is newest: only the layout step.
    backend.set_meta("layout", b"1")
    report = upgrade(backend, target=NEWEST)
    assert [s.name for s in report.steps] == ["memory layout 1 -> 2"]
    vault.close()


_UPGRADE = "import statevault, sys\nstatevault.open(sys.argv[1], create=False).upgrade()\n"


@pytest.mark.parametrize("point", ["upgrade.format.before_write", "upgrade.format.after_write"])
@pytest.mark.parametrize("golden", [DATA / "golden" / "v2.db", DATA / "golden" / "v1-files"])
def test_killed_upgrade_leaves_a_whole_vault_and_finishes_when_run_again(
    golden: pathlib.Path, point: str, tmp_path: pathlib.Path
) -> None:
    assert point in faults.POINTS
    url = copy_golden(golden, tmp_path)
    with statevault.open(url, create=False) as vault:
        before = history(vault)
    env = {**os.environ, faults.ENV_VAR: point}
    killed = subprocess.run(
        [sys.executable, "-c", _UPGRADE, url], env=env, capture_output=True, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == (
            format_of(golden) if point.endswith("before_write") else NEWEST
        )
        assert history(vault) == before
        assert vault.verify().ok
        report = vault.upgrade()
        assert report.current == point.endswith("after_write")
        assert vault.format_version == NEWEST
        assert history(vault) == before
        assert vault.upgrade().current


def test_aupgrade_awaits_and_the_blocking_call_is_refused_on_the_loop(
    tmp_path: pathlib.Path,
) -> None:
    url = old_vault_url("sqlite", 2, tmp_path)

    async def main() -> statevault.UpgradeReport:
        async with await statevault.open_async(url, create=False) as vault:
            with pytest.raises(statevault.BlockingCallError):
                vault.upgrade()
            dry = await vault.aupgrade(dry_run=True)
            assert (dry.source, dry.dry_run, vault.format_version) == (2, True, 2)
            return await vault.aupgrade()

    report = asyncio.run(main())
    assert (report.source, report.target, report.current) == (2, NEWEST, False)
    with statevault.open(url, create=False) as vault:
        assert vault.format_version == NEWEST
