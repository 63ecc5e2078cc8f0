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
from collections.abc import Callable
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


class LoopLock:
    """An `asyncio.Lock` per event loop (one lock cannot serve two loops).

    Serializes a handle's async calls: calls driven on a loop (`statevault.bridge`)
    share its thread, so the handle's thread lock cannot keep them apart.
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


class ThreadedContext(Generic[T]):
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

    async def exit(self, error: BaseException | None) -> None:
        """Leave the context with the body's `error` (None: it succeeded); raise what exit raised.

        The body's own error is not raised again here: the caller re-raises it.
        """
        self._outcome.put(error)
        try:
            await self._exited
        except BaseException as exc:
            if exc is not error:
                raise

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
