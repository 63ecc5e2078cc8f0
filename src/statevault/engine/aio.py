"""The async API's plumbing: running blocking calls off the event loop, and refusing
blocking calls made on it.

Every `a`-method runs its blocking twin through `Engine.offload`: a thread of the
loop's default executor (`asyncio.to_thread`), unless the backend offers a native way
(`OffloadingBackend`; PostgreSQL drives brief calls on the loop's own thread, their
I/O awaited: `statevault.bridge`). The twin then checks that no event loop runs on its
thread, which holds on an executor thread and in a driven call, and fails, with a
message naming the `a`-method, when the blocking call was made on the loop itself.

`asyncio` is imported only inside coroutines: they run only under a loop, so it is
loaded already, and `import statevault` does not pay for it (about 12 ms).
"""

from __future__ import annotations

import queue
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from statevault import bridge
from statevault.errors import BlockingCallError

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")


def in_event_loop() -> bool:
    """True if an event loop runs on this thread (where blocking would stall it).

    Code driven by `bridge.drive` runs on the loop's thread but does not block it: its
    waits are awaits.
    """
    aio = sys.modules.get("asyncio")
    # No asyncio loaded means no loop running: the common case costs one dict lookup.
    return aio is not None and aio._get_running_loop() is not None and not bridge.driven()


def refuse_in_event_loop(call: str, instead: str) -> None:
    """Raise `BlockingCallError` if an event loop runs on this thread.

    Args:
        call: the blocking call, as the user wrote it (`run.save()`).
        instead: what to write instead (`await run.asave()`).
    """
    if in_event_loop():
        raise BlockingCallError(call, instead)


class HandleLock:
    """A handle's re-entrant lock, held by a thread or by one driven call.

    Code driven by `bridge.drive` runs in greenlets on the loop's thread, so a lock
    owned by threads would let two driven calls in at once; this one is owned by the
    greenlet. And blocking the loop's thread on a lock that another thread holds (a
    blocking transaction left open while its thread waits) would stall every task of
    the loop until that thread lets go, so driven code polls instead, pausing only
    its own greenlet.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: object = None
        self._depth = 0

    def __enter__(self) -> None:
        me = bridge.current()
        if self._owner == me:
            self._depth += 1
            return
        if not self._lock.acquire(blocking=False):
            if bridge.driven():
                pause = 0.0005
                while not self._lock.acquire(blocking=False):
                    bridge.sleep(pause)
                    pause = min(pause * 2, 0.02)
            else:
                self._lock.acquire()
        self._owner, self._depth = me, 1

    def __exit__(self, *exc_info: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            self._lock.release()


class LoopLock:
    """An `asyncio.Lock` per event loop (one lock cannot serve two loops).

    Queues a handle's async calls on each loop, in order, so that calls driven on the
    loop (`statevault.bridge`) wait for each other here rather than poll the handle's
    `HandleLock`.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = threading.Lock()

    def __call__(self) -> asyncio.Lock:
        """The running loop's lock."""
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        loop = asyncio.get_running_loop()
        with self._guard:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
            return lock


class _HeldContext:
    """What `ThreadedContext` and `DrivenContext` share: leaving the held context."""

    def _deliver(self, error: BaseException | None) -> Awaitable[Any]:
        """Hand the body's outcome to whoever holds the context; returns what ends with it."""
        raise NotImplementedError

    async def exit(self, error: BaseException | None) -> None:
        """Leave the context with the body's `error` (None: it succeeded); raise what exit raised.

        The body's own error is not raised again here: the caller re-raises it.
        """
        try:
            await self._deliver(error)
        except BaseException as exc:
            if exc is not error:
                raise


class ThreadedContext(_HeldContext, Generic[T]):
    """A blocking context manager entered and exited on one thread of its own.

    For context managers that hold a thread-owned lock across their block (a
    transaction holds its `Run`'s lock): entering on one executor thread and exiting
    on another would break the lock, and holding an executor thread for the whole
    block could starve the small default executor. The `async with` body runs on
    the loop meanwhile; only the enter and exit run on the thread.
    """

    def __init__(self, factory: Callable[[], AbstractContextManager[T]], *, name: str) -> None:
        self._factory = factory
        self._name = name
        self._outcome: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._entered_ok = False
        self._abandoned = False

    async def enter(self) -> T:
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        loop = asyncio.get_running_loop()
        self._loop = loop
        self._entered: asyncio.Future[Any] = loop.create_future()
        self._exited: asyncio.Future[None] = loop.create_future()
        threading.Thread(target=self._run, name=self._name, daemon=True).start()
        try:
            value: T = await self._entered
        except BaseException as exc:
            # Cancelled while entering: the thread must not wait for a body that will
            # never run; it rolls back as soon as it has entered, and tells no one.
            self._abandoned = True
            self._outcome.put(exc)
            raise
        return value

    def _deliver(self, error: BaseException | None) -> Awaitable[Any]:
        self._outcome.put(error)
        return self._exited

    def _run(self) -> None:
        try:
            with self._factory() as value:
                self._entered_ok = True
                self._report(self._entered, value, None)
                error = self._outcome.get()
                if error is not None:
                    raise error
        except BaseException as exc:
            self._report(self._exited if self._entered_ok else self._entered, None, exc)
            return
        self._report(self._exited, None, None)

    def _report(self, future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
        if self._abandoned:
            return

        def settle() -> None:
            if future.done():  # the awaiting task was cancelled
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        with suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(settle)


_abandoned: set[asyncio.Task[None]] = set()
"""Driven contexts whose callers were cancelled while they entered: referenced here
until they end, since the loop keeps only weak references to its tasks."""


class DrivenContext(_HeldContext, Generic[T]):
    """A blocking context manager held in one greenlet on the loop (`statevault.bridge`).

    The twin of `ThreadedContext` for backends whose calls are driven on the loop: the
    greenlet enters, then pauses (`bridge.wait_for`) while the `async with` body runs,
    and exits when the body is done, all on the loop's thread, with no thread made or
    woken. What it holds across the body must be owned by the greenlet, not the thread
    (`HandleLock`).
    """

    def __init__(self, factory: Callable[[], AbstractContextManager[T]]) -> None:
        self._factory = factory

    async def enter(self) -> T:
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        loop = asyncio.get_running_loop()
        self._entered: asyncio.Future[T] = loop.create_future()
        self._outcome: asyncio.Future[BaseException | None] = loop.create_future()
        self._held = loop.create_task(bridge.drive(self._hold))
        try:
            return await asyncio.shield(self._entered)
        except BaseException as exc:
            if not self._outcome.done():
                self._outcome.set_result(exc)
            if self._held.done():  # entering failed
                with suppress(BaseException):
                    await self._held
            else:
                # Cancelled while it enters (it may wait for the handle, held by a
                # thread): it unwinds once it has entered, and nobody waits for it.
                _abandoned.add(self._held)
                self._held.add_done_callback(_abandoned.discard)
            raise

    def _deliver(self, error: BaseException | None) -> Awaitable[Any]:
        self._outcome.set_result(error)
        return self._held

    def _hold(self) -> None:
        entered = False
        try:
            with self._factory() as value:
                entered = True
                if not self._entered.done():  # else the caller gave up while it entered
                    self._entered.set_result(value)
                error = bridge.wait_for(self._outcome)
                if error is not None:
                    raise error
        except BaseException as exc:
            if not entered:
                if not self._outcome.done():  # the caller still waits to hear of it
                    self._entered.set_exception(exc)
                return
            raise
