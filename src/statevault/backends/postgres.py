"""PostgreSQL: one vault shared by processes on many hosts, through a server.

The tables are SQLite's, in a schema of the caller's choice (`?schema=` in the URL), so
several vaults, or the tests, can share one database:

    statevault_meta         key text -> value bytea
    statevault_objects      digest bytea -> data bytea (stored out of line, uncompressed)
    statevault_checkpoints  (run_id text COLLATE "C", seq bigint) -> record bytea
    statevault_leases       run_id -> owner, fencing token, expires_at (server clock)
    statevault_listeners    backend pids of connections that LISTEN for changes
    statevault_quarantine   objects moved aside by repair, never deleted

Why it is built this way:
- Every change is one transaction, and with `durability="fsync"` each connection runs
  with `synchronous_commit=on`, so a commit returns only once the server has flushed
  its WAL. Group commit is the server's: commits of concurrent connections share WAL
  flushes, so this module needs no group-commit queue of its own (SQLite's has one).
- A commit is one statement: it locks the run's head row (`FOR UPDATE`) and lease row
  (`FOR SHARE`), checks the lease and compares the head with what the writer expected,
  and inserts the next seq only if both pass. The primary key (run_id, seq) makes two
  writers that both saw no head collide on the insert; the loser gets `ConflictError`.
  The head lock closes the ABA hole: a run deleted and saved again between the
  writer's read and its insert cannot slip under it, because the delete must wait for
  (or has already removed) the very row the writer locked. The lease lock is the
  fencing: a successor's `acquire_lease` updates that row, so it waits until a commit
  checked under the old lease has finished, and a commit waiting on it sees the new
  token. One statement is one round trip, and an implicit transaction.
- Objects are written before the head row is locked, in digest order, in the same
  transaction. Every transaction thus takes its locks in one global order (objects by
  digest, then the head), so two commits sharing objects cannot deadlock.
- `run_id` uses the "C" collation: run ids sort by code point as in every other
  backend, and the primary key index serves prefix listing as a range scan, whatever
  the database's default collation is.
- A connection lost mid-call (the server restarted, a backend was terminated) is
  retried on a fresh connection until `timeout` runs out. That is safe for every call:
  reads and object writes are idempotent, and a commit whose outcome is unknown is
  retried under the same compare-and-swap; if the retry conflicts, the record at its
  seq tells whether the first attempt landed.
- The async API is native without an async copy of this module: a brief call runs
  on the event loop's thread in a greenlet, and `_call` hands its statements to
  psycopg's async connections (`statevault.bridge`, `_DrivenSession`). Every method
  here is written once, against `_Session`.
- Change notification is LISTEN/NOTIFY, sent only while someone listens: a NOTIFY
  makes the server serialize the commits that send one (measured here: 16 writers
  fell from ~6,800 to ~760 commits/s), so commits check the listeners table first.
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from statevault import bridge
from statevault.backends.base import (
    Capabilities,
    Durability,
    LeaseGrant,
    Rewrite,
    StoredCheckpoint,
    check_bytes,
    check_keep_through,
    check_lease_args,
    check_next_seq,
    check_rewrites,
    check_run_id,
    check_token,
    check_ttl,
    check_write_lease,
    checked_objects,
    grant_lease,
    prefix_upper_bound,
    released_grant,
    renew_grant,
)
from statevault.errors import (
    ConflictError,
    DurabilityWarning,
    NotAVaultError,
    StorageError,
    UnsupportedFormatError,
    VaultClosedError,
)
from statevault.faults import crash_point, register

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ModuleNotFoundError(
        "PostgreSQL support needs psycopg 3 and psycopg-pool: `pip install statevault[postgres]`",
        name=exc.name,
    ) from exc

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]
AsyncConnection = psycopg.AsyncConnection[tuple[Any, ...]]


class _Rows(Protocol):
    """A statement's result, as the methods below read it."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...


class _Session(Protocol):
    """A pooled connection as the methods below use it: psycopg's own, or, for a call
    driven on an event loop, an async one behind blocking calls (`_DrivenSession`)."""

    def execute(self, query: bytes, params: Any = None, *, binary: bool = False) -> _Rows: ...

    def transaction(self) -> AbstractContextManager[Any]: ...

    def pipeline(self) -> AbstractContextManager[Any]: ...


LAYOUT_VERSION = 1
"""The version of the tables above. It is stored under `LAYOUT_KEY` in the vault's
metadata; a vault whose tables are newer than this module knows is refused."""
LAYOUT_KEY = "postgres_layout"

DEFAULT_SCHEMA = "public"
DEFAULT_POOL_SIZE = 10
URL_OPTIONS = ("schema", "pool_size")
"""Query parameters statevault reads from the URL; every other one goes to libpq."""

_BATCH_COUNT = 1000
_BATCH_BYTES = 32 << 20
"""Bounds of one statement's object batch: large saves go as several statements of one
transaction, so no single message holds gigabytes (a bytea array caps at 1 GB)."""

_LOST_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: pg_terminate_backend, or a fast/immediate shutdown
        "57P02",  # crash_shutdown: another backend crashed and the server restarts
        "57P03",  # cannot_connect_now: the server is starting up or shutting down
        "57P05",  # idle_session_timeout: the server closed an idle connection
        "25P03",  # idle_in_transaction_session_timeout: see `_locking_transaction`
    }
)
_ROLLED_BACK_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure: the transaction was rolled back whole
        "40P01",  # deadlock_detected: likewise
    }
)

_SERVER_SETTINGS = ("fsync", "full_page_writes", "synchronous_commit")

_CRASH_BEFORE_COMMIT = register(
    "postgres.commit.before", "a commit's statements are built; none was sent to the server"
)
_CRASH_AFTER_COMMIT = register(
    "postgres.commit.after", "the commit statement returned (durable); the caller has not been told"
)

