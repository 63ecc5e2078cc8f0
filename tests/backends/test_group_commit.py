"""Group commit in the SQLite backend: concurrent commits of one process share a transaction.

Deterministic groups are built by holding the backend's write lock from the test: the
first writer becomes the leader and waits for that lock, every later writer queues
behind it (in an order the test controls), and releasing the lock lets the leader run
them all in one transaction.
"""

from __future__ import annotations

import pathlib
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest

import statevault
from statevault.backends import sqlite as sqlite_module
from statevault.backends.sqlite import SqliteBackend, _GroupCommit, _Write
from statevault.errors import ConflictError, StorageError

THREADS = 16


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.001)


def _record(label: str, size: int = 300) -> bytes:
    return label.encode().ljust(size, b".")


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread id of every COMMIT that SQLite runs on a backend opened after this."""
    seen: list[int] = []
    connect = SqliteBackend._connect

    def traced(self: SqliteBackend) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(
            lambda sql: seen.append(threading.get_ident()) if sql == "COMMIT" else None
        )
        return conn

    monkeypatch.setattr(SqliteBackend, "_connect", traced)
    return seen


@pytest.fixture(params=["fsync", "process"])
def backend(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path, commits: list[int]
) -> Iterator[SqliteBackend]:
    # After `commits`, so that every connection of the backend is traced.
    backend = SqliteBackend(str(tmp_path / "v.db"), durability=request.param, initial_meta={})
    yield backend
    backend.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=THREADS + 4) as pool:
        yield pool


class HeldGroup:
    """A group held back: a leader waiting for the write lock, followers queued in order."""

    def __init__(self, backend: SqliteBackend, pool: ThreadPoolExecutor) -> None:
        self.backend = backend
        self.pool = pool
        self.leader: Future[None] | None = None

    def queue(self, call: Callable[[], None]) -> Future[None]:
        """Start `call` on a thread and return once its write waits in the queue."""
        group = self.backend._group
        if self.leader is None:
            future = self.pool.submit(call)
            _wait_until(lambda: group._leading, "the first writer leads")
            self.leader = future
            return future
        queued = len(group._queue)
        future = self.pool.submit(call)
        _wait_until(lambda: len(group._queue) == queued + 1, "the write is queued")
        return future


@contextmanager
def held_group(backend: SqliteBackend, pool: ThreadPoolExecutor) -> Iterator[HeldGroup]:
    """Writes queued inside the block run as one group when it ends."""
    backend._write_lock.acquire()
    try:
        yield HeldGroup(backend, pool)
    finally:
        backend._write_lock.release()


def commit(
    backend: SqliteBackend,
    run_id: str,
    record: bytes,
    *,
    expected_head: int = 0,
    expected_record: bytes | None = None,
) -> Callable[[], None]:
    """A call that commits `record` on top of `expected_head`."""

    def call() -> None:
        backend.commit_checkpoint(
            run_id,
            expected_head + 1,
            record,
            expected_head=expected_head,
            expected_record=expected_record,
        )

    return call


# -- correctness under contention -------------------------------------------------------
def test_threads_on_separate_runs(backend: SqliteBackend, pool: ThreadPoolExecutor) -> None:
    per_thread = 25
    start = threading.Barrier(THREADS)

    def writer(t: int) -> None:
        start.wait()
        for seq in range(1, per_thread + 1):
            digest = b"%04d-%04d" % (t, seq)
            backend.commit_checkpoint(
                f"run-{t}",
                seq,
                _record(f"{t}:{seq}"),
                expected_head=seq - 1,
                objects=[(digest.ljust(32, b"d"), b"object %d %d" % (t, seq))],
            )
            if seq % 5 == 0:
                backend.put_objects([(b"put-%04d-%04d" % (t, seq), b"loose %d" % seq)])

    for future in [pool.submit(writer, t) for t in range(THREADS)]:
        future.result()

    assert backend.list_runs() == sorted(f"run-{t}" for t in range(THREADS))
    for t in range(THREADS):
        stored = backend.read_checkpoints(f"run-{t}", newest_first=False)
        assert [(c.seq, c.record) for c in stored] == [
            (seq, _record(f"{t}:{seq}")) for seq in range(1, per_thread + 1)
        ]
    assert len(list(backend.scan_objects())) == THREADS * (per_thread + per_thread // 5)
    assert backend.get_objects([b"put-0003-0010"]) == {b"put-0003-0010": b"loose 10"}


def test_threads_on_one_run(backend: SqliteBackend, pool: ThreadPoolExecutor) -> None:
    """Compare-and-swap under group commit: one winner per seq, nothing lost or doubled."""
    wins_per_thread = 12
    start = threading.Barrier(THREADS)

    def writer(t: int) -> list[tuple[int, bytes]]:
        start.wait()
        won: list[tuple[int, bytes]] = []
        attempt = 0
        while len(won) < wins_per_thread:
            attempt += 1
            newest = backend.read_checkpoints("shared", limit=1)
            head = newest[0].seq if newest else 0
            parent = newest[0].record if newest else None
            record = _record(f"{t}:{attempt}")
            try:
                backend.commit_checkpoint(
                    "shared", head + 1, record, expected_head=head, expected_record=parent
                )
            except ConflictError:
                continue
            won.append((head + 1, record))
        return won

    wins = [win for f in [pool.submit(writer, t) for t in range(THREADS)] for win in f.result()]

    stored = backend.read_checkpoints("shared", newest_first=False)
    assert [c.seq for c in stored] == list(range(1, THREADS * wins_per_thread + 1))
    assert sorted(wins) == [(c.seq, c.record) for c in stored], "every win present once"


def test_queued_commits_on_one_run_apply_in_queue_order(
    backend: SqliteBackend, pool: ThreadPoolExecutor, commits: list[int]
) -> None:
    for seq in range(1, 4):
        backend.commit_checkpoint("r", seq, b"r%d" % seq, expected_head=seq - 1)
    before = len(commits)
    with held_group(backend, pool) as group:
        lead = group.queue(commit(backend, "other", b"o1"))
        a = group.queue(commit(backend, "r", b"a4", expected_head=3, expected_record=b"r3"))
        b = group.queue(commit(backend, "r", b"b4", expected_head=3, expected_record=b"r3"))
        c = group.queue(commit(backend, "r", b"c5", expected_head=4, expected_record=b"a4"))
        d = group.queue(commit(backend, "r", b"d6", expected_head=5, expected_record=b"b4"))
    lead.result()
    a.result()
    with pytest.raises(ConflictError) as conflict:
        b.result()
    assert (conflict.value.expected, conflict.value.actual) == (3, 4), "B saw A's insert"
    c.result()
    with pytest.raises(ConflictError):
        d.result()  # the head is C's record, not B's, which was never written
    assert [c.record for c in backend.read_checkpoints("r", newest_first=False)] == [
        b"r1",
        b"r2",
        b"r3",
        b"a4",
        b"c5",
    ]
    assert len(commits) - before == 1, "one transaction for the whole group"


class _Poison:
    """Ways to make one write of a group fail inside the transaction."""

    @staticmethod
    def operational(monkeypatch: pytest.MonkeyPatch, backend: SqliteBackend) -> None:
        apply = SqliteBackend._apply_commit

        def failing(
            self: SqliteBackend,
            conn: sqlite3.Connection,
            run_id: str,
            seq: int,
            record: bytes,
            **options: Any,
        ) -> None:
            if record == b"poison":
                raise sqlite3.OperationalError("disk I/O error (injected by the test)")
            apply(self, conn, run_id, seq, record, **options)

        monkeypatch.setattr(SqliteBackend, "_apply_commit", failing)

    @staticmethod
    def trigger(monkeypatch: pytest.MonkeyPatch, backend: SqliteBackend) -> None:
        # A real statement failure. RAISE(ABORT) undoes only the failing statement, so a
        # backend that carried on would commit the rest of the group: it must not.
        conn = sqlite3.connect(backend.location, isolation_level=None)
        conn.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON statevault_checkpoints "
            "WHEN NEW.record = X'706f69736f6e' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
        conn.close()

    @staticmethod
    def at_commit(monkeypatch: pytest.MonkeyPatch, backend: SqliteBackend) -> None:
        # Every statement succeeds and COMMIT itself fails: a deferred foreign key,
        # broken by a trigger on the poisoned record, is checked only at COMMIT.
        conn = sqlite3.connect(backend.location, isolation_level=None)
        conn.executescript(
            "CREATE TABLE poison_parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE poison_child (parent INTEGER REFERENCES poison_parent(id) "
            "  DEFERRABLE INITIALLY DEFERRED);"
            "CREATE TRIGGER poison AFTER INSERT ON statevault_checkpoints "
            "WHEN NEW.record = X'706f69736f6e' BEGIN INSERT INTO poison_child VALUES (1); END;"
        )
        conn.close()
        connect = SqliteBackend._connect

        def with_foreign_keys(self: SqliteBackend) -> sqlite3.Connection:
            conn = connect(self)
            conn.execute("PRAGMA foreign_keys=ON")
            return conn

        monkeypatch.setattr(SqliteBackend, "_connect", with_foreign_keys)


@pytest.mark.parametrize("poison", [_Poison.operational, _Poison.trigger, _Poison.at_commit])
def test_failed_transaction_fails_the_whole_group(
    backend: SqliteBackend,
    pool: ThreadPoolExecutor,
    monkeypatch: pytest.MonkeyPatch,
    poison: Callable[[pytest.MonkeyPatch, SqliteBackend], None],
) -> None:
    backend.commit_checkpoint("r", 1, b"r1", expected_head=0)
    poison(monkeypatch, backend)
    with held_group(backend, pool) as group:
        futures = [
            group.queue(commit(backend, "a", b"a1")),
            group.queue(commit(backend, "r", b"r2", expected_head=1, expected_record=b"r1")),
            group.queue(commit(backend, "b", b"poison")),
            group.queue(commit(backend, "r", b"r3", expected_head=2, expected_record=b"r2")),
            group.queue(commit(backend, "c", b"c1")),
            group.queue(lambda: backend.put_objects([(b"d" * 32, b"object")])),
        ]
    errors = []
    for future in futures:
        with pytest.raises(StorageError, match="nothing was written") as failure:
            future.result()
        errors.append(failure.value)
    assert len({id(e) for e in errors}) == len(errors), "each waiter has its own exception"

    assert backend.list_runs() == ["r"], "nothing of the group is visible"
    assert backend.head("r") == 1
    assert backend.has_objects([b"d" * 32]) == set()

    # The same writes without the poisoned one: the next group commits them all.
    with held_group(backend, pool) as group:
        later = [
            group.queue(commit(backend, "a", b"a1")),
            group.queue(commit(backend, "r", b"r2", expected_head=1, expected_record=b"r1")),
            group.queue(commit(backend, "r", b"r3", expected_head=2, expected_record=b"r2")),
            group.queue(commit(backend, "c", b"c1")),
            group.queue(lambda: backend.put_objects([(b"d" * 32, b"object")])),
        ]
    for future in later:
        future.result()
    assert backend.list_runs() == ["a", "c", "r"]
    assert [c.record for c in backend.read_checkpoints("r", newest_first=False)] == [
        b"r1",
        b"r2",
        b"r3",
    ]
    assert backend.has_objects([b"d" * 32]) == {b"d" * 32}


def test_expected_record_on_an_empty_run_conflicts(backend: SqliteBackend) -> None:
    with pytest.raises(ConflictError):
        backend.commit_checkpoint("r", 1, b"x", expected_head=0, expected_record=b"gone")
    assert backend.head("r") == 0


def test_bad_argument_fails_only_its_caller(backend: SqliteBackend) -> None:
    with pytest.raises(TypeError, match="record must be bytes"):
        backend.commit_checkpoint("r", 1, "text", expected_head=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pairs"):
        backend.put_objects([b"digest-without-data"])  # type: ignore[list-item]
    assert backend.list_runs() == []


# -- grouping actually happens -------------------------------------------------------------
def test_sixteen_threads_share_few_transactions(
    tmp_path: pathlib.Path, pool: ThreadPoolExecutor, commits: list[int]
) -> None:
    backend = SqliteBackend(str(tmp_path / "v.db"), initial_meta={})
    per_thread = 30
    before = len(commits)
    start = threading.Barrier(THREADS)

    def writer(t: int) -> None:
        start.wait()
        for seq in range(1, per_thread + 1):
            backend.commit_checkpoint(f"t{t}", seq, _record(f"{t}"), expected_head=seq - 1)

    try:
        for future in [pool.submit(writer, t) for t in range(THREADS)]:
            future.result()
    finally:
        backend.close()
    transactions = len(commits) - before
    total = THREADS * per_thread
    # Groups of about 15 here; a quarter of one commit per transaction leaves room for
    # a slow, busy machine while still failing if every commit ran alone.
    assert transactions <= total / 4, f"{transactions} COMMITs for {total} commits"


def test_a_held_group_is_one_transaction(
    backend: SqliteBackend, pool: ThreadPoolExecutor, commits: list[int]
) -> None:
    before = len(commits)
    with held_group(backend, pool) as group:
        futures = [group.queue(commit(backend, f"t{i}", b"x")) for i in range(THREADS)]
    for future in futures:
        future.result()
    assert len(commits) - before == 1
    assert len(backend.list_runs()) == THREADS


def test_uncontended_commit_runs_on_the_callers_thread(
    backend: SqliteBackend, commits: list[int]
) -> None:
    before = len(commits)
    backend.commit_checkpoint("r", 1, b"x", expected_head=0)
    backend.put_objects([(b"d" * 32, b"o")])
    assert commits[before:] == [threading.get_ident()] * 2
    assert backend._group._leading is False


def test_group_bounds(
    backend: SqliteBackend,
    pool: ThreadPoolExecutor,
    commits: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_module, "_GROUP_MAX_WRITES", 4)
    monkeypatch.setattr(sqlite_module, "_GROUP_MAX_BYTES", 1000)
    records = [b"%d" % seq for seq in range(1, 11)] + [b"B" * 5000, b"12"]
    before = len(commits)
    with held_group(backend, pool) as group:
        futures = [
            group.queue(commit(backend, "r", record, expected_head=seq))
            for seq, record in enumerate(records)
        ]
    for future in futures:
        future.result()  # a group that skipped the large write would fail the one behind it
    # [1-4] [5-8] [9, 10] (the large 11th does not fit after them) [11 alone] [12]
    assert len(commits) - before == 5
    assert [c.record for c in backend.read_checkpoints("r", newest_first=False)] == records


def test_pending_bytes_reach_the_checkpointer(
    backend: SqliteBackend, pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[int] = []
    committed = backend._checkpointer.committed
    monkeypatch.setattr(
        backend._checkpointer, "committed", lambda n: (reported.append(n), committed(n))
    )
    backend.commit_checkpoint("seed", 1, b"s", expected_head=0)
    reported.clear()
    with held_group(backend, pool) as group:
        futures = [
            group.queue(commit(backend, "a", b"a" * 100)),
            group.queue(commit(backend, "seed", b"late", expected_head=0)),  # conflicts
            group.queue(lambda: backend.put_objects([(b"d" * 32, b"o" * 50)])),
        ]
    futures[0].result()
    futures[2].result()
    with pytest.raises(ConflictError):
        futures[1].result()
    assert reported == [150], "one report per transaction, without the refused write"


# -- interrupts never strand the queue ------------------------------------------------------
class _Interrupt(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_interrupted_waiter_leaves_the_queue(
    backend: SqliteBackend, pool: ThreadPoolExecutor
) -> None:
    assert threading.current_thread() is threading.main_thread()

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with held_group(backend, pool) as group:
            lead = group.queue(commit(backend, "lead", b"l"))
            main = threading.get_ident()

            def kill_when_queued() -> None:
                _wait_until(lambda: len(backend._group._queue) == 1, "main thread queued")
                signal.pthread_kill(main, signal.SIGUSR1)

            killer = pool.submit(kill_when_queued)
            with pytest.raises(_Interrupt):
                backend.commit_checkpoint("main", 1, b"m", expected_head=0)
            killer.result()
            assert len(backend._group._queue) == 0, "the interrupted write left the queue"
        lead.result()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert backend.head("main") == 0, "a write whose caller was interrupted in line never runs"
    backend.commit_checkpoint("main", 1, b"m", expected_head=0)
    assert backend._group._leading is False


def test_interrupted_successor_passes_leadership_on() -> None:
    ran: list[list[str]] = []

    def execute(group: list[_Write]) -> None:
        ran.append([str(w.nbytes) for w in group])
        for write in group:
            write.committed = True

    gc = _GroupCommit(execute, location="test")
    heir, next_in_line = _Write(lambda conn: None, 1), _Write(lambda conn: None, 2)
    for write in (heir, next_in_line):
        write.wake = threading.Lock()
        write.wake.acquire()
        gc._queue.append(write)
    gc._leading = True
    gc._hand_over([])  # the leader finished: `heir` now leads...
    assert heir.state == "lead"
    gc._abandon(heir)  # ...but its thread was interrupted before it could
    assert next_in_line.state == "lead"
    assert next_in_line.wake is not None and not next_in_line.wake.locked()
    gc._lead(next_in_line)
    assert ran == [["2"]]
    assert gc._leading is False


# -- through the public API ------------------------------------------------------------------
def test_vault_saves_from_many_threads(tmp_path: pathlib.Path, pool: ThreadPoolExecutor) -> None:
    with statevault.open(str(tmp_path / "v.db")) as vault:
        start = threading.Barrier(THREADS)

        def worker(t: int) -> None:
            run = vault.run(f"t{t}")
            start.wait()
            for step in range(10):
                run.save({"thread": t, "step": step, "note": "x" * 200})

        for future in [pool.submit(worker, t) for t in range(THREADS)]:
            future.result()
    with statevault.open(str(tmp_path / "v.db")) as vault:
        for t in range(THREADS):
            assert vault.run(f"t{t}").load() == {"thread": t, "step": 9, "note": "x" * 200}
