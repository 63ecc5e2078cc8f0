"""Following runs as they commit: `Vault.watch` and `Vault.awatch`.

A watch remembers the head it last saw of each run and, at each look, reads the
checkpoints above it. Heads are the truth; how often it looks is all that differs
between backends. Without native notification it looks every `poll` seconds. A
backend with `capabilities.notify` wakes it when a run changes, and it still looks
every `poll` seconds in case a notification was lost (a dropped connection).

A run whose head fell below the one seen was deleted (and perhaps begun again): the
watch starts over on it from checkpoint 1.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Self

from statevault.backends.base import (
    ChangeListener,
    NotifyingBackend,
    StoredCheckpoint,
    check_run_id,
)
from statevault.engine.checkpoints import Checkpoint, Engine, Head
from statevault.engine.records import open_record

DEFAULT_POLL = 0.2


class _Follower:
    """The heads seen so far, and the reads that find what came after them."""

    def __init__(self, engine: Engine, run_ids: list[str] | None, prefix: str) -> None:
        self._engine = engine
        self._run_ids = run_ids
        self._prefix = prefix
        self._seen: dict[str, int] = {}

    def start(self) -> None:
        """Take the current heads: only checkpoints committed from now on are reported."""
        self._seen = self._heads()

    def _heads(self) -> dict[str, int]:
        backend = self._engine.backend
        runs = self._run_ids if self._run_ids is not None else backend.list_runs(self._prefix)
        return {run_id: backend.head(run_id) for run_id in runs}

    def news(self) -> list[Checkpoint]:
        """Checkpoints committed since the last look, oldest first per run."""
        found: list[Checkpoint] = []
        for run_id, head in self._heads().items():
            seen = self._seen.get(run_id, 0)
            if head < seen:
                seen = 0  # deleted since: start over on whatever it holds now
            for item in self._above(run_id, seen, head) if head > seen else []:
                record, sealed = open_record(item.record, run_id=run_id, seq=item.seq)
                found.append(self._engine.checkpoint(record, Head(item.seq, sealed).record_hash))
                seen = item.seq
            self._seen[run_id] = seen
        return found

    def _above(self, run_id: str, seen: int, head: int) -> list[StoredCheckpoint]:
        """The run's records above `seen`, oldest first, read newest first from the top.

        More may have committed since `head` was read; the read grows until it reaches
        down to `seen`, or an early record would be skipped.
        """
        limit = head - seen
        while True:
            stored = self._engine.backend.read_checkpoints(run_id, limit=limit)
            if not stored or stored[0].seq - len(stored) <= seen:
                return [item for item in reversed(stored) if item.seq > seen]
            limit = stored[0].seq - seen


class _Watch:
    """What the blocking and the async watch share: arguments, follower, stopping."""

    def __init__(
        self,
        engine: Engine,
        *,
        run_ids: list[str] | None,
        prefix: str,
        poll: float,
        timeout: float | None,
    ) -> None:
        if run_ids is not None:
            run_ids = [check_run_id(run_id) for run_id in run_ids]
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str; got {type(prefix).__qualname__}")
        if not poll > 0:
            raise ValueError(f"poll must be a positive number of seconds; got {poll!r}")
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"timeout must be seconds >= 0, or None; got {timeout!r}")
        self._engine = engine
        self._follower = _Follower(engine, run_ids, prefix)
        self._poll = poll
        self._timeout = timeout
        self._pending: list[Checkpoint] = []
        self._stopped = threading.Event()
        self._listener: ChangeListener | None = None
        self._last_news = time.monotonic()

    def stop(self) -> None:
        """End the iteration: the loop over it finishes (from any thread)."""
        self._stopped.set()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def _listen(self) -> None:
        backend = self._engine.backend
        if backend.capabilities.notify and isinstance(backend, NotifyingBackend):
            # Subscribed before the first heads are read: a commit between the two is
            # then either in the heads or wakes the first wait.
            self._listener = backend.listen()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _wait_budget(self) -> float | None:
        """Seconds to wait before the next look; None once the timeout has passed."""
        if self._timeout is None:
            return self._poll
        left = self._last_news + self._timeout - time.monotonic()
        return None if left <= 0 else min(self._poll, left)


class Watch(_Watch):
    """New checkpoints of the watched runs, as they commit. Made by `Vault.watch`.

    Iterate over it; the loop ends after `timeout` seconds without a new checkpoint,
    when `stop()` is called (from any thread), or at `break`. Use it in a `with`
    block, or call `close()`, to release its subscription promptly.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        run_ids: list[str] | None,
        prefix: str,
        poll: float,
        timeout: float | None,
    ) -> None:
        super().__init__(engine, run_ids=run_ids, prefix=prefix, poll=poll, timeout=timeout)
        self._listen()
        try:
            self._follower.start()
        except BaseException:
            self._close_listener()
            raise

    def __iter__(self) -> Iterator[Checkpoint]:
        return self

    def __next__(self) -> Checkpoint:
        while not self._pending:
            if self._stopped.is_set():
                self.close()
                raise StopIteration
            news = self._follower.news()
            if news:
                self._pending = news
                self._last_news = time.monotonic()
                break
            budget = self._wait_budget()
            if budget is None:
                self.close()
                raise StopIteration
            if self._listener is not None:
                self._listener.wait(budget)
            else:
                self._stopped.wait(budget)
        return self._pending.pop(0)

    def close(self) -> None:
        """Stop and release the subscription. Safe to call twice."""
        self._stopped.set()
        self._close_listener()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncWatch(_Watch):
    """`Watch` for `async for`. Made by `Vault.awatch`; reads run off the event loop."""

    _started = False

    def __aiter__(self) -> AsyncIterator[Checkpoint]:
        return self

    async def __anext__(self) -> Checkpoint:
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        engine = self._engine
        if not self._started:
            self._started = True
            await engine.offload(self._listen)
            await engine.offload(self._follower.start)
        while not self._pending:
            if self._stopped.is_set():
                await self.aclose()
                raise StopAsyncIteration
            news = await engine.offload(self._follower.news)
            if news:
                self._pending = news
                self._last_news = time.monotonic()
                break
            budget = self._wait_budget()
            if budget is None:
                await self.aclose()
                raise StopAsyncIteration
            listener = self._listener
            if listener is not None:
                # Driven on the loop where the backend can (PostgreSQL watches the
                # listener's socket there); else on a thread.
                await engine.offload(functools.partial(listener.wait, budget))
            else:
                # In short steps, so that `stop()` from another thread is seen soon.
                deadline = time.monotonic() + budget
                while not self._stopped.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        return self._pending.pop(0)

    async def aclose(self) -> None:
        """Stop and release the subscription. Safe to call twice."""
        self._stopped.set()
        await self._engine.offload(self._close_listener)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