LOCK_HOLD_LIMIT = "5s"
"""How long the server waits for a frozen client inside a transaction holding row locks
(see `_locking_transaction`)."""


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """A vault URL taken apart.

    Attributes:
        conninfo: what libpq gets: the URL without statevault's own query parameters.
        schema: the schema holding the vault's tables.
        pool_size: most connections this process opens to the vault.
        location: the URL without its password, for messages.
    """

    conninfo: str
    schema: str
    pool_size: int
    location: str

    @classmethod
    def parse(cls, url: str) -> PostgresOptions:
        """Split `postgresql://user@host:port/db?schema=s&pool_size=n&sslmode=...`."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"a PostgreSQL vault URL starts with postgresql://; got {url!r}")
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in URL_OPTIONS:
                ours[key] = value
            else:
                theirs.append((key, value))
        schema = ours.get("schema", DEFAULT_SCHEMA)
        if not schema or "\x00" in schema or len(schema.encode()) > 63:
            raise ValueError(
                f"?schema= must name a PostgreSQL schema (1-63 bytes, no NUL); got {schema!r}"
            )
        size_text = ours.get("pool_size", str(DEFAULT_POOL_SIZE))
        if not size_text.isdigit() or int(size_text) < 1:
            raise ValueError(f"?pool_size= must be a whole number >= 1; got {size_text!r}")
        conninfo = urlunsplit(parts._replace(query=urlencode(theirs)))
        userinfo, at, hostinfo = parts.netloc.rpartition("@")
        shown_netloc = f"{userinfo.partition(':')[0]}{at}{hostinfo}"
        shown = [(k, v) for k, v in theirs if k != "password"] + [("schema", schema)]
        location = urlunsplit(parts._replace(netloc=shown_netloc, query=urlencode(shown)))
        return cls(conninfo, schema, int(size_text), location)


def durability_warnings(settings: Mapping[str, str]) -> list[str]:
    """What in the server's settings (name -> value) breaks durable commits, if anything."""
    problems = []
    for name in ("fsync", "full_page_writes"):
        if settings.get(name, "on") != "on":
            problems.append(
                f"{name} is {settings[name]!r}: a crash of the server's machine can lose or "
                f"corrupt committed data. Set `{name} = on` in postgresql.conf."
            )
    if settings.get("synchronous_commit", "on") in ("off", "false", "no", "0"):
        problems.append(
            "synchronous_commit is 'off': a commit returns before it is flushed, so the "
            "server's crash can lose it."
        )
    return problems


