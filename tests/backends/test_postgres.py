"""PostgreSQL-specific behaviour: URLs, tables and their versions, session settings, errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import statevault
from postgres_support import PG_DSN, drop_pg_schema, pg_url, require_postgres
from statevault.backends.base import initial_meta

psycopg = pytest.importorskip("psycopg")

from statevault.backends.postgres import (  # noqa: E402 - after the importorskip
    LAYOUT_KEY,
    LAYOUT_VERSION,
    PostgresBackend,
    PostgresOptions,
    durability_warnings,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend(pg_schema: str) -> Iterator[PostgresBackend]:
    backend = PostgresBackend(pg_url(pg_schema), initial_meta=initial_meta(2, {}))
    yield backend
    backend.close()


def _server(sql: str, *params: object) -> list[tuple[object, ...]]:
    """Run `sql` on a connection of the test's own, outside the backend."""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


# -- URLs -------------------------------------------------------------------------------
def test_url_options_are_taken_out_and_the_rest_goes_to_libpq() -> None:
    options = PostgresOptions.parse(
        "postgresql://app:s3cret@db.example:6432/prod?schema=flows&pool_size=4"
        "&sslmode=require&application_name=worker"
    )
    assert options.schema == "flows"
    assert options.pool_size == 4
    assert "schema" not in options.conninfo and "pool_size" not in options.conninfo
    assert "sslmode=require" in options.conninfo and "s3cret" in options.conninfo
    assert "s3cret" not in options.location, "the location is shown in messages"
    assert options.location.startswith("postgresql://app@db.example:6432/prod?")
    assert "schema=flows" in options.location


def test_url_defaults_and_password_parameter_hidden() -> None:
    options = PostgresOptions.parse("postgres://h/db?password=pw")
    assert (options.schema, options.pool_size) == ("public", 10)
    assert "pw" not in options.location


