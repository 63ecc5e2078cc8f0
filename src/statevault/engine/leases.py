"""Holding a run's lease: acquiring (with waiting), renewing in the background, releasing.

The backend decides who holds a lease and checks the fencing token of every write;
this module only keeps a grant alive for as long as its holder works. Nothing here is
needed for safety: if renewal stops (the process is paused, the disk is slow), the
lease expires and the backend refuses the holder's next write with `LeaseLost`.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from statevault.backends.base import Backend, LeaseGrant
from statevault.errors import LeaseHeld, LeaseLost, StorageError, VaultClosedError

if TYPE_CHECKING:
    from statevault.engine.checkpoints import Engine

RENEW_FRACTION = 1 / 3
"""A lease is renewed when this fraction of its ttl has passed: two renewals can fail
(a busy disk, a lost connection) before it expires."""

_FIRST_RETRY = 0.02
_MAX_RETRY = 0.5
"""Bounds of the wait between attempts to take a held lease (it doubles, with jitter)."""


def default_owner() -> str:
    """`host:pid:random`: who a lease belongs to when the caller does not say."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class Retry:
    """When to try again for a held lease, and when to give up."""

    deadline: float
    started: float
    delay: float = _FIRST_RETRY

    @classmethod
    def start(cls, wait: float | None) -> Retry:
        now = time.monotonic()
        return cls(now + (wait or 0.0), now)

    def next(self, held: LeaseHeld) -> tuple[float, Retry]:
        """Seconds to sleep before the next attempt; re-raises `held` once out of time.

        The sleep never passes the lease's expiry (a crashed holder's lease is taken as
        soon as it ends) and grows while the holder keeps renewing.
        """
        now = time.monotonic()
        left = self.deadline - now
        if left <= 0:
            raise LeaseHeld(
                held.run_id,
                owner=held.owner,
                expires_at=held.expires_at,
                waited=now - self.started,
            ) from None
        until_expiry = max(held.expires_at - time.time(), 0.0) + 0.001
        sleep = min(left, until_expiry, self.delay * random.uniform(0.5, 1.0))  # noqa: S311
        return sleep, Retry(self.deadline, self.started, min(self.delay * 2, _MAX_RETRY))


def acquire(
    backend: Backend,
    run_id: str,
    *,
    owner: str | None,
    ttl: float,
    wait: float | None,
    renew: bool,
) -> Lease:
    """Take the run's lease, waiting up to `wait` seconds for its holder to let go.

    Raises:
        LeaseHeld: someone else held it for all of `wait`.
    """
    who, retry = _start(owner, wait)
    while True:
        try:
            grant = backend.acquire_lease(run_id, who, ttl)
        except LeaseHeld as held:
            sleep, retry = retry.next(held)
            time.sleep(sleep)
            continue
        return Lease(backend, grant, ttl=ttl, renew=renew)


async def aacquire(
    engine: Engine,
    run_id: str,
    *,
    owner: str | None,
    ttl: float,
    wait: float | None,
    renew: bool,
) -> Lease:
    """`acquire` for the async API: attempts run off the loop, and waits do not block it."""
    import asyncio  # noqa: PLC0415 - loaded already: a loop is running

    backend = engine.backend
    who, retry = _start(owner, wait)
    while True:
        try:
            grant = await engine.offload(lambda: backend.acquire_lease(run_id, who, ttl))
        except LeaseHeld as held:
            sleep, retry = retry.next(held)
            await asyncio.sleep(sleep)
            continue
        return Lease(backend, grant, ttl=ttl, renew=renew)


def _start(owner: str | None, wait: float | None) -> tuple[str, Retry]:
    if wait is not None and not wait >= 0:
        raise ValueError(f"wait must be a number of seconds >= 0, or None; got {wait!r}")
    return (owner if owner is not None else default_owner()), Retry.start(wait)


