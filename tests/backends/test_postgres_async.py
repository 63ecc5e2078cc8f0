"""The async API on PostgreSQL: brief calls driven on the loop with psycopg's async
connections, long ones on threads, and what that asks of handles, loops and faults."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

import statevault
from postgres_support import PG_DSN, pg_url
from statevault import ops

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("greenlet")

from statevault import bridge  # noqa: E402 - after the importorskip
from statevault.backends.postgres import PostgresBackend  # noqa: E402
from statevault.engine import aio  # noqa: E402
from statevault.engine.checkpoints import DRIVEN_LIMIT, Engine  # noqa: E402
from statevault.tree import TreeReader  # noqa: E402

pytestmark = pytest.mark.postgres


def _backend(vault: statevault.Vault) -> PostgresBackend:
    backend = vault._backend
    assert isinstance(backend, PostgresBackend)
    return backend


def _spy(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, seen: list[tuple[int, bool]]
) -> None:
    """Record (thread, driven) of each call of `owner.name`."""
    original: Callable[..., Any] = getattr(owner, name)

    def spied(*args: Any, **kwargs: Any) -> Any:
        seen.append((threading.get_ident(), bridge.driven()))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spied)


def test_brief_calls_are_driven_on_the_loop_and_long_ones_get_a_thread(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits: list[tuple[int, bool]] = []
    verifies: list[tuple[int, bool]] = []

    async def main() -> int:
        async with await statevault.open_async(pg_url(pg_schema)) as vault:
            _spy(monkeypatch, _backend(vault), "commit_checkpoint", commits)
            _spy(monkeypatch, vault, "verify", verifies)
            run = vault.run("r")
            await run.asave({"n": 1})
            await run.aapply([ops.increment("n")])
            assert await run.aload() == {"n": 2}
            assert (await vault.averify()).ok
            pool, guard = _backend(vault)._driven_pool, _backend(vault)._driven_pool_guard
            assert pool is not None and guard is not None
        assert guard.done(), "closing stopped the task that closes the pool at shutdown"
        assert pool.closed and _backend(vault)._driven_pool is None
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert commits == [(loop_thread, True)] * 2
    assert len(verifies) == 1
    assert verifies[0][0] != loop_thread, "verify may run long: it gets a thread"


def test_a_transaction_is_held_on_the_loop_without_a_thread(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a transaction on PostgreSQL needs no thread of its own")

    monkeypatch.setattr(aio.ThreadedContext, "__init__", no_thread)
    commits: list[tuple[int, bool]] = []

    async def main() -> int:
        async with await statevault.open_async(pg_url(pg_schema)) as vault:
            _spy(monkeypatch, _backend(vault), "commit_checkpoint", commits)
            run = vault.run("r")
            await run.asave({"n": 0, "items": []})
            async with run.atransaction() as s:
                s["n"] += 1
                s["items"].append("a")
            with pytest.raises(KeyError):  # noqa: PT012 - the block's end is the commit
                async with run.atransaction() as s:
                    s["n"] = 99
                    raise KeyError("rolled back")
            with pytest.raises(statevault.RunNotFound):
                async with vault.run("missing").atransaction():
                    pass
            assert await vault.run("r").aload() == {"n": 1, "items": ["a"]}
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert commits == [(loop_thread, True)] * 2


def test_tasks_sharing_one_handle_take_turns(pg_schema: str) -> None:
    """Driven calls share the loop's thread, where the handle's lock cannot part them."""

    async def main() -> list[int]:
        async with await statevault.open_async(pg_url(pg_schema)) as vault:
            run = vault.run("shared")
            await run.asave({"n": 0})

            async def bump(times: int) -> None:
                for _ in range(times):
                    await run.aapply([ops.increment("n")])

            await asyncio.gather(*(bump(5) for _ in range(20)))
            assert await vault.run("shared").aload() == {"n": 100}
            return [c.seq for c in await run.acheckpoints()]

    seqs = asyncio.run(main())
    assert sorted(seqs, reverse=True) == seqs
    assert len(set(seqs)) == len(seqs) >= 101


def test_large_states_are_encoded_and_decoded_off_the_loop(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encodes: list[tuple[int, bool]] = []
    loads: list[tuple[int, bool]] = []
    _spy(monkeypatch, Engine, "_encode", encodes)
    _spy(monkeypatch, TreeReader, "load", loads)
    big = {"blob": bytes(range(256)) * (2 * DRIVEN_LIMIT // 256), "n": 0}

    async def main() -> int:
        async with await statevault.open_async(pg_url(pg_schema)) as vault:
            small, large = vault.run("small"), vault.run("large")
            await small.asave({"n": 0})  # a first save: its size is unknown
            await small.asave({"n": 1})  # known small: encoded on the loop
            await large.asave(big)
            await large.asave({**big, "n": 1})
            fresh = vault.run("large")
            assert (await fresh.aload())["n"] == 1
            assert (await vault.run("small").aload()) == {"n": 1}
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    on_loop = [(thread == loop_thread) for thread, _ in encodes]
    assert on_loop == [False, True, False, False]
    assert [(thread == loop_thread) for thread, _ in loads] == [False, True]


def test_a_cancelled_save_rolls_back_and_returns_its_connection(pg_schema: str) -> None:
    """Cancelled while its commit waits on a row lock: nothing lands, nothing leaks."""
    url = pg_url(pg_schema, pool_size="2")

    async def main() -> None:
        async with await statevault.open_async(url) as vault:
            run = vault.run("r")
            await run.asave({"n": 0})
            with psycopg.connect(PG_DSN, autocommit=True) as blocker:
                blocker.execute("BEGIN")
                blocker.execute(
                    f"SELECT 1 FROM {pg_schema}.statevault_checkpoints "
                    "WHERE run_id = 'r' FOR UPDATE"
                )
                task = asyncio.create_task(run.asave({"n": 1}))
                await asyncio.sleep(0.3)  # the commit now waits for the row lock
                assert not task.done()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                blocker.execute("ROLLBACK")
            assert await vault.run("r").aload() == {"n": 0}
            pool = _backend(vault)._driven_pool
            assert pool is not None
            stats = pool.get_stats()
            assert stats["pool_available"] == stats["pool_size"], "the connection came back"
            await asyncio.gather(*(vault.run(f"after-{i}").asave({"i": i}) for i in range(6)))
            head = await vault.run("r").ahead()
            assert head is not None and head.seq == 1
            assert (await vault.averify()).ok

    asyncio.run(main())


def test_a_second_loop_takes_over_once_the_first_has_closed(pg_schema: str) -> None:
    with statevault.open(pg_url(pg_schema)) as vault:
        run = vault.run("r")
        asyncio.run(run.asave({"n": 1}))
        first_pool = _backend(vault)._driven_pool
        asyncio.run(run.aapply([ops.increment("n")]))
        assert _backend(vault)._driven_pool is not first_pool
        assert run.load() == {"n": 2}


def test_a_loop_running_beside_the_driving_one_uses_threads(pg_schema: str) -> None:
    other_result: list[Any] = []

    async def other_loop(vault: statevault.Vault) -> Any:
        driven_pool = _backend(vault)._driven_pool
        await vault.run("other").asave({"from": "thread"})
        assert _backend(vault)._driven_pool is driven_pool, "the first loop keeps its pool"
        return await vault.run("other").aload()

    async def main() -> None:
        async with await statevault.open_async(pg_url(pg_schema)) as vault:
            await vault.run("main").asave({"from": "main"})
            thread = threading.Thread(
                target=lambda: other_result.append(asyncio.run(other_loop(vault)))
            )
            thread.start()
            while thread.is_alive():
                await vault.run("main").aapply([ops.set("tick", 1)])
                await asyncio.sleep(0.01)
            thread.join()

    asyncio.run(main())
    assert other_result == [{"from": "thread"}]


def test_terminated_connections_are_retried_by_driven_calls(pg_schema: str) -> None:
    name = f"sv_{pg_schema}"

    async def main() -> None:
        async with await statevault.open_async(pg_url(pg_schema, application_name=name)) as vault:
            run = vault.run("r")
            for n in range(10):
                await run.asave({"n": n})
                with psycopg.connect(PG_DSN, autocommit=True) as conn:
                    killed = conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = %s",
                        (name,),
                    ).fetchall()
                assert killed
            assert await vault.run("r").aload() == {"n": 9}
            assert [c.seq for c in await run.acheckpoints()] == list(range(10, 0, -1))

    asyncio.run(main())


def test_many_tasks_with_cancellations_lose_and_duplicate_nothing(pg_schema: str) -> None:
    """32 tasks on 6 runs: shared and private handles, deltas and transactions, some
    cancelled mid-call. Every acknowledged change is in, once; a cancelled one is in at
    most once; each run's history is one line."""
    rng = random.Random(20261124)
    runs = [f"run-{i}" for i in range(6)]
    acked = dict.fromkeys(runs, 0)
    unknown = dict.fromkeys(runs, 0)
    tags: dict[str, set[str]] = {run_id: set() for run_id in runs}

    async def change(run: statevault.Run, run_id: str, tag: str, as_transaction: bool) -> None:
        while True:
            try:
                if as_transaction:
                    async with run.atransaction() as s:
                        s["count"] += 1
                        s["tags"].append(tag)
                else:
                    await run.aapply([ops.increment("count"), ops.append("tags", tag)])
                return
            except statevault.ConflictError:
                continue  # nothing was written; the handle now knows the newer head

    async def task(vault: statevault.Vault, shared: dict[str, statevault.Run], n: int) -> None:
        own = {run_id: vault.run(run_id) for run_id in runs}
        for step in range(12):
            run_id = rng.choice(runs)
            run = shared[run_id] if rng.random() < 0.6 else own[run_id]
            tag = f"t{n}-{step}"
            call = change(run, run_id, tag, as_transaction=rng.random() < 0.5)
            if rng.random() < 0.15:
                try:
                    await asyncio.wait_for(call, timeout=rng.choice([0.0, 0.0005, 0.002]))
                except TimeoutError:
                    unknown[run_id] += 1
                    continue
            else:
                await call
            acked[run_id] += 1
            tags[run_id].add(tag)

    async def main() -> dict[str, tuple[Any, list[int]]]:
        async with await statevault.open_async(pg_url(pg_schema, pool_size="4")) as vault:
            for run_id in runs:
                await vault.run(run_id).asave({"count": 0, "tags": []})
            shared = {run_id: vault.run(run_id) for run_id in runs}
            await asyncio.gather(*(task(vault, shared, n) for n in range(32)))
            found = {}
            for run_id in runs:
                fresh = vault.run(run_id)
                found[run_id] = (await fresh.aload(), [c.seq for c in await fresh.acheckpoints()])
            assert (await vault.averify()).ok
            return found

    found = asyncio.run(main())
    for run_id, (state, seqs) in found.items():
        assert seqs == list(range(len(seqs), 0, -1)), "one line, no gap"
        stored = state["tags"]
        assert len(stored) == len(set(stored)), "no change twice"
        assert tags[run_id] <= set(stored), "every acknowledged change is in"
        assert len(stored) <= acked[run_id] + unknown[run_id]
        assert state["count"] == len(stored)


