"""Vault.watch / Vault.awatch: new checkpoints as they commit, on every backend."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import statevault


def _commit_later(
    vault: statevault.Vault, plan: list[tuple[str, dict[str, int]]]
) -> threading.Thread:
    def commit() -> None:
        time.sleep(0.05)
        for run_id, state in plan:
            vault.run(run_id).save(state, force=True)

    thread = threading.Thread(target=commit)
    thread.start()
    return thread


def test_watch_reports_new_checkpoints_in_order(vault: statevault.Vault) -> None:
    vault.run("order-1").save({"n": 0})  # before the watch: not reported
    with vault.watch(prefix="order-", poll=0.02, timeout=2) as feed:
        writer = _commit_later(
            vault,
            [
                ("order-1", {"n": 1}),
                ("order-2", {"n": 1}),
                ("other", {"n": 1}),
                ("order-1", {"n": 2}),
            ],
        )
        seen = []
        for checkpoint in feed:
            seen.append((checkpoint.run_id, checkpoint.seq))
            if len(seen) == 3:
                feed.stop()
        writer.join()
    assert sorted(seen) == [("order-1", 2), ("order-1", 3), ("order-2", 1)]
    assert seen.index(("order-1", 2)) < seen.index(("order-1", 3))


def test_watch_named_runs_and_timeout(vault: statevault.Vault) -> None:
    writer = _commit_later(vault, [("a", {"v": 1}), ("b", {"v": 1}), ("a", {"v": 2})])
    started = time.monotonic()
    got = [(c.run_id, c.seq, c.kind) for c in vault.watch(["a"], poll=0.02, timeout=0.5)]
    writer.join()
    assert got == [("a", 1, "state"), ("a", 2, "state")]
    assert time.monotonic() - started < 5


def test_watch_sees_every_checkpoint_of_a_burst(vault: statevault.Vault) -> None:
    run = vault.run("busy")
    run.save({"i": 0})
    feed = vault.watch("busy", poll=0.01, timeout=1)
    for i in range(1, 40):
        run.save({"i": i})
    seqs = [c.seq for c in feed]
    assert seqs == list(range(2, 41))


def test_watch_follows_a_deleted_run_when_it_starts_again(vault: statevault.Vault) -> None:
    vault.run("r").save({"v": 1})
    vault.run("r").save({"v": 2}, force=True)
    feed = vault.watch("r", poll=0.01, timeout=0.5)
    vault.delete_run("r")
    time.sleep(0.1)
    vault.run("r").save({"v": "again"})
    assert [(c.seq, c.kind) for c in feed] == [(1, "state")]


def test_stop_from_another_thread(vault: statevault.Vault) -> None:
    feed = vault.watch(poll=0.05)
    threading.Timer(0.2, feed.stop).start()
    started = time.monotonic()
    assert list(feed) == []
    assert time.monotonic() - started < 3


def test_awatch(vault: statevault.Vault) -> None:
    async def follow() -> list[tuple[str, int]]:
        got = []
        async with vault.awatch(prefix="job", poll=0.02, timeout=1) as feed:
            task = asyncio.create_task(asyncio.to_thread(_save_two, vault))
            async for checkpoint in feed:
                got.append((checkpoint.run_id, checkpoint.seq))
                if len(got) == 2:
                    feed.stop()
            await task
        return got

    got = asyncio.run(follow())
    assert got == [("job-1", 1), ("job-1", 2)]


def _save_two(vault: statevault.Vault) -> None:
    time.sleep(0.1)
    run = vault.run("job-1")
    run.save({"a": 1})
    run.save({"a": 2})


@pytest.mark.parametrize(("poll", "timeout"), [(0, None), (-1, None), (1, -1)])
def test_bad_arguments(vault: statevault.Vault, poll: float, timeout: float | None) -> None:
    with pytest.raises(ValueError):
        vault.watch(poll=poll, timeout=timeout)
