"""`statevault.bridge`: blocking code driven on an event loop, its waits awaited."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("greenlet")

from statevault import bridge
from statevault.engine.aio import in_event_loop


def test_a_driven_call_returns_its_value_and_awaits_on_the_loop() -> None:
    async def main() -> tuple[int, bool, bool]:
        def call() -> tuple[int, bool, bool]:
            value = bridge.wait_for(asyncio.sleep(0, result=21))
            return value * 2, bridge.driven(), in_event_loop()

        return await bridge.drive(call)

    assert asyncio.run(main()) == (42, True, False)
    assert not bridge.driven()


def test_errors_reach_the_driven_code_where_it_waited_and_then_the_caller() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise KeyError("from the loop")

    def call() -> str:
        with pytest.raises(KeyError, match="from the loop"):
            bridge.wait_for(failing())
        raise ValueError("from the driven code")

    with pytest.raises(ValueError, match="from the driven code"):
        asyncio.run(bridge.drive(call))


def test_wait_for_outside_drive_is_refused() -> None:
    async def main() -> None:
        coroutine = asyncio.sleep(0)
        try:
            with pytest.raises(RuntimeError, match=r"only allowed inside bridge\.drive"):
                bridge.wait_for(coroutine)
        finally:
            coroutine.close()

    asyncio.run(main())


def test_driven_calls_interleave_while_they_wait() -> None:
    order: list[str] = []

    def slow() -> None:
        order.append("slow starts")
        bridge.sleep(0.05)
        order.append("slow ends")

    def quick() -> None:
        order.append("quick runs")

    async def main() -> None:
        await asyncio.gather(bridge.drive(slow), bridge.drive(quick))

    asyncio.run(main())
    assert order == ["slow starts", "quick runs", "slow ends"]


def test_cancellation_unwinds_the_driven_code_which_may_still_wait() -> None:
    unwound: list[str] = []

    def call(ready: asyncio.Event) -> None:
        ready.set()
        try:
            bridge.wait_for(asyncio.sleep(60))
        finally:
            # A cleanup that itself waits (a rollback, returning a connection).
            unwound.append(bridge.wait_for(asyncio.sleep(0, result="cleaned up")))

    async def main() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(bridge.drive(lambda: call(ready)))
        await ready.wait()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert unwound == ["cleaned up"]


def test_entered_runs_an_async_context_manager_and_passes_it_the_error() -> None:
    events: list[Any] = []

    @asynccontextmanager
    async def resource(suppress: bool) -> AsyncIterator[str]:
        events.append("enter")
        try:
            yield "handle"
        except KeyError as exc:
            events.append(("saw", str(exc)))
            if not suppress:
                raise
        finally:
            events.append("exit")

    def call() -> None:
        with bridge.entered(resource(suppress=False)) as handle:
            events.append(handle)
        with pytest.raises(KeyError), bridge.entered(resource(suppress=False)):
            raise KeyError("kept")
        with bridge.entered(resource(suppress=True)):
            raise KeyError("swallowed")

    asyncio.run(bridge.drive(call))
    assert events == [
        "enter",
        "handle",
        "exit",
        "enter",
        ("saw", "'kept'"),
        "exit",
        "enter",
        ("saw", "'swallowed'"),
        "exit",
    ]


def test_off_loop_uses_a_worker_thread_only_when_driven() -> None:
    loop_thread = threading.get_ident()

    def where() -> int:
        return threading.get_ident()

    assert bridge.off_loop(where) == loop_thread

    async def main() -> int:
        return await bridge.drive(lambda: bridge.off_loop(where))

    assert asyncio.run(main()) != loop_thread


def test_a_handle_lock_keeps_driven_calls_apart() -> None:
    from statevault.engine.aio import HandleLock  # noqa: PLC0415 - the lock under test

    lock = HandleLock()
    order: list[str] = []

    def driven(name: str) -> None:
        with lock, lock:  # re-entrant for its holder
            order.append(f"{name} in")
            bridge.sleep(0.05)
            order.append(f"{name} out")

    async def main() -> None:
        first = asyncio.create_task(bridge.drive(lambda: driven("a")))
        await asyncio.sleep(0.01)  # "a" holds the lock, paused on the loop's thread
        await asyncio.gather(first, bridge.drive(lambda: driven("b")))

    asyncio.run(main())
    assert order == ["a in", "a out", "b in", "b out"]


def test_a_driven_call_waiting_for_a_thread_does_not_stall_the_loop() -> None:
    from statevault.engine.aio import HandleLock  # noqa: PLC0415 - the lock under test

    lock = HandleLock()
    order: list[str] = []
    released = threading.Event()

    def thread_holder() -> None:
        with lock:
            order.append("thread in")
            # Released by the loop after its ticks; a stalled loop never gets there.
            order.append("thread out" if released.wait(2) else "thread gave up")

    def driven() -> None:
        with lock:
            order.append("driven in")

    async def main() -> int:
        holder = threading.Thread(target=thread_holder)
        holder.start()
        while not order:
            await asyncio.sleep(0.001)
        call = asyncio.create_task(bridge.drive(driven))
        ticks = 0
        for _ in range(10):  # the loop runs on while the call waits
            await asyncio.sleep(0.005)
            ticks += 1
        released.set()
        await call
        holder.join()
        return ticks

    assert asyncio.run(main()) == 10
    assert order == ["thread in", "thread out", "driven in"]