def test_watchers_wait_on_the_loop_without_threads(pg_schema: str) -> None:
    """20 watchers on a vault of 2 connections: each listener's socket is watched by
    the loop, so none holds a thread (and none waits for another's to free)."""
    runs = [f"watched-{i}" for i in range(20)]

    async def watcher(vault: statevault.Vault, run_id: str) -> int:
        async with vault.awatch([run_id], poll=30, timeout=30) as feed:
            async for checkpoint in feed:
                return checkpoint.seq
        raise AssertionError(f"{run_id}: no checkpoint")

    async def main() -> list[int]:
        async with await statevault.open_async(pg_url(pg_schema, pool_size="2")) as vault:
            watching = [asyncio.create_task(watcher(vault, run_id)) for run_id in runs]
            listeners = 0
            while listeners < len(runs):  # every watcher has subscribed
                await asyncio.sleep(0.02)
                with psycopg.connect(PG_DSN, autocommit=True) as conn:
                    row = conn.execute(
                        f"SELECT count(*) FROM {pg_schema}.statevault_listeners"
                    ).fetchone()
                listeners = row[0] if row else 0
            for run_id in runs:
                await vault.run(run_id).asave({"run": run_id})
            seqs = await asyncio.wait_for(asyncio.gather(*watching), timeout=20)
            assert _backend(vault)._executor is None, "no thread was needed"
            return seqs

    assert asyncio.run(main()) == [1] * len(runs)
