"""PostgreSQL server faults: backends terminated mid-commit, connections cut after the
server committed, a server that goes away, and (slow) a server restarted under load.

Every scenario ends with the invariants: each acknowledged commit present in order,
each commit whose outcome the client could not know present whole or absent, and the
vault opening and verifying.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import statevault
from postgres_support import PG_DSN, pg_url, require_postgres

psycopg = pytest.importorskip("psycopg")

from statevault.backends import postgres  # noqa: E402 - after the importorskip
from statevault.backends.postgres import PostgresBackend  # noqa: E402

pytestmark = pytest.mark.postgres


def _server(sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _terminate(application_name: str) -> int:
    """Terminate every server process of the given client; how many there were."""
    rows = _server(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        application_name,
    )
    return len(rows)


# -- a workload and its invariants ------------------------------------------------------
@dataclass
class Workload:
    """Writer threads saving numbered states to runs of their own, keeping score.

    Attributes:
        acked: (run, n) -> seq of every save that returned.
        unknown: (run, n) of every save that raised `StorageError`: outcome unknown.
        other: any other exception (the test fails on them).
    """

    url: str
    writers: int = 4
    timeout: float = 30.0
    acked: dict[tuple[str, int], int] = field(default_factory=dict)
    unknown: set[tuple[str, int]] = field(default_factory=set)
    other: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def state(run_id: str, n: int) -> dict[str, Any]:
        # The blob makes each save write objects as well as its record.
        return {"run": run_id, "n": n, "blob": (b"%s:%d;" % (run_id.encode(), n)) * 3000}

    def writer(self, vault: statevault.Vault, run_id: str) -> None:
        run: statevault.Run | None = None
        n = 0
        while not self.stop.is_set():
            try:
                if run is None:
                    run = vault.run(run_id)
                checkpoint = run.save(self.state(run_id, n), force=True)
                self.acked[(run_id, n)] = checkpoint.seq
            except statevault.StorageError:
                self.unknown.add((run_id, n))
                run = None  # a fresh handle: this one's head is unknown too
                time.sleep(0.05)
            except BaseException as exc:
                self.other.append(exc)
                return
            n += 1

    def run_while(self, fault: Callable[[], None]) -> None:
        """Run the writers, call `fault` meanwhile, then let them go on a little."""
        with statevault.open(self.url, timeout=self.timeout) as vault:
            threads = [
                threading.Thread(target=self.writer, args=(vault, f"w{i}"))
                for i in range(self.writers)
            ]
            for t in threads:
                t.start()
            try:
                time.sleep(0.3)
                fault()
                time.sleep(0.5)
            finally:
                self.stop.set()
                for t in threads:
                    t.join(timeout=120)
        assert not self.other, self.other

    def check(self) -> None:
        """Every acknowledged save present, in order; unknown ones whole or absent."""
        with statevault.open(self.url) as vault:
            for i in range(self.writers):
                run_id = f"w{i}"
                run = vault.run(run_id)
                seqs = sorted(c.seq for c in run.checkpoints())
                assert seqs == list(range(1, len(seqs) + 1)), f"{run_id}: a gap in {seqs}"
                stored = {seq: run.load(at=seq) for seq in seqs}
                by_n = {state["n"]: seq for seq, state in stored.items()}
                for (rid, n), seq in self.acked.items():
                    if rid == run_id:
                        assert stored[seq] == self.state(run_id, n), f"{run_id} save {n}"
                for rid, n in self.unknown:
                    if rid == run_id and n in by_n:
                        assert stored[by_n[n]] == self.state(run_id, n), "present, so whole"
                # Nothing that was not attempted: each stored state is one of ours, once.
                assert len(by_n) == len(stored)
            report = vault.verify()
            assert report.ok, report.problems


@pytest.fixture
def app_url(pg_schema: str) -> str:
    """The schema's URL, with an application name that finds its server processes."""
    return pg_url(pg_schema, application_name=f"sv_{pg_schema}")


# -- terminated backends ----------------------------------------------------------------
def test_backends_terminated_under_load_are_retried(app_url: str, pg_schema: str) -> None:
    terminated = 0

    def kill_repeatedly() -> None:
        nonlocal terminated
        for _ in range(15):
            terminated += _terminate(f"sv_{pg_schema}")
            time.sleep(0.04)

    workload = Workload(app_url)
    workload.run_while(kill_repeatedly)
    assert terminated >= 5, "the fault hit the workload's connections"
    assert len(workload.acked) > 20
    assert not workload.unknown, "a lost connection is retried, not reported"
    workload.check()


