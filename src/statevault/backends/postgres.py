"""PostgreSQL: one vault shared by processes on many hosts, through a server.

The tables are SQLite's, in a schema of the caller's choice (`?schema=` in the URL), so
several vaults, or the tests, can share one database:

    statevault_meta         key text -> value bytea
    statevault_objects      digest bytea -> data bytea (stored out of line, uncompressed)
    statevault_checkpoints  (run_id text COLLATE "C", seq bigint) -> record bytea

Why it is built this way:
- Every change is one transaction, and with `durability="fsync"` each connection runs
  with `synchronous_commit=on`, so a commit returns only once the server has flushed
  its WAL. Group commit is the server's: commits of concurrent connections share WAL
  flushes, so this module needs no group-commit queue of its own (SQLite's has one).
- A commit's compare-and-swap is one statement: it locks the run's head row
  (`FOR UPDATE`), compares it with what the writer expected, and inserts the next seq
  only if they match. The primary key (run_id, seq) makes two writers that both saw
  no head (or raced past the check) collide on the insert; the loser gets
  `ConflictError`. The lock is what closes the ABA hole: a run deleted and saved again
  between the writer's read and its insert cannot slip under it, because the delete
  must wait for (or has already removed) the very row the writer locked.
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
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from statevault.backends.base import (
    Capabilities,
    Durability,
    StoredCheckpoint,
    check_bytes,
    check_next_seq,
    check_run_id,
    checked_objects,
    prefix_upper_bound,
)
from statevault.errors import (
    ConflictError,
    DurabilityWarning,
    NotAVaultError,
    StorageError,
    UnsupportedFormatError,
    VaultClosedError,
)

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ModuleNotFoundError(
        "PostgreSQL support needs psycopg 3 and psycopg-pool: `pip install statevault[postgres]`",
        name=exc.name,
    ) from exc

T = TypeVar("T")

LAYOUT_VERSION = 1
"""The version of the tables below. It is stored under `LAYOUT_KEY` in the vault's
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

_RETRY_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure: the transaction was rolled back whole
        "40P01",  # deadlock_detected: likewise
        "57P01",  # admin_shutdown: pg_terminate_backend, or a fast/immediate shutdown
        "57P02",  # crash_shutdown: another backend crashed and the server restarts
        "57P03",  # cannot_connect_now: the server is starting up or shutting down
    }
)