class Lease:
    """A run's lease, held: its owner, fencing token and expiry.

    Writes made through the `Run` handle that took it carry its token; the backend
    refuses them with `LeaseLost` once it is no longer current. With `renew` on, a
    daemon thread renews it every `ttl / 3` seconds until it is released.

    Attributes:
        run_id: the run.
        owner: who holds it.
        token: the fencing token: larger than every earlier token of the run.
        ttl: seconds each grant or renewal lasts.
    """

    def __init__(self, backend: Backend, grant: LeaseGrant, *, ttl: float, renew: bool) -> None:
        self._backend = backend
        self._grant = grant
        self.run_id = grant.run_id
        self.owner = grant.owner
        self.token = grant.token
        self.ttl = ttl
        self._lost: LeaseLost | None = None
        self._released = False
        if renew:
            _RENEWER.add(self)

    def __repr__(self) -> str:
        state = "lost" if self._lost else "released" if self._released else "held"
        return f"<Lease {self.run_id!r} token {self.token} owner {self.owner!r} {state}>"

    @property
    def expires_at(self) -> float:
        """When the lease ends unless renewed (Unix seconds, the backend's clock)."""
        return self._grant.expires_at

    @property
    def lost(self) -> bool:
        """True once a renewal found the lease taken or expired (writes would be refused)."""
        return self._lost is not None

    @property
    def active(self) -> bool:
        """Neither released nor known to be lost (the backend still has the last word)."""
        return self._lost is None and not self._released

    def renew(self) -> None:
        """Extend the lease by `ttl` from now.

        Raises:
            LeaseLost: it expired, was released or was taken over; it stays lost.
        """
        if self._lost is not None:
            raise LeaseLost(self.run_id, token=self.token, detail="lost earlier")
        try:
            self._grant = self._backend.renew_lease(self.run_id, self.token, self.ttl)
        except LeaseLost as exc:
            self._lost = exc
            raise

    def release(self) -> None:
        """End the lease now so another worker can take it at once. Safe to call twice.

        A renewal racing with it finds the lease released and stops; it cannot revive it.
        """
        if self._released:
            return
        self._released = True
        if self._lost is None:
            self._backend.release_lease(self.run_id, self.token)

    def _renew_in_background(self) -> bool:
        """One background renewal; True if the lease should be renewed again later."""
        if not self.active:
            return False
        try:
            self.renew()
        except (LeaseLost, VaultClosedError):
            return False
        except StorageError:
            # A transient failure: the next attempt may succeed before expiry, and if
            # none does, the backend refuses this holder's writes anyway.
            return True
        except Exception:
            # Anything else ends this lease's renewal, not the thread that renews every
            # other lease of the process; the holder's writes then meet the backend.
            return False
        return self.active


class _Renewer:
    """One daemon thread renews every lease of the process, each at `ttl / 3`.

    Rejected: a thread per lease. Each would open its own SQLite connection (they are
    per thread), which the backend keeps until it is closed, so a process taking many
    short leases would pile up connections.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, Lease]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._renewing = threading.Lock()
        """Held for each renewal, so that `stop` can wait for the one under way."""
        self._stopped = False

    def add(self, lease: Lease) -> None:
        with self._wake:
            if self._stopped:
                return  # the interpreter is exiting: nothing will need the lease long
            self._push(lease)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="statevault-lease-renewer", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _push(self, lease: Lease) -> None:
        due = time.monotonic() + lease.ttl * RENEW_FRACTION
        heapq.heappush(self._due, (due, next(self._order), lease))

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopped and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = self._due[0][0] - time.monotonic() if self._due else None
                    self._wake.wait(timeout)
                if self._stopped:
                    return
                _, _, lease = heapq.heappop(self._due)
                # Taken before the condition is let go: `stop` cannot slip in between.
                self._renewing.acquire()
            try:
                again = lease._renew_in_background()
            finally:
                self._renewing.release()
            if again:
                with self._wake:
                    self._push(lease)

    def stop(self, timeout: float = 10.0) -> None:
        """Renew nothing more, and wait (up to `timeout`) for a renewal under way.

        Run at interpreter exit. The renewer is a daemon thread, and the interpreter
        freezes daemon threads where they stand when it shuts down: one frozen inside
        a renewal would keep the backend's lock of the run (its in-process lock, and on
        files its flock) forever, so the exiting process would hang on it when it
        releases its leases, and other processes would wait on the flock of a process
        that never exits.
        """
        with self._wake:
            self._stopped = True
            self._wake.notify_all()
        if self._renewing.acquire(timeout=timeout):
            self._renewing.release()


_RENEWER = _Renewer()


def _new_renewer_after_fork() -> None:
    # A forked child has no renewer thread, only the parent's bookkeeping of one.
    global _RENEWER  # noqa: PLW0603 - the one process-wide renewer
    _RENEWER = _Renewer()


os.register_at_fork(after_in_child=_new_renewer_after_fork)


@atexit.register
def _stop_renewing() -> None:
    _RENEWER.stop()