def test_backend_terminated_inside_the_commit_statement(app_url: str, pg_schema: str) -> None:
    """Deterministically mid-commit: the commit waits on a row lock when it is killed."""
    backend = PostgresBackend(app_url, initial_meta={})
    try:
        backend.commit_checkpoint("r", 1, b"one", expected_head=0)
        table = f'"{pg_schema}".statevault_checkpoints'
        with psycopg.connect(PG_DSN) as blocker:
            blocker.execute(f"SELECT 1 FROM {table} WHERE run_id = 'r' FOR UPDATE")
            done: list[BaseException | None] = []

            def commit() -> None:
                try:
                    backend.commit_checkpoint(
                        "r", 2, b"two", expected_head=1, objects=[(b"d" * 32, b"obj")]
                    )
                    done.append(None)
                except BaseException as exc:
                    done.append(exc)

            thread = threading.Thread(target=commit)
            thread.start()
            waiting: list[tuple[Any, ...]] = []
            for _ in range(100):
                waiting = _server(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                    "AND wait_event_type = 'Lock'",
                    f"sv_{pg_schema}",
                )
                if waiting:
                    break
                time.sleep(0.05)
            assert waiting, "the commit is waiting inside its statement"
            _server("SELECT pg_terminate_backend(%s)", waiting[0][0])
            time.sleep(0.2)
            blocker.commit()
            thread.join(timeout=30)
        assert done == [None], done
        assert [c.record for c in backend.read_checkpoints("r")] == [b"two", b"one"]
        assert backend.get_objects([b"d" * 32]) == {b"d" * 32: b"obj"}
    finally:
        backend.close()


# -- connections cut after the server committed -----------------------------------------
class CuttingProxy:
    """A TCP relay to the server that can drop a connection at the worst moment.

    `cut_after(marker)`: the next time the client sends bytes containing `marker`, the
    server's reply to them is swallowed and both sides are closed. The server has then
    done (and committed) what was asked, and the client cannot know it.
    `freeze_after(marker)`: after the client sends bytes containing `marker`, hold
    back everything it sends next until `thaw()`, as if the client process were frozen.
    `refuse()`: close every connection and refuse new ones, as a server that went away.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._sockets: list[socket.socket] = []
        self.cuts = 0
        self._refusing = False
        self._freeze_marker: bytes | None = None
        self._thawed = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def cut_after(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def freeze_after(self, marker: bytes) -> None:
        with self._lock:
            self._freeze_marker = marker
            self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def refuse(self) -> None:
        with self._lock:
            self._refusing = True
            for sock in self._sockets:
                _close(sock)
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        _close(self._listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._refusing:
                    _close(client)
                    return
                server = socket.create_connection(self._target)
                self._sockets += [client, server]
            armed = threading.Event()
            threading.Thread(target=self._up, args=(client, server, armed), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, armed), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, armed: threading.Event) -> None:
        frozen = False
        while data := _recv(client):
            if frozen:
                self._thawed.wait()
            with self._lock:
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    armed.set()
                if self._freeze_marker is not None and self._freeze_marker in data:
                    self._freeze_marker = None
                    frozen = True
            try:
                server.sendall(data)
            except OSError:
                break
        _close(server)

    def _down(self, server: socket.socket, client: socket.socket, armed: threading.Event) -> None:
        while data := _recv(server):
            if armed.is_set():
                self.cuts += 1
                _close(client)
                _close(server)
                return
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client)

    def close(self) -> None:
        self.refuse()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def proxy() -> Iterator[CuttingProxy]:
    require_postgres()
    parts = urlsplit(PG_DSN)
    relay = CuttingProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    yield relay
    relay.close()


def _through(proxy: CuttingProxy, schema: str) -> str:
    parts = urlsplit(pg_url(schema))
    netloc = (
        f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    )
    return urlunsplit(parts._replace(netloc=netloc))


def test_commit_cut_off_after_the_server_committed_succeeds(
    proxy: CuttingProxy, pg_schema: str
) -> None:
    backend = PostgresBackend(_through(proxy, pg_schema), initial_meta={})
    try:
        backend.commit_checkpoint("r", 1, b"one", expected_head=0)
        proxy.cut_after(b"record-two-marker")
        backend.commit_checkpoint("r", 2, b"record-two-marker", expected_head=1)
        assert proxy.cuts == 1, "the reply to the commit was swallowed"
        assert [c.record for c in backend.read_checkpoints("r")] == [
            b"record-two-marker",
            b"one",
        ]
        # A genuine conflict is still one, after a cut as without.
        proxy.cut_after(b"record-late")
        with pytest.raises(statevault.ConflictError):
            backend.commit_checkpoint("r", 2, b"record-late", expected_head=1)
    finally:
        backend.close()


def test_roll_back_cut_off_at_commit_reports_what_it_removed(
    proxy: CuttingProxy, pg_schema: str
) -> None:
    backend = PostgresBackend(_through(proxy, pg_schema), initial_meta={})
    try:
        for seq in (1, 2, 3):
            backend.commit_checkpoint("r", seq, b"%d" % seq, expected_head=seq - 1)
        proxy.cut_after(b"COMMIT")
        removed = backend.roll_back("r", 1)
        assert proxy.cuts == 1
        assert [(c.seq, c.record) for c in removed] == [(2, b"2"), (3, b"3")]
        assert backend.head("r") == 1
        backend.commit_checkpoint("gone", 1, b"x", expected_head=0)
        proxy.cut_after(b"COMMIT")
        assert backend.delete_run("gone") is True
        assert proxy.cuts == 2
    finally:
        backend.close()


def test_server_gone_is_a_clear_storage_error(proxy: CuttingProxy, pg_schema: str) -> None:
    backend = PostgresBackend(_through(proxy, pg_schema), initial_meta={}, timeout=1.0)
    try:
        backend.commit_checkpoint("r", 1, b"one", expected_head=0)
        proxy.refuse()
        started = time.monotonic()
        with pytest.raises(statevault.StorageError, match=r"PostgreSQL at .*within 1s") as caught:
            backend.commit_checkpoint("r", 2, b"two", expected_head=1)
        assert time.monotonic() - started < 15
        assert "refused" in str(caught.value) or "lost the connection" in str(caught.value)
    finally:
        backend.close()
    direct = PostgresBackend(pg_url(pg_schema), initial_meta={})
    try:
        assert direct.head("r") == 1, "the failed commit left nothing"
    finally:
        direct.close()


def test_client_frozen_inside_a_lease_change_does_not_block_others(
    proxy: CuttingProxy, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client frozen between two statements of a transaction that holds the lease row:
    the server ends that transaction after the lock-hold limit, so another worker gets
    the lease, and the frozen one, when it resumes, is refused."""
    monkeypatch.setattr(postgres, "LOCK_HOLD_LIMIT", "1s")
    frozen = PostgresBackend(_through(proxy, pg_schema), initial_meta={})
    other = PostgresBackend(pg_url(pg_schema), initial_meta={})
    try:
        # Frozen after reading the clock, before storing its grant: the row is locked.
        proxy.freeze_after(b"clock_timestamp())::float8")
        outcome: list[Any] = []

        def acquire() -> None:
            try:
                outcome.append(frozen.acquire_lease("r", "frozen", 30))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=acquire)
        thread.start()
        granted: list[Any] = []
        taker = threading.Thread(
            target=lambda: granted.append(other.acquire_lease("r", "other", 30)), daemon=True
        )
        taker.start()
        taker.join(timeout=20)
        assert granted, "the other worker is still blocked by the frozen client's lock"
        grant = granted[0]
        assert grant.owner == "other"
        proxy.thaw()
        thread.join(timeout=30)
        assert len(outcome) == 1 and isinstance(outcome[0], statevault.LeaseHeld), outcome
        assert other.read_lease("r") == grant
    finally:
        proxy.thaw()
        frozen.close()
        other.close()