@pytest.mark.parametrize(
    ("query", "match"),
    [("schema=", "schema"), ("schema=" + "x" * 64, "schema"), ("pool_size=0", "pool_size")],
)
def test_bad_url_options(query: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        statevault.open(f"postgresql://localhost/test?{query}")


# -- durability settings ----------------------------------------------------------------
@pytest.mark.parametrize(("durability", "expected"), [("fsync", "on"), ("process", "off")])
def test_session_synchronous_commit(pg_schema: str, durability: str, expected: str) -> None:
    backend = PostgresBackend(pg_url(pg_schema), durability=durability, initial_meta={})  # type: ignore[arg-type]
    try:
        with backend._pool.connection() as conn:
            row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row == (expected,)
    finally:
        backend.close()


def test_server_durability_settings_are_on_here() -> None:
    require_postgres()
    rows = _server(
        "SELECT name, setting FROM pg_settings "
        "WHERE name IN ('fsync', 'full_page_writes', 'synchronous_commit')"
    )
    assert durability_warnings({str(k): str(v) for k, v in rows}) == []


def test_durability_warnings_name_each_unsafe_setting() -> None:
    problems = durability_warnings(
        {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}
    )
    assert len(problems) == 3
    assert "fsync is 'off'" in problems[0]
    assert "full_page_writes is 'off'" in problems[1]
    assert durability_warnings({"synchronous_commit": "local"}) == []


# -- tables -----------------------------------------------------------------------------
def test_tables_live_in_the_schema_and_carry_a_layout_version(
    backend: PostgresBackend, pg_schema: str
) -> None:
    tables = _server(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", pg_schema
    )
    assert [name for (name,) in tables] == [
        "statevault_checkpoints",
        "statevault_leases",
        "statevault_listeners",
        "statevault_meta",
        "statevault_objects",
        "statevault_quarantine",
    ]
    assert backend.get_meta()[LAYOUT_KEY] == str(LAYOUT_VERSION).encode()


def test_schemas_keep_vaults_apart(pg_schema: str) -> None:
    other = pg_schema + "_b"
    try:
        with statevault.open(pg_url(pg_schema)) as a, statevault.open(pg_url(other)) as b:
            a.run("r").save({"vault": "a"})
            b.run("r").save({"vault": "b"})
            assert a.run("r").load() == {"vault": "a"}
            assert b.run("r").load() == {"vault": "b"}
            assert a.vault_id != b.vault_id
    finally:
        drop_pg_schema(other)


def test_odd_schema_names_are_quoted(pg_schema: str) -> None:
    odd = pg_schema + ' "; DROP TABLE x; --'
    try:
        with statevault.open(pg_url(odd.replace(" ", "%20").replace(";", "%3B"))) as vault:
            vault.run("r").save({"ok": True})
            assert vault.run("r").load() == {"ok": True}
        assert _server("SELECT 1 FROM pg_namespace WHERE nspname = %s", odd) == [(1,)]
    finally:
        drop_pg_schema(odd)


def test_run_ids_sort_by_code_point_whatever_the_collation(backend: PostgresBackend) -> None:
    ids = ["a", "B", "b", "_", "é", "z", "Z", "ä", "\U0001f680", "a b", "a-b", "ab"]
    for run_id in ids:
        backend.commit_checkpoint(run_id, 1, b"x", expected_head=0)
    assert backend.list_runs() == sorted(ids)
    assert backend.list_runs("a") == ["a", "a b", "a-b", "ab"]


def test_newer_layout_is_refused(backend: PostgresBackend, pg_schema: str) -> None:
    backend.set_meta(LAYOUT_KEY, str(LAYOUT_VERSION + 1).encode())
    with pytest.raises(statevault.UnsupportedFormatError, match="table layout"):
        PostgresBackend(pg_url(pg_schema), initial_meta={})


def test_newer_vault_format_is_refused(pg_schema: str) -> None:
    with statevault.open(pg_url(pg_schema)) as vault:
        vault.run("r").save({"v": 1})
    _server(f'UPDATE "{pg_schema}".statevault_meta SET value = %s WHERE key = %s', b"99", "format")
    with pytest.raises(statevault.UnsupportedFormatError, match="format 99"):
        statevault.open(pg_url(pg_schema))


def test_create_false_creates_nothing(pg_schema: str) -> None:
    with pytest.raises(statevault.NotAVaultError, match="create=False"):
        statevault.open(pg_url(pg_schema), create=False)
    assert _server("SELECT 1 FROM pg_namespace WHERE nspname = %s", pg_schema) == []


def test_concurrent_creation_leaves_one_vault(pg_schema: str) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            with statevault.open(pg_url(pg_schema)) as vault:
                ids.append(vault.vault_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1, "every opener sees the first creator's metadata"


# -- errors -----------------------------------------------------------------------------
def test_refused_connection_is_a_clear_storage_error() -> None:
    started = time.monotonic()
    with pytest.raises(
        statevault.StorageError, match=r"cannot connect to PostgreSQL at .*:1/"
    ) as e:
        statevault.open("postgresql://postgres:pw@127.0.0.1:1/test")
    assert time.monotonic() - started < 10
    assert "pw" not in str(e.value)
    assert "server is running" in str(e.value)


def test_missing_database_is_a_clear_storage_error() -> None:
    require_postgres()
    url = PG_DSN.rsplit("/", 1)[0] + "/statevault_no_such_db"
    with pytest.raises(statevault.StorageError, match="does not exist"):
        statevault.open(url)


def test_busy_pool_times_out_with_the_reason(pg_schema: str) -> None:
    backend = PostgresBackend(pg_url(pg_schema, pool_size="1"), initial_meta={}, timeout=0.3)
    try:
        busy = pytest.raises(statevault.StorageError, match="connections of this vault stayed")
        with backend._pool.connection(), busy:  # the only connection, held
            backend.head("r")
        assert backend.head("r") == 0
    finally:
        backend.close()


def test_closed_backend_refuses(backend: PostgresBackend) -> None:
    backend.close()
    with pytest.raises(statevault.VaultClosedError):
        backend.list_runs()


def test_missing_driver_names_the_extra() -> None:
    # A real interpreter in which psycopg cannot be imported.
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import statevault\n"
        "try:\n"
        "    statevault.open('postgresql://localhost/test')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install statevault[postgres]" in out.stdout


# -- transactions -----------------------------------------------------------------------
def test_large_commit_spans_several_statements_atomically(backend: PostgresBackend) -> None:
    # More objects than one statement takes: the batches and the record commit together.
    objects = [(i.to_bytes(4, "big") * 8, b"%d" % i) for i in range(2500)]
    backend.commit_checkpoint("r", 1, b"one", expected_head=0, objects=objects)
    assert len(backend.has_objects(d for d, _ in objects)) == 2500
    more = [(b"\xff" + d[1:], data) for d, data in objects]
    with pytest.raises(statevault.ConflictError):
        backend.commit_checkpoint("r", 1, b"late", expected_head=0, objects=more)
    assert backend.read_checkpoints("r") == backend.read_checkpoints("r", limit=1)


def test_a_writer_blocked_on_the_head_row_sees_the_delete(
    backend: PostgresBackend, pg_schema: str
) -> None:
    """The ABA case with real concurrency: the run is deleted and saved again while a
    writer that expects the old head waits on its row lock."""
    backend.commit_checkpoint("r", 1, b"old-1", expected_head=0)
    with psycopg.connect(PG_DSN) as other:
        other.execute(f'DELETE FROM "{pg_schema}".statevault_checkpoints WHERE run_id = %s', ("r",))
        other.execute(
            f'INSERT INTO "{pg_schema}".statevault_checkpoints VALUES (%s, 1, %s)', ("r", b"new-1")
        )
        outcome: list[BaseException | None] = []

        def late_writer() -> None:
            try:
                backend.commit_checkpoint(
                    "r", 2, b"late", expected_head=1, expected_record=b"old-1"
                )
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=late_writer)
        thread.start()
        time.sleep(0.3)  # the writer now waits on the old head row, which `other` deleted
        other.commit()
        thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], statevault.ConflictError)
    assert [c.record for c in backend.read_checkpoints("r")] == [b"new-1"]