_SERVER_SETTINGS = ("fsync", "full_page_writes", "synchronous_commit")


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
        shown_query = urlencode(
            [(k, v) for k, v in theirs if k != "password"] + ([("schema", schema)])
        )
        location = urlunsplit(parts._replace(netloc=shown_netloc, query=shown_query))
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

    capabilities = Capabilities(persistent=True, multi_process=True, durable_fsync=True)

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
        self._sql = _Statements(self._options.schema)
        with self._connect_directly() as conn:
            self._check_settings(conn)
            self._open_tables(conn, initial_meta, create=create)
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
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
    def _configure(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        # Set per session, not left to the server's default: a role or database default
        # of `off` would otherwise make "fsync" commits return before their flush.
        level = b"on" if self._durability == "fsync" else b"off"
        conn.execute(b"SELECT set_config('synchronous_commit', %s, false)", (level.decode(),))

    def _connect_directly(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A connection outside the pool, for opening: its errors name the cause exactly."""
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

    def _check_settings(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        if self._durability != "fsync":
            return
        rows = conn.execute(
            b"SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(_SERVER_SETTINGS),)
        ).fetchall()
        for problem in durability_warnings({str(name): str(value) for name, value in rows}):
            warnings.warn(f"{self.location}: {problem}", DurabilityWarning, stacklevel=4)

    def _open_tables(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        initial_meta: Mapping[str, bytes],
        *,
        create: bool,
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

    def _check_layout(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
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

    def _call(self, work: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        """Run `work` on a pooled connection, again on a fresh one if it was lost."""
        deadline = time.monotonic() + self._timeout
        pause = 0.02
        while True:
            self._check_open()
            try:
                with self._pool.connection(timeout=max(0.0, deadline - time.monotonic())) as conn:
                    return work(conn)
            except PoolTimeout as exc:
                raise self._unreachable(exc) from exc
            except psycopg.Error as exc:
                if not _retryable(exc) or time.monotonic() + pause > deadline:
                    raise self._storage_error(exc) from exc
            # Other idle connections of the pool died with this one if the server
            # restarted; checking them now spares each later call a failed first try.
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            self._pool.check()

    def _unreachable(self, exc: PoolTimeout) -> StorageError:
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
        rows = self._rows(self._sql.get_meta)
        return {str(key): bytes(value) for key, value in rows}

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
        conn: psycopg.Connection[tuple[Any, ...]],
        batches: list[tuple[list[bytes], list[bytes]]],
        statement: tuple[bytes, Mapping[str, object]] | None,
    ) -> psycopg.Cursor[tuple[Any, ...]] | None:
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
            rows = self._rows(self._sql.has_objects, (batch,))
            present.update(bytes(row[0]) for row in rows)
        return present

    def delete_objects(self, digests: Iterable[bytes]) -> None:
        keys = sorted({bytes(d) for d in digests})
        if keys:
            self._call(lambda conn: conn.execute(self._sql.delete_objects, (keys,)))

    def scan_objects(self) -> Iterator[bytes]:
        rows = self._rows(self._sql.scan_objects)
        return (bytes(row[0]) for row in rows)

    # -- runs ---------------------------------------------------------------------------
    def list_runs(self, prefix: str = "") -> list[str]:
        upper = prefix_upper_bound(prefix)
        if upper is None:
            query, params = self._sql.list_runs_from, {"low": prefix}
        else:
            query, params = self._sql.list_runs_between, {"low": prefix, "high": upper}
        rows = self._rows(query, params)
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
    ) -> None:
        check_run_id(run_id)
        check_next_seq(seq, expected_head)
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
        }
        attempts = 0

        def attempt(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[int, bool]:
            nonlocal attempts
            attempts += 1
            try:
                cursor = self._write(conn, batches, (self._sql.commit, params))
            except psycopg.errors.UniqueViolation:
                # Another writer inserted this seq after our head check: it won.
                return -1, False
            assert cursor is not None
            row = cursor.fetchone()
            assert row is not None, "the commit statement always returns its verdict"
            return int(row[0]), bool(row[1])

        head, committed = self._call(attempt)
        if committed:
            return
        if attempts > 1 and self.read_checkpoint(run_id, seq) == bytes(record):
            # An earlier attempt was cut off after the server had committed it: the record
            # at `seq` is this one, so the commit succeeded.
            return
        if head < 0:
            head = self.head(run_id)
        raise ConflictError(run_id, expected=expected_head, actual=head)

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

    def delete_run(self, run_id: str) -> bool:
        check_run_id(run_id)
        deleted = False

        def attempt(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            nonlocal deleted
            cursor = conn.execute(self._sql.delete_run, (run_id,))
            # A retry after a lost connection finds nothing left to delete; the first
            # attempt may still have deleted the run, so any attempt that did counts.
            deleted = deleted or cursor.rowcount > 0

        self._call(attempt)
        return deleted

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._pool.close()


class _Statements:
    """The SQL of one vault, its schema name quoted in once, as bytes ready to send."""

    def __init__(self, schema: str) -> None:
        def table(name: str) -> sql.Composable:
            return sql.Identifier(schema, name)

        meta = table("statevault_meta")
        objects = table("statevault_objects")
        checkpoints = table("statevault_checkpoints")

        def render(template: str, **names: sql.Composable) -> bytes:
            return sql.SQL(template).format(**names).as_string().encode()

        # A stable 63-bit key for pg_advisory_xact_lock: taken while creating tables.
        self.creation_lock = (
            int.from_bytes(
                hashlib.blake2b(f"statevault:{schema}".encode(), digest_size=8).digest(), "big"
            )
            >> 1
        )
        self.create_schema = render("CREATE SCHEMA IF NOT EXISTS {s}", s=sql.Identifier(schema))
        self.create_tables = [
            render(
                "CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, value bytea NOT NULL)",
                t=meta,
            ),
            render(
                "CREATE TABLE IF NOT EXISTS {t} (digest bytea PRIMARY KEY, data bytea NOT NULL)",
                t=objects,
            ),
            # Envelopes arrive compressed: storing them EXTERNAL (out of line, no pglz)
            # spares the server a compression attempt that would not pay.
            render("ALTER TABLE {t} ALTER COLUMN data SET STORAGE EXTERNAL", t=objects),
            # The primary key serves the head (seq DESC), the history, and run listing.
            render(
                'CREATE TABLE IF NOT EXISTS {t} (run_id text COLLATE "C" NOT NULL, '
                "seq bigint NOT NULL, record bytea NOT NULL, PRIMARY KEY (run_id, seq))",
                t=checkpoints,
            ),
        ]
        self.insert_meta_if_absent = render(
            "INSERT INTO {t} (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", t=meta
        )
        self.get_layout = render("SELECT value FROM {t} WHERE key = %s", t=meta)
        self.get_meta = render("SELECT key, value FROM {t}", t=meta)
        self.set_meta = render(
            "INSERT INTO {t} (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            t=meta,
        )
        # DO NOTHING, not DO UPDATE: objects are immutable, so the first write stands and
        # megabytes already stored are not rewritten.
        self.put_objects = render(
            "INSERT INTO {t} (digest, data) SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
            "ON CONFLICT (digest) DO NOTHING",
            t=objects,
        )
        self.get_objects = render(
            "SELECT digest, data FROM {t} WHERE digest = ANY(%s::bytea[])", t=objects
        )
        self.has_objects = render(
            "SELECT digest FROM {t} WHERE digest = ANY(%s::bytea[])", t=objects
        )
        self.delete_objects = render("DELETE FROM {t} WHERE digest = ANY(%s::bytea[])", t=objects)
        self.scan_objects = render("SELECT digest FROM {t}", t=objects)
        # DISTINCT over the primary key would read every checkpoint of every run; this
        # recursive query jumps from one run id to the next in the index instead.
        list_runs = (
            "WITH RECURSIVE runs(run_id) AS ("
            " (SELECT run_id FROM {t} WHERE run_id >= %(low)s {bound} ORDER BY run_id LIMIT 1)"
            " UNION ALL"
            " SELECT (SELECT c.run_id FROM {t} c WHERE c.run_id > runs.run_id {bound_c}"
            " ORDER BY c.run_id LIMIT 1) FROM runs WHERE runs.run_id IS NOT NULL"
            ") SELECT run_id FROM runs WHERE run_id IS NOT NULL"
        )
        self.list_runs_from = render(
            list_runs, t=checkpoints, bound=sql.SQL(""), bound_c=sql.SQL("")
        )
        self.list_runs_between = render(
            list_runs,
            t=checkpoints,
            bound=sql.SQL("AND run_id < %(high)s"),
            bound_c=sql.SQL("AND c.run_id < %(high)s"),
        )
        self.head = render("SELECT max(seq) FROM {t} WHERE run_id = %s", t=checkpoints)
        self.read_checkpoint = render(
            "SELECT record FROM {t} WHERE run_id = %s AND seq = %s", t=checkpoints
        )
        self.read_newest = render(
            "SELECT seq, record FROM {t} WHERE run_id = %s ORDER BY seq DESC LIMIT %s",
            t=checkpoints,
        )
        self.read_oldest = render(
            "SELECT seq, record FROM {t} WHERE run_id = %s ORDER BY seq ASC LIMIT %s",
            t=checkpoints,
        )
        self.delete_run = render("DELETE FROM {t} WHERE run_id = %s", t=checkpoints)
        # The compare-and-swap, in one statement (see the module docstring). It always
        # returns one row: the head it found, and whether the record was inserted.
        self.commit = render(
            "WITH head AS ("
            " SELECT seq, record FROM {t} WHERE run_id = %(run_id)s"
            " ORDER BY seq DESC LIMIT 1 FOR UPDATE"
            "), verdict AS ("
            " SELECT coalesce((SELECT seq FROM head), 0) AS head_seq,"
            " coalesce((SELECT seq FROM head), 0) = %(expected_head)s"
            " AND (%(expected_record)s::bytea IS NULL"
            "  OR coalesce((SELECT record FROM head) = %(expected_record)s::bytea, false))"
            " AS ok"
            "), inserted AS ("
            " INSERT INTO {t} (run_id, seq, record)"
            " SELECT %(run_id)s, %(seq)s, %(record)s FROM verdict WHERE ok RETURNING seq"
            ") SELECT head_seq, EXISTS (SELECT 1 FROM inserted) FROM verdict",
            t=checkpoints,
        )


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
        return exc.sqlstate.startswith("08") or exc.sqlstate in ("57P01", "57P02", "57P03")
    # Errors raised by libpq itself ("server closed the connection unexpectedly",
    # "consuming input failed") carry no SQLSTATE.
    return isinstance(exc, psycopg.OperationalError)


def _retryable(exc: psycopg.Error) -> bool:
    """True if the call failed as a whole and may run again on another connection."""
    return _connection_lost(exc) or exc.sqlstate in _RETRY_SQLSTATES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
