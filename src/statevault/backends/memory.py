"""An in-process backend for tests and throwaway runs. Nothing outlives the process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

from statevault.backends.base import (
    Capabilities,
    LeaseGrant,
    Rewrite,
    StoredCheckpoint,
    check_keep_through,
    check_lease_args,
    check_next_seq,
    check_rewrites,
    check_run_id,
    check_token,
    check_ttl,
    check_write_lease,
    grant_lease,
    released_grant,
    renew_grant,
)
from statevault.errors import ConflictError, VaultClosedError


class MemoryBackend:
    """Dicts behind one lock; the reference model the other backends are held to."""

    capabilities = Capabilities(
        persistent=False,
        multi_process=False,
        durable_fsync=False,
        leases=True,
        notify=True,
        rewrite_records=True,
    )

    def __init__(self, *, initial_meta: Mapping[str, bytes], name: str = "") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._meta: dict[str, bytes] = dict(initial_meta)
        self._objects: dict[bytes, bytes] = {}
        self._runs: dict[str, dict[int, bytes]] = {}
        # Kept when a run is deleted: its tokens must keep growing.
        self._leases: dict[str, LeaseGrant] = {}
        # Bumped, under `_lock`, by every change to a run; listeners wait for it to move.
        self._changes = threading.Condition(self._lock)
        self._version = 0
        # Every copy moved aside, in order: a digest quarantined twice keeps both.
        self._quarantine: list[tuple[bytes, bytes]] = []
        self._closed = False

    @property
    def location(self) -> str:
        return f"memory://{self._name}"

    def _check(self) -> None:
        if self._closed:
            raise VaultClosedError(f"the vault {self.location} is closed; open it again")

    def get_meta(self) -> dict[str, bytes]:
        with self._lock:
            self._check()
            return dict(self._meta)

    def set_meta(self, key: str, value: bytes) -> None:
        with self._lock:
            self._check()
            self._meta[key] = bytes(value)

    def put_objects(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        with self._lock:
            self._check()
            for digest, data in items:
                self._objects.setdefault(bytes(digest), bytes(data))

    def get_objects(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        with self._lock:
            self._check()
            return {d: self._objects[d] for d in digests if d in self._objects}

    def has_objects(self, digests: Iterable[bytes]) -> set[bytes]:
        with self._lock:
            self._check()
            return {d for d in digests if d in self._objects}

    def delete_objects(self, digests: Iterable[bytes]) -> None:
        with self._lock:
            self._check()
            for d in digests:
                self._objects.pop(d, None)

    def scan_objects(self) -> Iterator[bytes]:
        with self._lock:
            self._check()
            keys = list(self._objects)
        return iter(keys)

    def list_runs(self, prefix: str = "") -> list[str]:
        with self._lock:
            self._check()
            return sorted(r for r, cps in self._runs.items() if cps and r.startswith(prefix))

    def head(self, run_id: str) -> int:
        check_run_id(run_id)
        with self._lock:
            self._check()
            return max(self._runs.get(run_id, {0: b""}), default=0)

    def commit_checkpoint(
        self,
        run_id: str,
        seq: int,
        record: bytes,
        *,
        expected_head: int,
        expected_record: bytes | None = None,
        objects: Sequence[tuple[bytes, bytes]] = (),
        lease_token: int | None = None,
    ) -> None:
        check_run_id(run_id)
        check_next_seq(seq, expected_head)
        with self._lock:
            self._check()
            for digest, data in objects:
                self._objects.setdefault(bytes(digest), bytes(data))
            check_write_lease(run_id, self._leases.get(run_id), token=lease_token, now=time.time())
            checkpoints = self._runs.setdefault(run_id, {})
            head = max(checkpoints, default=0)
            if head != expected_head or (
                expected_record is not None and checkpoints.get(head) != expected_record
            ):
                raise ConflictError(run_id, expected=expected_head, actual=head)
            checkpoints[seq] = bytes(record)
            self._changed()

    def rewrite_records(
        self,
        run_id: str,
        rewrites: Sequence[Rewrite],
        *,
        objects: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        check_run_id(run_id)
        checked = check_rewrites(rewrites)
        with self._lock:
            self._check()
            for digest, data in objects:
                self._objects.setdefault(bytes(digest), bytes(data))
            checkpoints = self._runs.get(run_id, {})
            head = max(checkpoints, default=0)
            done = 0
            for seq, expected, new in checked:
                if seq < head and checkpoints.get(seq) == expected:
                    checkpoints[seq] = new
                    done += 1
            return done

    def read_checkpoint(self, run_id: str, seq: int) -> bytes | None:
        check_run_id(run_id)
        with self._lock:
            self._check()
            return self._runs.get(run_id, {}).get(seq)

    def read_checkpoints(
        self, run_id: str, *, newest_first: bool = True, limit: int | None = None
    ) -> list[StoredCheckpoint]:
        check_run_id(run_id)
        with self._lock:
            self._check()
            checkpoints = self._runs.get(run_id, {})
            seqs = sorted(checkpoints, reverse=newest_first)[:limit]
            return [StoredCheckpoint(s, checkpoints[s]) for s in seqs]

    def delete_run(self, run_id: str, *, lease_token: int | None = None) -> bool:
        check_run_id(run_id)
        with self._lock:
            self._check()
            check_write_lease(run_id, self._leases.get(run_id), token=lease_token, now=time.time())
            deleted = bool(self._runs.pop(run_id, None))
            if deleted:
                self._changed()
            return deleted

    # -- leases -------------------------------------------------------------------------
    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> LeaseGrant:
        check_run_id(run_id)
        check_lease_args(owner, ttl)
        with self._lock:
            self._check()
            grant = grant_lease(
                run_id, self._leases.get(run_id), owner=owner, ttl=ttl, now=time.time()
            )
            self._leases[run_id] = grant
            return grant

    def renew_lease(self, run_id: str, token: int, ttl: float) -> LeaseGrant:
        check_run_id(run_id)
        check_ttl(ttl)
        check_token(token)
        with self._lock:
            self._check()
            grant = renew_grant(
                run_id, self._leases.get(run_id), token=token, ttl=ttl, now=time.time()
            )
            self._leases[run_id] = grant
            return grant

    def release_lease(self, run_id: str, token: int) -> None:
        check_run_id(run_id)
        check_token(token)
        with self._lock:
            self._check()
            released = released_grant(self._leases.get(run_id), token=token, now=time.time())
            if released is not None:
                self._leases[run_id] = released

    def read_lease(self, run_id: str) -> LeaseGrant | None:
        check_run_id(run_id)
        with self._lock:
            self._check()
            return self._leases.get(run_id)

    # -- notification ---------------------------------------------------------------------
    def _changed(self) -> None:
        """Wake listeners (lock held)."""
        self._version += 1
        self._changes.notify_all()

    def listen(self) -> _MemoryListener:
        with self._lock:
            self._check()
            return _MemoryListener(self, self._version)

    def roll_back(
        self, run_id: str, keep_through: int, *, lease_token: int | None = None
    ) -> list[StoredCheckpoint]:
        check_run_id(run_id)
        check_keep_through(keep_through)
        with self._lock:
            self._check()
            check_write_lease(run_id, self._leases.get(run_id), token=lease_token, now=time.time())
            checkpoints = self._runs.get(run_id, {})
            removed = [
                StoredCheckpoint(s, checkpoints.pop(s))
                for s in sorted(checkpoints)
                if s > keep_through
            ]
            if not checkpoints:
                self._runs.pop(run_id, None)
            if removed:
                self._changed()
            return removed

    def quarantine_objects(self, digests: Iterable[bytes]) -> int:
        with self._lock:
            self._check()
            moved = 0
            for digest in dict.fromkeys(bytes(d) for d in digests):
                data = self._objects.pop(digest, None)
                if data is None:
                    continue
                if (digest, data) not in self._quarantine:
                    self._quarantine.append((digest, data))
                moved += 1
            return moved

    def quarantined_objects(self) -> dict[bytes, bytes]:
        with self._lock:
            self._check()
            found: dict[bytes, bytes] = {}
            for digest, data in self._quarantine:
                found.setdefault(digest, data)
            return found

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._changed()  # listeners wake, and find the vault closed at their next read


class _MemoryListener:
    """Waits for the memory backend's change counter to move past the one it last saw."""

    def __init__(self, backend: MemoryBackend, version: int) -> None:
        self._backend = backend
        self._seen = version

    def wait(self, timeout: float) -> bool:
        backend = self._backend
        with backend._changes:
            moved = backend._changes.wait_for(lambda: backend._version != self._seen, timeout)
            self._seen = backend._version
            return moved

    def close(self) -> None:
        """Nothing to release: a listener holds no resource."""