def test_roll_back_waits_for_a_commit_in_flight_and_leaves_no_gap(
    backend: PostgresBackend, pg_schema: str
) -> None:
    """A DELETE sees only rows committed when it starts: without locking the head first,
    a commit in flight would leave its record behind, above a gap."""
    for seq in (1, 2, 3):
        backend.commit_checkpoint("r", seq, b"%d" % seq, expected_head=seq - 1)
    table = f'"{pg_schema}".statevault_checkpoints'
    with psycopg.connect(PG_DSN) as in_flight:  # a commit of seq 4, as the backend makes it
        in_flight.execute(f"SELECT 1 FROM {table} WHERE run_id = 'r' AND seq = 3 FOR UPDATE")
        in_flight.execute(f"INSERT INTO {table} VALUES ('r', 4, 'four')")
        removed: list[list[int]] = []
        thread = threading.Thread(
            target=lambda: removed.append([c.seq for c in backend.roll_back("r", 1)])
        )
        thread.start()
        time.sleep(0.3)
        assert thread.is_alive(), "the roll back waits for the head row"
        in_flight.commit()
        thread.join(timeout=30)
    assert removed == [[2, 3, 4]]
    assert [c.seq for c in backend.read_checkpoints("r")] == [1]


def test_a_commit_waits_for_a_lease_change_and_sees_the_new_token(
    backend: PostgresBackend, pg_schema: str
) -> None:
    """Fencing under a row lock: a takeover in progress holds the lease row; a commit with
    the old token waits for it and is then refused, never slipping in before it."""
    grant = backend.acquire_lease("r", "old", 0.5)
    time.sleep(0.6)
    with psycopg.connect(PG_DSN) as takeover:
        takeover.execute(
            f'UPDATE "{pg_schema}".statevault_leases SET owner = %s, token = %s, '
            "expires_at = extract(epoch FROM now()) + 30 WHERE run_id = 'r'",
            ("new", grant.token + 1),
        )
        outcome: list[BaseException | None] = []

        def stale_commit() -> None:
            try:
                backend.commit_checkpoint(
                    "r", 1, b"stale", expected_head=0, lease_token=grant.token
                )
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=stale_commit)
        thread.start()
        time.sleep(0.3)
        assert thread.is_alive(), "the commit waits on the lease row"
        takeover.commit()
        thread.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], statevault.LeaseLost)
    assert "later lease" in str(outcome[0])
    assert backend.head("r") == 0


def test_lease_times_come_from_the_server_clock(backend: PostgresBackend) -> None:
    grant = backend.acquire_lease("r", "me", 60)
    (server_now,) = _server("SELECT extract(epoch FROM clock_timestamp())::float8")[0]
    assert abs(grant.expires_at - 60 - float(server_now)) < 5  # type: ignore[arg-type]


# -- notification -----------------------------------------------------------------------
def _raw_listener(channel: str) -> Any:
    conn = psycopg.connect(PG_DSN, autocommit=True)
    conn.execute(f'LISTEN "{channel}"')
    return conn


def _heard(conn: Any, timeout: float) -> list[str]:
    """The payloads of what arrives within `timeout`, or until the first one."""
    return [n.payload for n in conn.notifies(timeout=timeout, stop_after=1)]


def test_commits_notify_only_while_someone_listens(backend: PostgresBackend) -> None:
    channel = backend._sql.channel
    with _raw_listener(channel) as raw:  # hears NOTIFYs, but is not registered
        backend.commit_checkpoint("quiet", 1, b"x", expected_head=0)
        assert _heard(raw, 0.3) == [], "no listener registered: no NOTIFY"
        listener = backend.listen()
        try:
            backend.commit_checkpoint("loud", 1, b"x", expected_head=0)
            assert _heard(raw, 5) == ["loud"]
            assert listener.wait(5) is True
            backend.delete_run("loud")
            assert listener.wait(5) is True
            assert backend.roll_back("quiet", 0)
            assert listener.wait(5) is True
            assert listener.wait(0.1) is False
        finally:
            listener.close()
        assert set(_heard(raw, 1) + _heard(raw, 0.3)) == {"loud", "quiet"}
        backend.commit_checkpoint("quiet", 1, b"y", expected_head=0)
        assert _heard(raw, 0.3) == [], "the listener unregistered on close"


def test_listener_survives_losing_its_connection(backend: PostgresBackend) -> None:
    listener = backend.listen()
    try:
        _server(
            "SELECT pg_terminate_backend(pid) FROM "
            f"{backend._sql.listeners_table} WHERE pid <> pg_backend_pid()"
        )
        assert listener.wait(5) is True, "a lost connection may have lost notifications"
        backend.commit_checkpoint("r", 1, b"x", expected_head=0)
        assert listener.wait(5) is True
    finally:
        listener.close()


def test_dead_listeners_are_forgotten(backend: PostgresBackend, pg_schema: str) -> None:
    table = f'"{pg_schema}".statevault_listeners'
    _server(f"INSERT INTO {table} (pid) VALUES (2147483000)")  # no such server process
    listener = backend.listen()
    try:
        pids = [pid for (pid,) in _server(f"SELECT pid FROM {table}")]
        assert 2147483000 not in pids and len(pids) == 1
    finally:
        listener.close()
    assert _server(f"SELECT pid FROM {table}") == []
