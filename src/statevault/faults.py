"""Named crash points: places where a test may have the process killed on purpose.

Crash tests set `STATEVAULT_CRASH_AT` in a child process's environment to a point's
name, optionally followed by `@N` to crash on the N-th time the point is reached
(default: the first). When the point is reached the process sends itself SIGKILL,
which no handler, `finally` block or atexit hook can soften: exactly what a power
cut or the OOM killer does to a writer. Unset (every normal run), `crash_point` is
one global lookup and a comparison.

Example::

    STATEVAULT_CRASH_AT=files.record.after_write@3 python worker.py

Points are named `<layer>.<what>.<when>`; `POINTS` lists each so tests can iterate
over them and a typo in a test fails loudly instead of never firing.
"""

from __future__ import annotations

import os
import signal
import threading

ENV_VAR = "STATEVAULT_CRASH_AT"

POINTS: dict[str, str] = {}
"""Every crash point's name and what has happened when it fires; filled by `register`."""


def register(name: str, description: str) -> str:
    """Declare a crash point once, at import of the module that uses it; returns `name`."""
    POINTS[name] = description
    return name


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition("@")
    return name, int(count) if count else 1


_armed = _parse(os.environ.get(ENV_VAR))
_hits = 0
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process if `name` is the armed point (and its count is reached)."""
    if _armed is None or _armed[0] != name:
        return
    global _hits  # noqa: PLW0603 - one process-wide counter, guarded by _lock
    with _lock:
        _hits += 1
        if _hits >= _armed[1]:
            os.kill(os.getpid(), signal.SIGKILL)


def rearm(spec: str | None) -> None:
    """Arm another point in this process (tests that fork or reuse an interpreter)."""
    global _armed, _hits  # noqa: PLW0603 - see crash_point
    with _lock:
        _armed = _parse(spec)
        _hits = 0