# -- a server restarted under load (slow) -----------------------------------------------
def _cluster_of(dsn: str) -> tuple[str, str] | None:
    """(version, name) of the local cluster serving `dsn`, if pg_ctlcluster can run it."""
    parts = urlsplit(dsn)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1", None):
        return None
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        return None
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
    ).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == str(parts.port or 5432):
            return fields[0], fields[1]
    return None


def _may_control_cluster() -> str | None:
    """Why this process may not restart the test server, or None if it may."""
    if _cluster_of(PG_DSN) is None:
        return f"no local cluster controlled by pg_ctlcluster serves {PG_DSN}"
    user = pwd.getpwuid(os.geteuid()).pw_name
    if user not in ("root", "postgres"):
        return f"pg_ctlcluster needs root or postgres; this is {user!r}"
    return None


@pytest.fixture
def cluster() -> Iterator[tuple[str, str]]:
    """The test server's cluster; whatever happens, the server is running afterwards."""
    require_postgres()
    reason = _may_control_cluster()
    if reason is not None:
        pytest.skip(reason)
    found = _cluster_of(PG_DSN)
    assert found is not None
    yield found
    version, name = found
    status = subprocess.run(
        ["pg_ctlcluster", version, name, "status"], capture_output=True, check=False
    )
    if status.returncode != 0:
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, timeout=120)
    _wait_for_server(120)


def _wait_for_server(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            _server("SELECT 1")
            return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.slow
def test_server_restarted_immediately_under_load(cluster: tuple[str, str], app_url: str) -> None:
    version, name = cluster

    def restart() -> None:
        subprocess.run(
            ["pg_ctlcluster", version, name, "restart", "-m", "immediate"],
            check=True,
            timeout=120,
            capture_output=True,
        )

    workload = Workload(app_url, timeout=60.0)
    workload.run_while(restart)
    assert len(workload.acked) > 20
    # The restart took a few seconds, within the timeout: every save went through.
    assert not workload.unknown, workload.unknown
    workload.check()


@pytest.mark.slow
def test_server_down_past_the_timeout_then_back(cluster: tuple[str, str], app_url: str) -> None:
    version, name = cluster
    workload = Workload(app_url, timeout=2.0)

    def outage() -> None:
        subprocess.run(["pg_ctlcluster", version, name, "stop", "-m", "immediate"], check=True)
        time.sleep(4)  # longer than the writers' timeout: their saves fail, clearly
        subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, timeout=120)
        _wait_for_server(60)
        time.sleep(2)  # writers come back

    workload.run_while(outage)
    assert workload.unknown, "saves during the outage raised StorageError"
    acked_after = [n for (run, n) in workload.acked if run == "w0"]
    failed = [n for (run, n) in workload.unknown if run == "w0"]
    assert failed and max(acked_after) > max(failed), "writers went on after the outage"
    workload.check()
