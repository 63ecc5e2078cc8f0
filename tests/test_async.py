"""The async API: open_async, the a-twins of Run and Vault, and refusals on the loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import statevault
from statevault import ops


def test_async_round_trip(vault_url: str) -> None:
    async def main() -> dict[str, Any]:
        async with await statevault.open_async(vault_url) as vault:
            run = vault.run("order-42")
            first = await run.asave({"step": 1, "items": ["a"]}, meta={"by": "async"})
            async with run.atransaction() as s:
                s["items"].append("b")
                s["step"] += 1
            await run.aapply([ops.increment("step")])
            folded = await run.acheckpoint()
            head = await run.ahead()
            assert head is not None and head.seq == folded.seq == 4
            assert (await run.acheckpoint_at(1)).meta == {"by": "async"}
            assert [c.seq for c in await run.acheckpoints()] == [4, 3, 2, 1]
            assert await run.aget("items.1") == "b"
            assert await run.aload(at=first.seq) == {"step": 1, "items": ["a"]}
            assert await vault.aruns() == ["order-42"]
            assert (await vault.averify()).ok
            assert (await vault.arepair()).ok
            result: dict[str, Any] = await run.aload()
            assert await vault.adelete_run("order-42") is True
            return result

    assert asyncio.run(main()) == {"step": 3, "items": ["a", "b"]}


def test_atransaction_rolls_back_and_reports_conflicts(vault_url: str) -> None:
    async def main() -> None:
        async with await statevault.open_async(vault_url) as vault:
            run = vault.run("r")
            await run.asave({"n": 0})
            with pytest.raises(KeyError):  # noqa: PT012 - the block's end is the commit
                async with run.atransaction() as s:
                    s["n"] = 99
                    raise KeyError("changed my mind")
            assert await run.aload() == {"n": 0}
            other = vault.run("r")
            async with other.atransaction() as s:
                s["n"] = 1
            with pytest.raises(statevault.ConflictError):
                async with run.atransaction() as s:
                    s["n"] = -1
            async with run.atransaction() as s:  # the retry starts from the newer state
                s["n"] += 1
            assert await vault.run("r").aload() == {"n": 2}

    asyncio.run(main())


def test_many_tasks_at_once(vault_url: str) -> None:
    async def worker(vault: statevault.Vault, i: int) -> int:
        run = vault.run(f"task-{i}")
        for step in range(5):
            await run.asave({"i": i, "step": step})
        state = await run.aload()
        return int(state["step"])

    async def main() -> list[int]:
        async with await statevault.open_async(vault_url) as vault:
            return await asyncio.gather(*(worker(vault, i) for i in range(20)))

    assert asyncio.run(main()) == [4] * 20


def test_alease_fences_other_writers(vault_url: str) -> None:
    async def main() -> None:
        async with await statevault.open_async(vault_url) as vault:
            run = vault.run("job")
            async with run.alease(ttl=10, owner="async-worker") as lease:
                await run.asave({"by": lease.owner})
                with pytest.raises(statevault.LeaseHeld):
                    await vault.run("job").asave({"by": "other"}, force=True)
                waiter = asyncio.create_task(_take_after(vault))
                await asyncio.sleep(0.2)
                assert not waiter.done()
            assert await waiter == "waiter"
            assert await vault.run("job").aload() == {"by": "waiter"}

    asyncio.run(main())


async def _take_after(vault: statevault.Vault) -> str:
    run = vault.run("job")
    async with run.alease(ttl=10, owner="waiter", wait=10) as lease:
        await run.aload()
        await run.asave({"by": lease.owner})
        return lease.owner


def test_blocking_calls_on_the_loop_are_refused(vault_url: str) -> None:
    async def main() -> None:
        with pytest.raises(statevault.BlockingCallError, match=r"open_async"):
            statevault.open(vault_url)
        vault = await statevault.open_async(vault_url)
        run = vault.run("r")  # a plain call: it reads nothing on the loop
        refusals: list[tuple[Any, str]] = [
            (lambda: run.save({}), "await run.asave()"),
            (run.load, "await run.aload()"),
            (lambda: run.get("x"), "await run.aget()"),
            (lambda: run.apply([]), "await run.aapply()"),
            (run.checkpoint, "await run.acheckpoint()"),
            (run.checkpoints, "await run.acheckpoints()"),
            (lambda: run.head, "await run.ahead()"),
            (lambda: run.transaction().__enter__(), "async with run.atransaction()"),
            (lambda: run.lease().__enter__(), "async with run.alease()"),
            (vault.runs, "await vault.aruns()"),
            (vault.verify, "await vault.averify()"),
            (vault.repair, "await vault.arepair()"),
            (vault.watch, "vault.awatch()"),
            (vault.close, "await vault.aclose()"),
        ]
        for call, instead in refusals:
            with pytest.raises(statevault.BlockingCallError) as refused:
                call()
            assert instead in str(refused.value)
        with pytest.raises(statevault.BlockingCallError) as refused:
            run.save({})
        assert "run.save() called inside a running event loop" in str(refused.value)
        # The handle learns its head at its first call, off the loop; from then on it
        # commits only on top of what it has seen.
        await vault.run("r").asave({"v": 1})
        assert (await run.asave({"v": 2})).seq == 2
        await vault.run("r").asave({"v": 3})
        with pytest.raises(statevault.ConflictError):
            await run.asave({"v": "stale"})
        await vault.aclose()

    asyncio.run(main())


def test_sync_api_still_works_off_the_loop(vault_url: str) -> None:
    """A thread without a running loop (an executor thread) may use the blocking API."""

    async def main() -> Any:
        def blocking() -> Any:
            with statevault.open(vault_url) as vault:
                vault.run("r").save({"from": "thread"})
                return vault.run("r").load()

        return await asyncio.to_thread(blocking)

    assert asyncio.run(main()) == {"from": "thread"}


def test_cancelled_atransaction_commits_nothing_and_frees_the_handle(vault_url: str) -> None:
    """A task cancelled while its transaction waits to begin leaves no thread holding the run."""

    async def main() -> None:
        async with await statevault.open_async(vault_url) as vault:
            run = vault.run("r")
            await run.asave({"n": 0})
            busy = asyncio.Event()
            finish = threading.Event()

            def hold_the_handle() -> None:
                with run.transaction() as s:  # holds the handle until told to finish
                    s["n"] = 1
                    loop.call_soon_threadsafe(busy.set)
                    finish.wait(10)

            loop = asyncio.get_running_loop()
            holder = asyncio.create_task(asyncio.to_thread(hold_the_handle))
            await busy.wait()

            async def change() -> None:
                async with run.atransaction() as s:
                    s["n"] = 99

            waiting = asyncio.create_task(change())
            await asyncio.sleep(0.1)  # blocked: the other transaction holds the handle
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            finish.set()
            await holder
            async with run.atransaction() as s:  # the handle is free again
                s["n"] += 1
            assert await vault.run("r").aload() == {"n": 2}

    asyncio.run(main())
