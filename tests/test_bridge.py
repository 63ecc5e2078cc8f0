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