class PostgresBackend:
    """A vault in a PostgreSQL database, through a pool of connections.

    Args:
        url: `postgresql://user:password@host:port/database`, with optional query
            parameters `schema` (default `public`) and `pool_size` (default 10); any
            other parameter (`sslmode`, `application_name`, ...) goes to libpq.
        durability: "fsync": a commit returns once the server flushed it
            (`synchronous_commit=on`). "process": `synchronous_commit=off`; a commit
            survives a crash of this process, not of the server.
        initial_meta: metadata written when the tables are created.
        timeout: seconds a call waits for a connection, and keeps retrying one that was
            lost, before it raises `StorageError`.
        create: when False, a database without the vault's tables raises
            `NotAVaultError` and nothing is created.

    Raises:
        StorageError: the server cannot be reached, or refused the connection.
        NotAVaultError: `create=False` and no vault is there.
        UnsupportedFormatError: a newer statevault made the tables.

    Example:
        >>> backend = PostgresBackend(                                # doctest: +SKIP
        ...     "postgresql://app@db.internal/app?schema=workflows", initial_meta={}
        ... )
    """

    capabilities = Capabilities(
        persistent=True,
        multi_process=True,
        durable_fsync=True,
        leases=True,
        notify=True,
        rewrite_records=True,
    )

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "fsync",
        initial_meta: Mapping[str, bytes],
        timeout: float = 30.0,
        create: bool = True,
    ) -> None:
        self._options = PostgresOptions.parse(url)
        self._durability = durability
        self._timeout = timeout
        self._closed = False
        self._close_lock = threading.Lock()
        self._listeners: weakref.WeakSet[_PostgresListener] = weakref.WeakSet()
        self._executor: ThreadPoolExecutor | None = None
        self._driven_pool: AsyncConnectionPool[AsyncConnection] | None = None
        """The pool of calls driven on an event loop (`offload`), made on first use."""
        self._driven_loop: asyncio.AbstractEventLoop | None = None
        self._driven_pool_open: asyncio.Task[None] | None = None
        self._driven_pool_guard: asyncio.Task[None] | None = None
        self._thread_prefix = f"statevault-pg-{id(self):x}"
        self._sql = _Statements(self._options.schema)
        with self._connect_directly() as conn:
            self._check_settings(conn)
            self._open_tables(conn, initial_meta, create=create)
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            self._options.conninfo,
            min_size=1,
            max_size=self._options.pool_size,
            kwargs={"autocommit": True},
            configure=self._configure,
            timeout=timeout,
            name=f"statevault {self._options.location}",
            open=True,
        )

    @property
    def location(self) -> str:
        return self._options.location

    # -- connections --------------------------------------------------------------------
    def _configure(self, conn: Connection) -> None:
        conn.execute(*self._session_settings())

    async def _configure_async(self, conn: AsyncConnection) -> None:
        await conn.execute(*self._session_settings())

    def _session_settings(self) -> tuple[bytes, tuple[str]]:
        # Set per session, not left to the server's default: a role or database default
        # of `off` would otherwise make "fsync" commits return before their flush.
        level = "on" if self._durability == "fsync" else "off"
        return b"SELECT set_config('synchronous_commit', %s, false)", (level,)

    def _connect_directly(self) -> Connection:
        """A connection outside the pool: for opening, whose errors name the cause exactly,
        and for listeners, which keep theirs."""
        try:
            conn = psycopg.connect(
                self._options.conninfo, autocommit=True, connect_timeout=max(1, int(self._timeout))
            )
        except psycopg.Error as exc:
            raise StorageError(
                f"cannot connect to PostgreSQL at {self.location}: {_first_line(exc)}. Check "
                f"that the server is running and that the URL's host, port, database and "
                f"user are right."
            ) from exc
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_settings(self, conn: Connection) -> None:
        if self._durability != "fsync":
            return
        rows = conn.execute(
            b"SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(_SERVER_SETTINGS),)
        ).fetchall()
        for problem in durability_warnings({str(name): str(value) for name, value in rows}):
            warnings.warn(f"{self.location}: {problem}", DurabilityWarning, stacklevel=4)

    def _open_tables(
        self, conn: Connection, initial_meta: Mapping[str, bytes], *, create: bool
    ) -> None:
        exists = conn.execute(
            b"SELECT to_regclass(format('%%I.%%I', %s::text, 'statevault_meta')) IS NOT NULL",
            (self._options.schema,),
        ).fetchone()
        if exists and exists[0]:
            self._check_layout(conn)
            return
        if not create:
            raise NotAVaultError(self.location, "no vault exists there (create=False)")
        with conn.transaction():
            # Two processes creating the same vault at once queue here; the second finds
            # the tables made and its INSERT ... DO NOTHING leaves the first one's meta.
            conn.execute(b"SELECT pg_advisory_xact_lock(%s)", (self._sql.creation_lock,))
            schema_known = conn.execute(
                b"SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._options.schema,)
            ).fetchone()
            if schema_known is None:
                # Only when missing: CREATE SCHEMA needs a privilege that a role owning
                # just the schema it was given may lack.
                conn.execute(self._sql.create_schema)
            for statement in self._sql.create_tables:
                conn.execute(statement)
            meta = {**initial_meta, LAYOUT_KEY: str(LAYOUT_VERSION).encode()}
            with conn.cursor() as cur:
                cur.executemany(self._sql.insert_meta_if_absent, list(meta.items()))
        self._check_layout(conn)

    def _check_layout(self, conn: Connection) -> None:
        row = conn.execute(self._sql.get_layout, (LAYOUT_KEY,)).fetchone()
        raw = bytes(row[0]) if row else b""
        if not raw.isdigit():
            raise NotAVaultError(
                self.location,
                f"its statevault_meta table has no readable {LAYOUT_KEY!r} entry ({raw[:20]!r})",
            )
        if int(raw) > LAYOUT_VERSION:
            raise UnsupportedFormatError(
                found=int(raw), supported=LAYOUT_VERSION, what="vault's PostgreSQL table layout"
            )

    def _check_open(self) -> None:
        if self._closed:
            raise VaultClosedError(f"the vault {self.location} is closed; open it again")

    def _call(self, work: Callable[[_Session], T]) -> T:
        """Run `work` on a pooled connection, again on a fresh one if it was lost.

        `work` must be safe to run again after a failure (see the module docstring);
        errors it raises itself (`ConflictError`, `LeaseHeld`, ...) pass through.
        """
        deadline = time.monotonic() + self._timeout
        pause = 0.02
        lost: psycopg.Error | None = None
        while True:
            self._check_open()
            try:
                with self._session(max(0.0, deadline - time.monotonic())) as conn:
                    return work(conn)
            except PoolTimeout as exc:
                if lost is not None:
                    raise self._storage_error(lost) from exc
                raise self._unreachable() from exc
            except psycopg.Error as exc:
                if not _retryable(exc) or time.monotonic() + pause > deadline:
                    raise self._storage_error(exc) from exc
                lost = exc
            # Other idle connections of the pool died with this one if the server
            # restarted; checking them now spares each later call a failed first try.
            bridge.sleep(pause)
            pause = min(pause * 2, 1.0)
            if bridge.driven():
                bridge.wait_for(self._driven_pool_now().check())
            else:
                self._pool.check()

    def _session(self, timeout: float) -> AbstractContextManager[_Session]:
        """A pooled connection: of the async pool if this call is driven on its loop."""
        if bridge.driven():
            return _driven_session(self._driven_pool_now(), timeout)
        return self._pool.connection(timeout=timeout)

    def _driven_pool_now(self) -> AsyncConnectionPool[AsyncConnection]:
        pool = self._driven_pool
        assert pool is not None, "driven calls start in `offload`, which makes the pool"
        return pool

    def _unreachable(self) -> StorageError:
        try:
            probe = psycopg.connect(self._options.conninfo, connect_timeout=2)
        except psycopg.Error as cause:
            reason = _first_line(cause)
        else:
            probe.close()
            reason = f"all {self._options.pool_size} connections of this vault stayed busy"
        return StorageError(
            f"no connection to PostgreSQL at {self.location} within {self._timeout:g}s "
            f"({reason}); nothing was written. Retry once the server is reachable, or open "
            f"with a larger `timeout=` or `?pool_size=`."
        )

    def _storage_error(self, exc: psycopg.Error) -> StorageError:
        if _connection_lost(exc):
            return StorageError(
                f"lost the connection to PostgreSQL at {self.location} and could not get it "
                f"back within {self._timeout:g}s ({_first_line(exc)}). What was being written "
                f"was not acknowledged: load the run to see its newest checkpoint."
            )
        return StorageError(
            f"PostgreSQL at {self.location} failed ({_first_line(exc)}); nothing was written"
        )

    def _rows(
        self, query: bytes, params: Sequence[object] | Mapping[str, object] = ()
    ) -> list[tuple[Any, ...]]:
        """All rows of a read (binary results: bytea arrives as bytes, not hex text)."""
        return self._call(lambda conn: conn.execute(query, params, binary=True).fetchall())

    # -- metadata ---------------------------------------------------------------------
    def get_meta(self) -> dict[str, bytes]:
        return {str(key): bytes(value) for key, value in self._rows(self._sql.get_meta)}

    def set_meta(self, key: str, value: bytes) -> None:
        check_bytes("value", value)
        self._call(lambda conn: conn.execute(self._sql.set_meta, (key, value)))

    # -- objects ------------------------------------------------------------------------
    def put_objects(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        batches = _object_batches(checked_objects(items))
        if batches:
            self._call(lambda conn: self._write(conn, batches, None))

    def _write(
        self,
        conn: _Session,
        batches: list[tuple[list[bytes], list[bytes]]],
        statement: tuple[bytes, Mapping[str, object]] | None,
    ) -> _Rows | None:
        """Object batches, then `statement`, as one transaction; the statement's cursor.

        A lone statement runs as its own implicit transaction: one round trip. More go
        in a pipeline, so a remote server is not waited for after each of them.
        """
        steps: list[tuple[bytes, Any]] = [(self._sql.put_objects, batch) for batch in batches]
        if statement is not None:
            steps.append(statement)
        if len(steps) == 1:
            return conn.execute(*steps[0])
        cursor = None
        with conn.pipeline(), conn.transaction():
            for query, params in steps:
                cursor = conn.execute(query, params)
        return cursor if statement is not None else None

    def get_objects(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        for batch in _digest_batches(digests):
            rows = self._rows(self._sql.get_objects, (batch,))
            found.update((bytes(d), bytes(v)) for d, v in rows)
        return found

    def has_objects(self, digests: Iterable[bytes]) -> set[bytes]:
        present: set[bytes] = set()
        for batch in _digest_batches(digests):
            present.update(bytes(row[0]) for row in self._rows(self._sql.has_objects, (batch,)))
        return present

    def delete_objects(self, digests: Iterable[bytes]) -> None:
        keys = sorted({bytes(d) for d in digests})
        if keys:
            self._call(lambda conn: conn.execute(self._sql.delete_objects, (keys,)))

    def scan_objects(self) -> Iterator[bytes]:
        return (bytes(row[0]) for row in self._rows(self._sql.scan_objects))

    # -- runs ---------------------------------------------------------------------------
    def list_runs(self, prefix: str = "") -> list[str]:
        upper = prefix_upper_bound(prefix)
        if upper is None:
            rows = self._rows(self._sql.list_runs_from, {"low": prefix})
        else:
            rows = self._rows(self._sql.list_runs_between, {"low": prefix, "high": upper})
        return [str(row[0]) for row in rows]

    def head(self, run_id: str) -> int:
        check_run_id(run_id)
        rows = self._rows(self._sql.head, (run_id,))
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

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
        if lease_token is not None:
            check_token(lease_token)
        check_bytes("record", record)
        if expected_record is not None:
            check_bytes("expected_record", expected_record)
        batches = _object_batches(checked_objects(objects))
        params = {
            "run_id": run_id,
            "seq": seq,
            "record": record,
            "expected_head": expected_head,
            "expected_record": expected_record,
            "lease_token": lease_token,
            "channel": self._sql.channel,
        }
        attempts = 0

        def attempt(conn: _Session) -> tuple[Any, ...] | None:
            nonlocal attempts
            attempts += 1
            crash_point(_CRASH_BEFORE_COMMIT)
            try:
                cursor = self._write(conn, batches, (self._sql.commit, params))
            except psycopg.errors.UniqueViolation:
                return None  # another writer inserted this seq after our head check: it won
            assert cursor is not None
            row = cursor.fetchone()
            crash_point(_CRASH_AFTER_COMMIT)
            return row

        verdict = self._call(attempt)
        if verdict is not None and verdict[1]:
            return
        if attempts > 1 and self.read_checkpoint(run_id, seq) == bytes(record):
            # An earlier attempt was cut off after the server had committed it: the record
            # at `seq` is this one, so the commit succeeded.
            return
        if verdict is None:
            raise ConflictError(run_id, expected=expected_head, actual=self.head(run_id))
        head, _, lease_ok, owner, token, expires_at, now, _ = verdict
        if not lease_ok:
            # The statement applied the rule of `check_write_lease` to the lease row and
            # clock it returned; the shared function words the refusal.
            stored = _grant(run_id, owner, token, expires_at)
            check_write_lease(run_id, stored, token=lease_token, now=now)
            raise AssertionError(f"the server and check_write_lease disagree on {stored}")
        raise ConflictError(run_id, expected=expected_head, actual=int(head))

    def rewrite_records(
        self,
        run_id: str,
        rewrites: Sequence[Rewrite],
        *,
        objects: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        check_run_id(run_id)
        checked = check_rewrites(rewrites)
        batches = _object_batches(checked_objects(objects))
        if not checked:
            if batches:
                self._call(lambda conn: self._write(conn, batches, None))
            return 0
        params = {
            "run_id": run_id,
            "seqs": [seq for seq, _, _ in checked],
            "expected": [expected for _, expected, _ in checked],
            "new": [new for _, _, new in checked],
        }

        def attempt(conn: _Session) -> int:
            cursor = self._write(conn, batches, (self._sql.rewrite, params))
            assert cursor is not None
            return cursor.rowcount

        # Safe to run again after a lost reply: a record already rewritten no longer
        # matches its expected bytes, so a retry changes nothing more.
        return int(self._call(attempt))

    def read_checkpoint(self, run_id: str, seq: int) -> bytes | None:
        check_run_id(run_id)
        rows = self._rows(self._sql.read_checkpoint, (run_id, seq))
        return bytes(rows[0][0]) if rows else None

    def read_checkpoints(
        self, run_id: str, *, newest_first: bool = True, limit: int | None = None
    ) -> list[StoredCheckpoint]:
        check_run_id(run_id)
        query = self._sql.read_newest if newest_first else self._sql.read_oldest
        rows = self._rows(query, (run_id, limit))
        return [StoredCheckpoint(int(seq), bytes(record)) for seq, record in rows]

    def delete_run(self, run_id: str, *, lease_token: int | None = None) -> bool:
        check_run_id(run_id)
        if lease_token is not None:
            check_token(lease_token)
        return bool(self._remove(run_id, 0, lease_token, records=False))

    def roll_back(
        self, run_id: str, keep_through: int, *, lease_token: int | None = None
    ) -> list[StoredCheckpoint]:
        check_run_id(run_id)
        check_keep_through(keep_through)
        if lease_token is not None:
            check_token(lease_token)
        return self._remove(run_id, keep_through, lease_token, records=True)

    def _remove(
        self, run_id: str, keep_through: int, lease_token: int | None, *, records: bool
    ) -> list[StoredCheckpoint]:
        """Delete the run's records above `keep_through` under its lease; what was removed.

        Unlike a commit it takes several statements. A DELETE sees only the rows
        committed when it starts, so one that ran while a commit was in flight would
        leave that commit's record behind, above a gap. So it first locks the run's
        newest row, which every commit on the run locks too, and waits for the commit
        holding it; then reads the head again in a new snapshot, and locks that one in
        turn if a newer commit landed meanwhile. Once it holds the newest row, no commit
        can land until this transaction ends, and the DELETE sees every record.
        """
        removed: dict[int, bytes] = {}

        def attempt(conn: _Session) -> None:
            with _locking_transaction(conn):
                self._check_lease(conn, run_id, lease_token)
                while True:
                    locked = conn.execute(self._sql.lock_head, (run_id,)).fetchone()
                    latest = conn.execute(self._sql.head, (run_id,)).fetchone()
                    newest = latest[0] if latest else None
                    if newest is None or (locked is not None and locked[0] == newest):
                        break
                query = self._sql.remove_returning if records else self._sql.remove
                rows = conn.execute(query, (run_id, keep_through), binary=True).fetchall()
                if rows:
                    self._notify(conn, run_id)
                # Collected before COMMIT: if the connection drops during it, a retry
                # finds these rows gone, and they must still be reported as removed.
                for row in rows:
                    removed[int(row[0])] = bytes(row[1]) if records else b""

        self._call(attempt)
        return [StoredCheckpoint(seq, removed[seq]) for seq in sorted(removed)]

    # -- leases -------------------------------------------------------------------------
    def _check_lease(self, conn: _Session, run_id: str, lease_token: int | None) -> None:
        """`check_write_lease` inside `conn`'s transaction, the lease row share-locked."""
        row = conn.execute(self._sql.share_lease, (run_id,)).fetchone()
        now = _server_now(conn, self._sql)
        stored = _grant(run_id, *row) if row else None
        check_write_lease(run_id, stored, token=lease_token, now=now)

    def _change_lease(
        self, run_id: str, decide: Callable[[LeaseGrant | None, float], LeaseGrant | None]
    ) -> LeaseGrant | None:
        """Lock the run's lease row, let `decide` make the new grant, and store it.

        The row is made first if the run never had a lease (with token 0, which reads as
        none), so that concurrent first acquirers queue on its lock instead of racing.
        """

        def attempt(conn: _Session) -> LeaseGrant | None:
            with _locking_transaction(conn):
                conn.execute(self._sql.ensure_lease, (run_id,))
                row = conn.execute(self._sql.lock_lease, (run_id,)).fetchone()
                # Read after the lock is held: a wait for it must not age the clock.
                now = _server_now(conn, self._sql)
                grant = decide(_grant(run_id, *row) if row else None, now)
                if grant is not None:
                    conn.execute(
                        self._sql.store_lease,
                        (grant.owner, grant.token, grant.expires_at, run_id),
                    )
                return grant

        return self._call(attempt)

    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> LeaseGrant:
        check_run_id(run_id)
        check_lease_args(owner, ttl)
        grant = self._change_lease(
            run_id,
            lambda stored, now: grant_lease(run_id, stored, owner=owner, ttl=ttl, now=now),
        )
        assert grant is not None
        return grant

    def renew_lease(self, run_id: str, token: int, ttl: float) -> LeaseGrant:
        check_run_id(run_id)
        check_token(token)
        check_ttl(ttl)
        grant = self._change_lease(
            run_id,
            lambda stored, now: renew_grant(run_id, stored, token=token, ttl=ttl, now=now),
        )
        assert grant is not None
        return grant

    def release_lease(self, run_id: str, token: int) -> None:
        check_run_id(run_id)
        check_token(token)
        self._change_lease(run_id, lambda stored, now: released_grant(stored, token=token, now=now))

    def read_lease(self, run_id: str) -> LeaseGrant | None:
        check_run_id(run_id)
        rows = self._rows(self._sql.read_lease, (run_id,))
        return _grant(run_id, *rows[0]) if rows else None

    # -- repair -------------------------------------------------------------------------
    def quarantine_objects(self, digests: Iterable[bytes]) -> int:
        keys = sorted({bytes(d) for d in digests})
        if not keys:
            return 0

        def attempt(conn: _Session) -> int:
            # One transaction: a crash leaves every object either in place or aside.
            with _locking_transaction(conn):
                moved = 0
                for start in range(0, len(keys), _BATCH_COUNT):
                    batch = keys[start : start + _BATCH_COUNT]
                    row = conn.execute(self._sql.quarantine, (batch,)).fetchone()
                    moved += int(row[0]) if row else 0
                return moved

        return self._call(attempt)

    def quarantined_objects(self) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        for digest, data in self._rows(self._sql.quarantined):
            found.setdefault(bytes(digest), bytes(data))
        return found

    # -- notification -------------------------------------------------------------------
    def _notify(self, conn: _Session, run_id: str) -> None:
        """Notify listeners of a change to `run_id` when `conn`'s transaction commits."""
        conn.execute(self._sql.notify, {"channel": self._sql.channel, "run_id": run_id})

    def listen(self) -> _PostgresListener:
        """Subscribe to changes of every run: LISTEN on a connection of its own."""
        self._check_open()
        listener = _PostgresListener(self)
        self._listeners.add(listener)
        return listener

    # -- async ------------------------------------------------------------------------
    async def offload(self, call: Callable[[], T], *, brief: bool = True) -> T:
        """Run a blocking call of the async API without blocking the event loop.

        A `brief` call is driven on the loop itself (`statevault.bridge`): its
        statements go through psycopg's async connections, of a pool made on the first
        such call and bound to its loop, and it costs no thread hop. Other calls (verify,
        repair), calls made from a second loop while the first still runs, and calls
        without the `greenlet` package run on this vault's own threads: as many as the
        pool has connections, plus a few for listeners waiting on notifications, so
        that awaiting calls queue for a thread instead of holding one of the loop's
        default executor while they wait for a connection.
        """
        if brief and await self.driving():
            return await bridge.drive(call)
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        loop = asyncio.get_running_loop()
        with self._close_lock:
            self._check_open()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._options.pool_size + 4, thread_name_prefix=self._thread_prefix
                )
            executor = self._executor
        return await loop.run_in_executor(executor, call)

    async def driving(self) -> bool:
        """True if brief calls from the running loop are driven on it; its pool is ready."""
        import asyncio  # noqa: PLC0415 - loaded already: a loop is running

        if not bridge.available() or not self._drive_on(asyncio.get_running_loop()):
            return False
        assert self._driven_pool_open is not None
        await self._driven_pool_open
        return True

    def _drive_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """True if calls may be driven on `loop`: the async pool is its, or made for it now.

        A pool serves one loop. A later loop takes over once the first has closed (a
        program calling `asyncio.run` twice); while it runs, other loops use threads.
        """
        with self._close_lock:
            self._check_open()
            if self._driven_loop is loop:
                return True
            if self._driven_loop is not None and not self._driven_loop.is_closed():
                return False
            self._driven_pool = pool = AsyncConnectionPool(
                self._options.conninfo,
                min_size=1,
                max_size=self._options.pool_size,
                kwargs={"autocommit": True},
                configure=self._configure_async,
                timeout=self._timeout,
                name=f"statevault {self._options.location} (async)",
                open=False,
            )
            self._driven_loop = loop
            self._driven_pool_open = loop.create_task(pool.open())
            self._driven_pool_guard = loop.create_task(_close_at_shutdown(pool))
            return True

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
            guard, self._driven_pool_guard = self._driven_pool_guard, None
            self._driven_pool = None
            loop, self._driven_loop = self._driven_loop, None
        for listener in list(self._listeners):
            listener.close()
        if executor is not None:
            # `await vault.aclose()` closes from one of these threads, which cannot wait
            # for itself; the others finish their calls (which now find the vault closed).
            own = threading.current_thread().name.startswith(self._thread_prefix)
            executor.shutdown(wait=not own)
        self._pool.close()
        if guard is not None and loop is not None and not loop.is_closed():
            _close_driven_pool(guard, loop)


class _PostgresListener:
    """A LISTEN connection; `wait` returns when a NOTIFY of the vault's channel arrives.

    It registers its server pid in `statevault_listeners`, which is what makes commits
    send notifications at all. A pid left by a listener that died without closing only
    costs commits their NOTIFY until the next `listen()` clears pids the server no
    longer runs.
    """

    def __init__(self, backend: PostgresBackend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        # Connecting blocks: on a worker thread when driven, so the loop runs on.
        self._conn = bridge.off_loop(self._subscribe)

    def _subscribe(self) -> Connection:
        backend = self._backend
        conn = backend._connect_directly()
        try:
            conn.execute(backend._sql.listen)
            conn.execute(backend._sql.forget_dead_listeners)
            conn.execute(backend._sql.register_listener)
        except psycopg.Error as exc:
            conn.close()
            raise backend._storage_error(exc) from exc
        return conn

    def wait(self, timeout: float) -> bool:
        if bridge.driven():
            return self._wait_driven(timeout)
        with self._lock:
            conn = self._connection()
            try:
                woken = any(True for _ in conn.notifies(timeout=timeout, stop_after=1))
                if woken:
                    _drain(conn)
                return woken
            except psycopg.Error:
                return self._resubscribe(conn)

    def _wait_driven(self, timeout: float) -> bool:
        """`wait` on the event loop: the connection's socket is watched by the loop, and
        no thread waits (nor holds this listener's lock while it waits)."""
        conn = self._connection()
        try:
            if _drain(conn):  # arrived with an earlier reply, or since the last wait
                return True
            if not bridge.wait_for(_readable(conn.fileno(), timeout)):
                return False
            if self._conn is not conn:
                return True  # closed or subscribed again meanwhile: say so
            return _drain(conn)
        except psycopg.Error:
            with self._lock:
                return self._resubscribe(conn)

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is None:
            raise VaultClosedError("this change listener is closed")
        return conn

    def _resubscribe(self, conn: Connection) -> bool:
        """After an error on `conn`: subscribe again; True (something may have changed).

        Notifications sent while the connection was down are lost: the caller hears
        that something may have changed, and the next wait listens on a new connection.
        """
        conn.close()
        if self._conn is conn:
            self._conn = None
            self._conn = bridge.off_loop(self._subscribe)
        return True

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is None:
            return

        def unregister() -> None:
            try:
                conn.execute(self._backend._sql.unregister_listener)
            except psycopg.Error:
                pass  # a dead connection's row is cleared by the next listener
            finally:
                conn.close()

        bridge.off_loop(unregister)


class _DrivenSession:
    """An async connection behind `_Session`'s blocking calls, for a driven call."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    def execute(self, query: bytes, params: Any = None, *, binary: bool = False) -> _Rows:
        return _DrivenRows(bridge.wait_for(self._conn.execute(query, params, binary=binary)))

    def transaction(self) -> AbstractContextManager[Any]:
        return bridge.entered(self._conn.transaction())

    def pipeline(self) -> AbstractContextManager[Any]:
        return bridge.entered(self._conn.pipeline())


class _DrivenRows:
    def __init__(self, cursor: psycopg.AsyncCursor[tuple[Any, ...]]) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return bridge.wait_for(self._cursor.fetchone())

    def fetchall(self) -> list[tuple[Any, ...]]:
        return bridge.wait_for(self._cursor.fetchall())


def _drain(conn: Connection) -> bool:
    """Consume the notifications that have arrived, without waiting; True if any had.

    One wake-up per burst of commits.
    """
    return sum(1 for _ in conn.notifies(timeout=0.0)) > 0


async def _readable(fd: int, timeout: float) -> bool:
    """True once `fd` has bytes to read, False after `timeout` seconds."""
    import asyncio  # noqa: PLC0415 - loaded already: a loop is running

    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
    return True


@contextmanager
def _driven_session(
    pool: AsyncConnectionPool[AsyncConnection], timeout: float
) -> Iterator[_Session]:
    with bridge.entered(pool.connection(timeout=timeout)) as conn:
        yield _DrivenSession(conn)


async def _close_at_shutdown(pool: AsyncConnectionPool[AsyncConnection]) -> None:
    """Close `pool` when this task is cancelled: by `close`, or by `asyncio.run`, which
    cancels every task of its loop before closing it (a pool left open on a closed loop
    could never be closed: its workers would fail when collected)."""
    import asyncio  # noqa: PLC0415 - loaded already: a loop is running

    try:
        await asyncio.get_running_loop().create_future()  # never set
    finally:
        await pool.close()


async def _stop(guard: asyncio.Task[None]) -> None:
    import asyncio  # noqa: PLC0415 - loaded already: a loop is running

    guard.cancel()
    await asyncio.wait({guard})


def _close_driven_pool(guard: asyncio.Task[None], loop: asyncio.AbstractEventLoop) -> None:
    """Close the async pool (stop its guard) from wherever `close` runs."""
    if bridge.driven():
        bridge.wait_for(_stop(guard))
        return
    import asyncio  # noqa: PLC0415 - there was a loop: it is loaded

    if loop.is_running():
        # Its loop runs on another thread (this one would be driven or refused).
        asyncio.run_coroutine_threadsafe(_stop(guard), loop).result()
    else:
        loop.run_until_complete(_stop(guard))


@contextmanager
def _locking_transaction(conn: _Session) -> Iterator[None]:
    """A transaction that takes row locks between round trips to this client.

    If this process is frozen inside it (SIGSTOP, a debugger, a long GC pause), the
    server ends the transaction after `LOCK_HOLD_LIMIT` of waiting for the client,
    and its locks with it: otherwise a frozen lease holder stopped mid-renewal would
    block every writer and its own successor until it resumed. The client finds its
    connection gone when it resumes and retries, or hears `LeaseLost`. Commits need no
    such limit: a commit is one statement, never idle in its transaction.
    """
    with conn.transaction():
        conn.execute(
            b"SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
            (LOCK_HOLD_LIMIT,),
        )
        yield


def _grant(
    run_id: str, owner: str | None, token: int | None, expires_at: float | None
) -> LeaseGrant | None:
    """A lease row as a grant; None for no row, or the token-0 row made to lock on."""
    if owner is None or token is None or expires_at is None or token == 0:
        return None
    return LeaseGrant(run_id, str(owner), int(token), float(expires_at))


def _server_now(conn: _Session, statements: _Statements) -> float:
    row = conn.execute(statements.clock).fetchone()
    assert row is not None
    return float(row[0])


class _Statements:
    """The SQL of one vault, its schema name quoted in once, as bytes ready to send."""

    def __init__(self, schema: str) -> None:
        def table(name: str) -> sql.Composable:
            return sql.Identifier(schema, name)

        meta = table("statevault_meta")
        objects = table("statevault_objects")
        checkpoints = table("statevault_checkpoints")
        leases = table("statevault_leases")
        listeners = table("statevault_listeners")
        quarantine = table("statevault_quarantine")
        names = {
            "meta": meta,
            "objects": objects,
            "checkpoints": checkpoints,
            "leases": leases,
            "listeners": listeners,
            "quarantine": quarantine,
        }

        def render(template: str, **extra: sql.Composable) -> bytes:
            return sql.SQL(template).format(**names, **extra).as_string().encode()

        key = hashlib.blake2b(f"statevault:{schema}".encode(), digest_size=8).digest()
        # A stable 63-bit key for pg_advisory_xact_lock: taken while creating tables.
        self.creation_lock = int.from_bytes(key, "big") >> 1
        # NOTIFY channels are identifiers of at most 63 bytes; a schema name may be that
        # long already, so the channel is named by its hash.
        self.channel = f"statevault_{key.hex()}"
        self.create_schema = render("CREATE SCHEMA IF NOT EXISTS {s}", s=sql.Identifier(schema))
        self.create_tables = [
            render(
                "CREATE TABLE IF NOT EXISTS {meta} (key text PRIMARY KEY, value bytea NOT NULL)"
            ),
            render(
                "CREATE TABLE IF NOT EXISTS {objects} "
                "(digest bytea PRIMARY KEY, data bytea NOT NULL)"
            ),
            # Envelopes arrive compressed: storing them EXTERNAL (out of line, no pglz)
            # spares the server a compression attempt that would not pay.
            render("ALTER TABLE {objects} ALTER COLUMN data SET STORAGE EXTERNAL"),
            # The primary key serves the head (seq DESC), the history, and run listing.
            render(
                'CREATE TABLE IF NOT EXISTS {checkpoints} (run_id text COLLATE "C" NOT NULL, '
                "seq bigint NOT NULL, record bytea NOT NULL, PRIMARY KEY (run_id, seq))"
            ),
            # One row per run that ever had a lease, kept when the lease ends and when the
            # run is deleted, so that fencing tokens keep growing.
            render(
                'CREATE TABLE IF NOT EXISTS {leases} (run_id text COLLATE "C" PRIMARY KEY, '
                "owner text NOT NULL, token bigint NOT NULL, "
                "expires_at double precision NOT NULL)"
            ),
            render("CREATE TABLE IF NOT EXISTS {listeners} (pid integer PRIMARY KEY)"),
            # A key of its own rather than the digest: a digest quarantined twice (a fresh
            # copy damaged again) keeps both copies, since quarantine never deletes.
            render(
                "CREATE TABLE IF NOT EXISTS {quarantine} "
                "(id bigserial PRIMARY KEY, digest bytea NOT NULL, data bytea NOT NULL)"
            ),
            render(
                "CREATE INDEX IF NOT EXISTS statevault_quarantine_digest ON {quarantine} (digest)"
            ),
        ]
        self.insert_meta_if_absent = render(
            "INSERT INTO {meta} (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING"
        )
        self.get_layout = render("SELECT value FROM {meta} WHERE key = %s")
        self.get_meta = render("SELECT key, value FROM {meta}")
        self.set_meta = render(
            "INSERT INTO {meta} (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        )
        # DO NOTHING, not DO UPDATE: objects are immutable, so the first write stands and
        # megabytes already stored are not rewritten.
        self.put_objects = render(
            "INSERT INTO {objects} (digest, data) "
            "SELECT * FROM unnest(%s::bytea[], %s::bytea[]) ON CONFLICT (digest) DO NOTHING"
        )
        self.get_objects = render("SELECT digest, data FROM {objects} WHERE digest = ANY(%s)")
        self.has_objects = render("SELECT digest FROM {objects} WHERE digest = ANY(%s)")
        self.delete_objects = render("DELETE FROM {objects} WHERE digest = ANY(%s)")
        self.scan_objects = render("SELECT digest FROM {objects}")
        # DISTINCT over the primary key would read every checkpoint of every run; this
        # recursive query jumps from one run id to the next in the index instead.
        list_runs = (
            "WITH RECURSIVE runs(run_id) AS ("
            " (SELECT run_id FROM {checkpoints} WHERE run_id >= %(low)s {bound}"
            " ORDER BY run_id LIMIT 1)"
            " UNION ALL"
            " SELECT (SELECT c.run_id FROM {checkpoints} c WHERE c.run_id > runs.run_id"
            " {bound_c} ORDER BY c.run_id LIMIT 1) FROM runs WHERE runs.run_id IS NOT NULL"
            ") SELECT run_id FROM runs WHERE run_id IS NOT NULL"
        )
        self.list_runs_from = render(list_runs, bound=sql.SQL(""), bound_c=sql.SQL(""))
        self.list_runs_between = render(
            list_runs,
            bound=sql.SQL("AND run_id < %(high)s"),
            bound_c=sql.SQL("AND c.run_id < %(high)s"),
        )
        self.head = render("SELECT max(seq) FROM {checkpoints} WHERE run_id = %s")
        self.lock_head = render(
            "SELECT seq FROM {checkpoints} WHERE run_id = %s ORDER BY seq DESC LIMIT 1 FOR UPDATE"
        )
        self.read_checkpoint = render(
            "SELECT record FROM {checkpoints} WHERE run_id = %s AND seq = %s"
        )
        self.read_newest = render(
            "SELECT seq, record FROM {checkpoints} WHERE run_id = %s ORDER BY seq DESC LIMIT %s"
        )
        self.read_oldest = render(
            "SELECT seq, record FROM {checkpoints} WHERE run_id = %s ORDER BY seq ASC LIMIT %s"
        )
        # One statement: each record is replaced only while it still holds the bytes the
        # caller read (a compare-and-swap per row) and lies below the run's head, which
        # writers compare against and which therefore never changes under them.
        self.rewrite = render(
            "UPDATE {checkpoints} AS c SET record = r.new"
            " FROM unnest(%(seqs)s::bigint[], %(expected)s::bytea[], %(new)s::bytea[])"
            " AS r(seq, expected, new)"
            " WHERE c.run_id = %(run_id)s AND c.seq = r.seq AND c.record = r.expected"
            " AND c.seq < (SELECT max(seq) FROM {checkpoints} WHERE run_id = %(run_id)s)"
        )
        self.remove = render(
            "DELETE FROM {checkpoints} WHERE run_id = %s AND seq > %s RETURNING seq, NULL::bytea"
        )
        self.remove_returning = render(
            "DELETE FROM {checkpoints} WHERE run_id = %s AND seq > %s RETURNING seq, record"
        )
        # The compare-and-swap, in one statement (see the module docstring). The lease
        # test is `check_write_lease`'s rule: with a token, that token's lease in force;
        # without, no lease in force. It always returns one row: the head it found,
        # whether the record was inserted, whether the lease allowed it, and the lease
        # row and clock it judged by, from which a refusal is worded.
        self.commit = render(
            "WITH head AS ("
            " SELECT seq, record FROM {checkpoints} WHERE run_id = %(run_id)s"
            " ORDER BY seq DESC LIMIT 1 FOR UPDATE"
            "), lease AS ("
            " SELECT owner, token, expires_at FROM {leases} WHERE run_id = %(run_id)s FOR SHARE"
            "), clock AS ("
            " SELECT extract(epoch FROM clock_timestamp())::float8 AS now"
            "), verdict AS ("
            " SELECT coalesce((SELECT seq FROM head), 0) AS head_seq,"
            " coalesce((SELECT seq FROM head), 0) = %(expected_head)s"
            " AND (%(expected_record)s::bytea IS NULL"
            "  OR coalesce((SELECT record FROM head) = %(expected_record)s::bytea, false))"
            " AS head_ok,"
            " CASE WHEN %(lease_token)s::bigint IS NULL"
            "  THEN NOT EXISTS (SELECT 1 FROM lease, clock WHERE clock.now < lease.expires_at)"
            "  ELSE EXISTS (SELECT 1 FROM lease, clock WHERE lease.token = %(lease_token)s"
            "   AND clock.now < lease.expires_at)"
            " END AS lease_ok"
            "), inserted AS ("
            " INSERT INTO {checkpoints} (run_id, seq, record)"
            " SELECT %(run_id)s, %(seq)s, %(record)s FROM verdict WHERE head_ok AND lease_ok"
            " RETURNING seq"
            "), notified AS ("
            " SELECT pg_notify(%(channel)s, %(run_id)s) FROM inserted"
            " WHERE EXISTS (SELECT 1 FROM {listeners})"
            ") SELECT v.head_seq, EXISTS (SELECT 1 FROM inserted), v.lease_ok,"
            " l.owner, l.token, l.expires_at, c.now,"
            # Named in the result so that it runs: an unreferenced SELECT in WITH does not.
            " (SELECT count(*) FROM notified)"
            " FROM verdict v CROSS JOIN clock c LEFT JOIN lease l ON true"
        )
        self.clock = b"SELECT extract(epoch FROM clock_timestamp())::float8"
        self.share_lease = render(
            "SELECT owner, token, expires_at FROM {leases} WHERE run_id = %s FOR SHARE"
        )
        self.ensure_lease = render(
            "INSERT INTO {leases} (run_id, owner, token, expires_at) VALUES (%s, '', 0, 0) "
            "ON CONFLICT (run_id) DO NOTHING"
        )
        self.lock_lease = render(
            "SELECT owner, token, expires_at FROM {leases} WHERE run_id = %s FOR UPDATE"
        )
        self.store_lease = render(
            "UPDATE {leases} SET owner = %s, token = %s, expires_at = %s WHERE run_id = %s"
        )
        self.read_lease = render("SELECT owner, token, expires_at FROM {leases} WHERE run_id = %s")
        self.quarantine = render(
            "WITH moved AS ("
            " DELETE FROM {objects} WHERE digest = ANY(%s) RETURNING digest, data"
            "), kept AS ("
            " INSERT INTO {quarantine} (digest, data)"
            " SELECT m.digest, m.data FROM moved m WHERE NOT EXISTS"
            " (SELECT 1 FROM {quarantine} q WHERE q.digest = m.digest AND q.data = m.data)"
            " ORDER BY m.digest RETURNING 1"
            ") SELECT count(*) FROM moved"
        )
        self.quarantined = render("SELECT digest, data FROM {quarantine} ORDER BY id")
        self.notify = render(
            "SELECT pg_notify(%(channel)s, %(run_id)s) WHERE EXISTS (SELECT 1 FROM {listeners})"
        )
        self.listen = render("LISTEN {c}", c=sql.Identifier(self.channel))
        self.listeners_table = listeners.as_string()
        # pg_stat_activity lists every live server process, whoever owns it.
        self.forget_dead_listeners = render(
            "DELETE FROM {listeners} WHERE pid NOT IN (SELECT pid FROM pg_stat_activity)"
        )
        self.register_listener = render(
            "INSERT INTO {listeners} (pid) VALUES (pg_backend_pid()) ON CONFLICT DO NOTHING"
        )
        self.unregister_listener = render("DELETE FROM {listeners} WHERE pid = pg_backend_pid()")


def _object_batches(
    items: list[tuple[bytes, bytes]],
) -> list[tuple[list[bytes], list[bytes]]]:
    """Objects as (digests, datas) batches in digest order, each digest once.

    Digest order is the lock order every transaction follows (see the module docstring).
    """
    unique: dict[bytes, bytes] = {}
    for digest, data in items:
        unique.setdefault(bytes(digest), data)
    batches: list[tuple[list[bytes], list[bytes]]] = []
    digests: list[bytes] = []
    datas: list[bytes] = []
    size = 0
    for digest in sorted(unique):
        data = unique[digest]
        if digests and (len(digests) >= _BATCH_COUNT or size + len(data) > _BATCH_BYTES):
            batches.append((digests, datas))
            digests, datas, size = [], [], 0
        digests.append(digest)
        datas.append(bytes(data))
        size += len(data)
    if digests:
        batches.append((digests, datas))
    return batches


def _digest_batches(digests: Iterable[bytes]) -> Iterator[list[bytes]]:
    keys = list(dict.fromkeys(bytes(d) for d in digests))
    for start in range(0, len(keys), _BATCH_COUNT):
        yield keys[start : start + _BATCH_COUNT]


def _connection_lost(exc: psycopg.Error) -> bool:
    if exc.sqlstate is not None:
        return exc.sqlstate.startswith("08") or exc.sqlstate in _LOST_SQLSTATES
    # Errors raised by libpq itself ("server closed the connection unexpectedly",
    # "consuming input failed") carry no SQLSTATE.
    return isinstance(exc, psycopg.OperationalError)


def _retryable(exc: psycopg.Error) -> bool:
    """True if the call failed as a whole and may run again on another connection."""
    return _connection_lost(exc) or exc.sqlstate in _ROLLED_BACK_SQLSTATES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
