"""Blocking code run on an event loop's own thread, its waits turned into awaits.

The async API on PostgreSQL runs each call's ordinary (blocking) code in a greenlet on
the loop's thread (`drive`). Where that code would block on the database, the backend
hands the driver a coroutine of psycopg's async API instead (`wait_for`): the greenlet
pauses, the loop awaits the coroutine among its other tasks, and the greenlet resumes
with the result. One copy of every statement and every retry rule serves both APIs,
and a call costs no thread hop.

Inside a driven greenlet, code must not block the thread for long: the loop is stalled
meanwhile. Work that may take long (encoding a large state) goes to a worker thread
with `off_loop`. Thread locks are owned by threads, and every greenlet of a loop
shares its thread: a lock held across a wait must be owned by the greenlet instead
(`current()`, as `engine.aio.HandleLock` does), and waited for by polling (`sleep`).

`greenlet` is imported on first use: without it (the `postgres` extra installs it),
`available()` is False and callers use threads.

Example:
    async def count() -> int:
        return await drive(lambda: backend.head("r"))  # awaits inside, on this loop
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from greenlet import greenlet as Greenlet

T = TypeVar("T")


class _Driven:
    """The mark of a greenlet run by `drive` (a subclass, so `getcurrent()` tells)."""


_driven_class: type[Greenlet] | None = None


def available() -> bool:
    """True if greenlets can be used (the `greenlet` package is installed)."""
    return _driven_class is not None or importlib.util.find_spec("greenlet") is not None


def _greenlet_class() -> type[Greenlet]:
    global _driven_class  # noqa: PLW0603 - made once, on first use
    if _driven_class is None:
        from greenlet import greenlet  # noqa: PLC0415 - optional, loaded when first driven

        _driven_class = type("DrivenGreenlet", (greenlet, _Driven), {})
    return _driven_class


def driven() -> bool:
    """True if this code runs inside `drive`, where `wait_for` may be called."""
    if _driven_class is None:
        return False
    from greenlet import getcurrent  # noqa: PLC0415 - loaded already

    return isinstance(getcurrent(), _Driven)


def current() -> object:
    """Who runs this code: the driven greenlet, or else this thread (its ident)."""
    if _driven_class is not None:
        from greenlet import getcurrent  # noqa: PLC0415 - loaded already

        here = getcurrent()
        if isinstance(here, _Driven):
            return here
    return threading.get_ident()


async def drive(call: Callable[[], T]) -> T:
    """Run `call` on this thread, awaiting (on the running loop) each `wait_for` it makes.

    If the awaiting task is cancelled, `CancelledError` is raised inside `call` at the
    wait it was in, so its `with` blocks unwind (a transaction rolls back, a connection
    returns to its pool) before the cancellation reaches the caller.
    """
    from greenlet import getcurrent  # noqa: PLC0415 - imported by _greenlet_class

    child = _greenlet_class()(call, getcurrent())
    request = child.switch()
    while not child.dead:
        try:
            result = await request
        except BaseException as exc:
            request = child.throw(exc)
        else:
            request = child.switch(result)
    value: T = request
    return value


def wait_for(awaitable: Awaitable[T]) -> T:
    """Inside `drive`: pause until the loop has awaited `awaitable`; its result or error."""
    from greenlet import getcurrent  # noqa: PLC0415 - loaded already: we are driven

    current = getcurrent()
    parent = current.parent
    if not isinstance(current, _Driven) or parent is None:
        raise RuntimeError("wait_for() is only allowed inside bridge.drive()")
    value: T = parent.switch(awaitable)
    return value


@contextmanager
def entered(manager: AbstractAsyncContextManager[T]) -> Iterator[T]:
    """Inside `drive`: an async context manager used as a plain one."""
    value = wait_for(manager.__aenter__())
    try:
        yield value
    except BaseException as exc:
        if not wait_for(manager.__aexit__(type(exc), exc, exc.__traceback__)):
            raise
    else:
        wait_for(manager.__aexit__(None, None, None))


def off_loop(call: Callable[[], T]) -> T:
    """`call()` on a worker thread if driven (the loop runs meanwhile), else right here."""
    if not driven():
        return call()
    import asyncio  # noqa: PLC0415 - loaded already: a loop is running

    return wait_for(asyncio.get_running_loop().run_in_executor(None, call))


def sleep(seconds: float) -> None:
    """`time.sleep`, or a pause of this greenlet alone when driven."""
    if driven():
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        wait_for(asyncio.sleep(seconds))
        return
    import time  # noqa: PLC0415 - cheap, and only on a retry

    time.sleep(seconds)
