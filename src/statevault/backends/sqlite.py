"""The embedded default: one SQLite file in WAL mode.

Why these settings:
- WAL lets readers run while a writer commits, and makes a commit one sequential
  append plus one fsync of the WAL file.
- `synchronous=FULL` fsyncs the WAL at every commit: with NORMAL a commit that
  returned can roll back after a power loss (SQLite's own documentation says so).
  `durability="process"` selects NORMAL, which still survives a process crash.
- `BEGIN IMMEDIATE` takes the write lock before reading the head, so the
  head check and the insert are one atomic compare-and-swap, and two processes
  never deadlock upgrading a read lock.
- Writes from threads of one process queue on a Python lock instead of SQLite's
  busy handler, which sleeps in coarse steps; processes wait on the busy timeout.
- Group commit: checkpoints and objects written by concurrent threads share one
  transaction, so one WAL fsync acknowledges all of them (see `_GroupCommit` below).
  Without it every commit pays its own fsync and N threads get no more commits per
  second than one.
- WAL checkpoints (copying committed pages into the main file) run in a background
  thread, not inside whichever commit crosses SQLite's automatic threshold: that
  commit would otherwise pay for copying and fsyncing every page before it (70-90 ms
  after a 30 MB object here) and small commits would see it as latency spikes.
- Leases live in their own table, one row per run that ever had one. The row stays
  when the lease ends and when the run is deleted, so fencing tokens keep growing. A
  commit reads it inside its own write transaction: the lease check and the
  compare-and-swap are one atomic step. Vaults made before leases existed get the
  table at their first write (no write happens at open).
- `cell_size_check=ON`: SQLite checks every cell pointer of a b-tree page when it
  loads the page. Without it a flipped bit in a page header's cell count made cells
  out of the page's bounds read as nothing, and a vault opened with no runs. The
  cost is a loop over the page's cells when it enters the cache (see
  `benchmarks/integrity.py`).
- A catalog of each run's head beside the checkpoint table (`_HEADS_SCHEMA`), which
  reads check the index against: a page header that hides cells passes SQLite's
  checks, and the catalog is what tells.
- No `mmap_size`: a memory-mapped file that is truncated or unreadable kills the
  process with SIGBUS, where read() gives an error statevault can report.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

from statevault.backends.base import (
    Capabilities,
    Durability,
    LeaseGrant,
    Rewrite,
    StepProgress,
    StoredCheckpoint,
    UpgradeStep,
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
from statevault.backends.fsio import FileIO
from statevault.errors import (
    ConflictError,
    CorruptionError,
    LeaseError,
    NotAVaultError,
    StorageError,
    VaultBusyError,
    VaultClosedError,
)
from statevault.faults import crash_point, register

SQLITE_HEADER = b"SQLite format 3\x00"
META_TABLE = "statevault_meta"
LEASE_TABLE = "statevault_leases"
_LEASE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS statevault_leases (run_id TEXT PRIMARY KEY, "
    "owner TEXT NOT NULL, token INTEGER NOT NULL, expires_at REAL NOT NULL)"
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS statevault_meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    # Rowid tables (not WITHOUT ROWID): objects can be megabytes, and SQLite keeps large
    # rows out of the index b-tree only in rowid tables.
    "CREATE TABLE IF NOT EXISTS statevault_objects (digest BLOB PRIMARY KEY, data BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS statevault_checkpoints "
    "(run_id TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL, "
    "PRIMARY KEY (run_id, seq))",
    _LEASE_SCHEMA,
)

HEADS_TABLE = "statevault_heads"
_HEADS_SCHEMA = (
    # WITHOUT ROWID: one b-tree, a row of a few bytes per run.
    "CREATE TABLE IF NOT EXISTS statevault_heads "
    "(run_id TEXT PRIMARY KEY, head INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TRIGGER IF NOT EXISTS statevault_heads_insert "
    "AFTER INSERT ON statevault_checkpoints BEGIN "
    "INSERT OR IGNORE INTO statevault_heads(run_id, head) VALUES (NEW.run_id, NEW.seq); "
    "UPDATE statevault_heads SET head = NEW.seq WHERE run_id = NEW.run_id AND head < NEW.seq; "
    "END",
    # Recounted only when the head row itself goes (a roll-back, a deleted run); a
    # rewrite below the head leaves it alone.
    "CREATE TRIGGER IF NOT EXISTS statevault_heads_delete "
    "AFTER DELETE ON statevault_checkpoints BEGIN "
    "DELETE FROM statevault_heads WHERE run_id = OLD.run_id AND NOT EXISTS "
    "(SELECT 1 FROM statevault_checkpoints WHERE run_id = OLD.run_id); "
    "UPDATE statevault_heads SET head = "
    "(SELECT max(seq) FROM statevault_checkpoints WHERE run_id = OLD.run_id) "
    "WHERE run_id = OLD.run_id AND head = OLD.seq; "
    "END",
)
"""The catalog of heads: each run's newest seq, kept apart from the checkpoint table.

SQLite pages carry no checksum, and one flipped bit in an index page's header can hide
cells: runs vanish from the listing, or a run's newest checkpoints vanish and an older
one reads as its head. Records of a run are always seqs 1..head, so each read compares
what the index finds with this row, in the same statement (one snapshot). Triggers,
not statevault's code, keep it up to date: releases that predate it write to a vault
that has it without knowing, and it stays right. Vaults made before it gain it at
`statevault upgrade` (`upgrade_layout`); until then they are read and written as they
are, and their reads are not cross-checked.

Never write `statevault_checkpoints` with `REPLACE` (or `INSERT OR REPLACE`): the outer
statement's conflict policy overrides the trigger's `OR IGNORE`, so replacing a record
below the head would set the head to that record's seq. The cross-check caught exactly
that when a rewrite was tried that way."""
_HEADS_FILL = (
    "INSERT OR REPLACE INTO statevault_heads(run_id, head) "
    "SELECT run_id, max(seq) FROM statevault_checkpoints GROUP BY run_id"
)

_QUARANTINE_TABLE = (
    # A rowid of its own rather than the digest as key: a digest quarantined twice (a
    # fresh copy damaged again) keeps both copies, since quarantine never deletes.
    "CREATE TABLE IF NOT EXISTS statevault_quarantine "
    "(id INTEGER PRIMARY KEY, digest BLOB NOT NULL, data BLOB NOT NULL)"
)
"""Made by the first quarantine, not at creation: vaults of earlier releases gain it
only when repair needs it, and readers of those releases ignore tables they do not know."""

_CRASH_BEFORE_COMMIT = register(
    "sqlite.commit.before", "a write transaction's statements ran; COMMIT not yet issued"
)
_CRASH_AFTER_COMMIT = register(
    "sqlite.commit.after", "COMMIT returned (durable); the caller has not been told"
)

_CHECKPOINT_AFTER = 4 << 20
"""Bytes committed since the last WAL checkpoint that wake the checkpointer."""
_CHECKPOINT_IDLE = 1.0
"""Seconds of quiet after which a smaller backlog is checkpointed too."""

_BATCH = 500
"""Digests per `IN (...)` query; stays far below SQLite's bound-parameter limit."""

_GROUP_MAX_WRITES = 256
_GROUP_MAX_BYTES = 64 << 20
"""Bounds of one group commit. A write larger than the byte bound still goes, alone.
Without bounds a burst of large saves would build one transaction of gigabytes: its
waiters would all wait for the slowest write, and the WAL would grow by all of it
before the checkpointer could copy any of it back."""


class SqliteBackend:
    """A vault in one SQLite file.

    Args:
        path: the database file; created (with missing parent directories) if absent.
        durability: "fsync" (synchronous=FULL) or "process" (synchronous=NORMAL).
        initial_meta: metadata written when the file is created.
        timeout: seconds to wait for another process's write lock.
        create: when False, a path without a vault raises `NotAVaultError` and nothing
            is created.
    """

    capabilities = Capabilities(
        persistent=True,
        multi_process=True,
        durable_fsync=True,
        leases=True,
        rewrite_records=True,
    )

    def __init__(
        self,
        path: str,
        *,
        durability: Durability = "fsync",
        initial_meta: Mapping[str, bytes],
        timeout: float = 30.0,
        create: bool = True,
        fileio: FileIO | None = None,
    ) -> None:
        self._path = os.path.abspath(path)
        self._durability = durability
        self._timeout = timeout
        self._io = fileio or FileIO(sync=durability == "fsync")
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        self._checkpointer = _Checkpointer(self._connect)
        self._pending_bytes = 0  # written by the open transaction (write lock held)
        self._group = _GroupCommit(self._commit_group, location=self._path)
        # Whether the lease table is known to exist; it is never dropped once made.
        self._lease_table = False
        # Whether the catalog of heads exists (see _HEADS_SCHEMA); never dropped either.
        self._heads_table = False
        if self._inspect():
            if not create:
                raise NotAVaultError(self._path, "no vault exists there (create=False)")
            parent = os.path.dirname(self._path)
            if not self._io.is_dir(parent):
                self._io.makedirs(parent)
            # Only a new vault takes the write lock on open: opening an existing one must
            # not wait for (or block) another process's commit.
            self._initialize(initial_meta)

    @property
    def location(self) -> str:
        return self._path

    # -- opening ----------------------------------------------------------------------
    def _inspect(self) -> bool:
        """True if the path holds no database yet; raise if it holds someone else's.

        Runs before any connection is opened read-write, because opening one would
        already switch a foreign database to WAL mode.
        """
        if not self._io.exists(self._path):
            return True
        if self._io.is_dir(self._path):
            raise NotAVaultError(
                self._path,
                "it is a directory (a directory-of-files vault opens with `files:///path`)",
            )
        if self._io.size(self._path) == 0:
            return True
        header = self._io.read_prefix(self._path, len(SQLITE_HEADER))
        if header != SQLITE_HEADER:
            self._refuse_damaged_vault("its SQLite header is damaged")
            raise NotAVaultError(self._path, "it is not a SQLite database")
        try:
            probe = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=self._timeout)
            try:
                tables = {
                    row[0]
                    for row in probe.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
            finally:
                probe.close()
        except sqlite3.DatabaseError as exc:
            # It starts as a SQLite file but SQLite finds it malformed: a damaged
            # database (a vault's, or anyone's), which a new path would not help.
            if getattr(exc, "sqlite_errorcode", None) in (11, 26):
                raise self._damaged(str(exc)) from exc
            self._refuse_damaged_vault(f"SQLite cannot read it ({exc})")
            raise NotAVaultError(self._path, f"SQLite cannot read it ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise self._damaged(f"a table name is not valid text ({exc})") from exc
        if not all(isinstance(name, str) for name in tables):
            raise self._damaged("a table name in SQLite's schema is not stored as text")
        if META_TABLE in tables:
            self._lease_table = LEASE_TABLE in tables
            self._heads_table = HEADS_TABLE in tables
            return False
        # A flipped bit in a table's name makes a vault look like someone else's
        # database, and one in the schema page's cell count hides every table (an
        # empty database, to be made a vault afresh over the old pages); the vault's own
        # table definitions are still in the file.
        with suppress(OSError):
            if f"CREATE TABLE {META_TABLE}".encode() in self._io.read_prefix(self._path, 1 << 16):
                raise self._damaged(f"its tables are not the vault's ({sorted(tables)})")
        if tables:
            shown = ", ".join(sorted(tables)[:5])
            raise NotAVaultError(self._path, f"it is a SQLite database of other tables ({shown})")
        return True

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so no implicit
        # transaction ever spans two of our calls.
        conn = sqlite3.connect(
            self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _Checkpointer
        conn.execute("PRAGMA cell_size_check=ON")
        if self._durability == "fsync":
            conn.execute("PRAGMA synchronous=FULL")
        else:
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise VaultClosedError(f"the vault {self._path} is closed; open it again")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def _initialize(self, initial_meta: Mapping[str, bytes]) -> None:
        self._heads_table = True  # made below, with the other tables
        with self._transaction() as conn:
            for statement in (*_SCHEMA, *_HEADS_SCHEMA):
                conn.execute(statement)
            self._lease_table = True
            # OR IGNORE: when two processes create the vault at once, the first one's
            # metadata stands and the second one's is dropped, never mixed.
            conn.executemany(
                "INSERT OR IGNORE INTO statevault_meta(key, value) VALUES (?, ?)",
                list(initial_meta.items()),
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it commits (durably) or none of it does."""
        conn = self._conn()
        with self._write_lock:
            self._io.check_writable()
            self._pending_bytes = 0
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._storage_error(exc) from exc
            try:
                yield conn
                crash_point(_CRASH_BEFORE_COMMIT)
                self._commit(conn)
                crash_point(_CRASH_AFTER_COMMIT)
                self._io.db_committed(self._path)
                self._checkpointer.committed(self._pending_bytes)
            except BaseException as exc:
                _roll_back(conn)
                if isinstance(exc, sqlite3.Error):
                    raise self._storage_error(exc) from exc
                raise

    def _commit_group(self, group: list[_Write]) -> None:
        """Run a group of writes in one transaction and give each write its outcome.

        `_GroupCommit` calls this on the leader's thread with the leader's write alone.
        Queued writes join once the write lock is held, so those that arrived while
        another transaction ran (a delete of this process, or another process's commit
        behind the busy timeout) share this one; and again after each pass over the
        group, until the queue is empty at COMMIT. Without the second gathering the
        group commit settles into two alternating halves: the writers woken by one
        COMMIT come back while the next group's statements run, just too late for it,
        and 16 threads made groups of 8. Gathering until COMMIT takes them in, which
        made groups of about 15 and 16-thread throughput some 35% higher here. It costs
        the leader's own commit a few microseconds per write that joins late, bounded
        by `_GROUP_MAX_WRITES`.
        """
        committed = False
        culprit: _Write | None = None
        try:
            conn = self._conn()
            with self._write_lock:
                self._io.check_writable()
                self._group.gather(group)
                self._pending_bytes = 0
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # In queue order, each write seeing the rows of those before it: a
                    # commit queued behind another on the same run must find that one's
                    # record as its head, exactly as if they had committed one by one.
                    done = 0
                    while done < len(group):
                        for write in group[done:]:
                            culprit = write
                            try:
                                write.apply(conn)
                            except (ConflictError, LeaseError) as exc:
                                # A conflict is found before its write touches anything
                                # (`_apply_commit`), so the rest of the group goes on.
                                write.error = exc
                        done = len(group)
                        self._group.gather(group)
                    culprit = None
                    crash_point(_CRASH_BEFORE_COMMIT)
                    self._commit(conn)
                    committed = True
                    crash_point(_CRASH_AFTER_COMMIT)
                    self._io.db_committed(self._path)
                except BaseException:
                    _roll_back(conn)
                    raise
                self._checkpointer.committed(self._pending_bytes)
        except BaseException as exc:
            if not committed:
                self._fail_group(group, exc, culprit)
                return
            # Interrupted after COMMIT returned: the writes are durable, so their
            # waiters hear so; the interrupt goes on to the leader's caller.
            for write in group:
                write.committed = write.error is None
            raise
        # Outcomes are given only now, after COMMIT returned: a waiter must not return
        # before its write is durable, nor hear of a conflict with a write of its group
        # that a failed COMMIT then took back.
        for write in group:
            write.committed = write.error is None

    def _fail_group(self, group: list[_Write], exc: BaseException, culprit: _Write | None) -> None:
        """Give every write of a group whose transaction failed an error of its own.

        Nothing of the group was committed, so every waiter must hear it, also those
        whose own write was fine: they shared the transaction. Rejected: retrying the
        others without the failing write. After an I/O error or a full disk SQLite may
        already have rolled the whole transaction back, and a retry on a failing disk
        only doubles the wait before the same error. Each waiter gets an exception
        object of its own: one object raised in several threads at once would collect
        all their tracebacks.
        """
        origin = culprit or group[0]
        for write in group:
            error: BaseException
            if isinstance(exc, sqlite3.Error):
                error = self._storage_error(exc)
                error.__cause__ = exc
            elif write is origin:
                error = exc
            elif isinstance(exc, StorageError | VaultClosedError | CorruptionError):
                error = type(exc)(*exc.args)
            else:
                error = StorageError(
                    f"{self._path}: a write committed in the same transaction as this one "
                    f"failed ({type(exc).__name__}: {exc}); nothing was written. Retry."
                )
                error.__cause__ = exc
            write.error = error

    def _commit(self, conn: sqlite3.Connection) -> None:
        """COMMIT. An I/O error inside it leaves the outcome unknown: the transaction's
        frames may be in the WAL with their commit mark, unflushed, so a crash may keep
        them or drop them ("nothing was written" would be false). The handle is then
        poisoned, as after any failed flush: the disk failing it is not trusted with more
        commits. (A WAL checkpoint whose flush failed needs no such care: it leaves the
        WAL in place and copies, rewriting, the same pages at its next try.)
        """
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", None) or ""
            # A full disk shows at COMMIT too, where the WAL is written: it may have
            # stopped a write, or a flush (fsync can report ENOSPC), and SQLite's code
            # does not say which.
            if name.startswith(("SQLITE_IOERR", "SQLITE_FULL")):
                raise self._io.fail_flush(exc, f"{self._path}: SQLite's commit") from exc
            raise

    def _damaged(self, what: str, run_id: str | None = None) -> CorruptionError:
        return CorruptionError(
            f"{self._path}: the SQLite file is damaged: {what}",
            run_id=run_id,
            hint=(
                "SQLite's own pages carry no checksum, so statevault cannot tell which "
                "checkpoints survived; restore the file from a backup (`statevault verify` "
                "shows what can still be read)."
            ),
        )

    def _blob(self, value: object, what: str) -> bytes:
        """A BLOB cell's bytes; a cell of another type is damage, not a `TypeError`."""
        # A flipped bit in a record header can change a cell's storage class. bytes() of an
        # int would even succeed (zero bytes), so the type is checked, never converted.
        if isinstance(value, bytes):
            return value
        raise self._damaged(f"{what} is stored as {type(value).__name__}, not as a blob")

    def _text(self, value: object, what: str) -> str:
        """A TEXT cell's string; a cell of another type is damage."""
        if isinstance(value, str):
            return value
        raise self._damaged(f"{what} is stored as {type(value).__name__}, not as text")

    def _integer(self, value: object, what: str) -> int:
        """An INTEGER cell's value; a cell of another type is damage."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise self._damaged(f"{what} is stored as {type(value).__name__}, not as an integer")

    def _refuse_damaged_vault(self, what: str) -> None:
        """Raise CorruptionError if an unreadable file still looks like a vault.

        A file that is not a SQLite database is refused as foreign (NotAVaultError:
        "nothing was changed, pass a new path"); but when its damaged pages still hold
        the vault's own table definitions, that advice would be wrong: it is a damaged
        vault, and must be reported as one.
        """
        with suppress(OSError):
            head = self._io.read_prefix(self._path, 1 << 16)
            if f"CREATE TABLE {META_TABLE}".encode() in head or _sqlite_pages_follow(
                head, self._io.size(self._path)
            ):
                raise self._damaged(what)

    def _storage_error(self, exc: sqlite3.Error) -> StorageError | CorruptionError:
        # SQLITE_CORRUPT and SQLITE_NOTADB: damaged pages, not a failing disk or a lock.
        if getattr(exc, "sqlite_errorcode", None) in (11, 26):
            return self._damaged(str(exc))
        text = str(exc)
        if text.startswith("Could not decode to UTF-8"):
            return self._damaged(f"stored text does not decode ({text})")
        if text.startswith(("no such column", "no such table")):
            # Every statement names tables and columns the vault's schema creates (the
            # optional ones are looked up first): the stored schema text is damaged.
            return self._damaged(f"its schema no longer matches statevault's ({text})")
        if "locked" in text or "busy" in text:
            return VaultBusyError(
                f"{self._path}: another process held the write lock for more than "
                f"{self._timeout:g}s ({text}); nothing was written. Retry, or open with a "
                f"larger `timeout=`."
            )
        return StorageError(f"{self._path}: SQLite failed ({text}); nothing was written")

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from exc
        except UnicodeDecodeError as exc:
            # A TEXT column (a run id) whose stored bytes were damaged.
            raise self._damaged(f"stored text does not decode ({exc})") from exc

    # -- metadata -----------------------------------------------------------------------
    def get_meta(self) -> dict[str, bytes]:
        rows = self._read("SELECT key, value FROM statevault_meta")
        return {self._text(k, "a meta key"): self._blob(v, f"meta entry {k!r}") for k, v in rows}

    def set_meta(self, key: str, value: bytes) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO statevault_meta(key, value) VALUES (?, ?)", (key, value)
            )

    # -- objects ------------------------------------------------------------------------
    def _insert_objects(
        self, conn: sqlite3.Connection, items: Sequence[tuple[bytes, bytes]]
    ) -> None:
        # OR IGNORE, not OR REPLACE: an object is immutable, and rewriting megabytes
        # that are already there would only cost I/O.
        conn.executemany(
            "INSERT OR IGNORE INTO statevault_objects(digest, data) VALUES (?, ?)", items
        )
        self._pending_bytes += sum(len(data) for _, data in items)

    def put_objects(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        items = checked_objects(items)
        if not items:
            return

        def apply(conn: sqlite3.Connection) -> None:
            self._insert_objects(conn, items)

        self._group.submit(apply, sum(len(data) for _, data in items))

    def _select_digests(self, columns: str, digests: Iterable[bytes]) -> list[tuple[object, ...]]:
        """Rows of `columns` for the given digests, in batches of `IN (...)` queries."""
        rows: list[tuple[object, ...]] = []
        keys = list(dict.fromkeys(digests))
        for start in range(0, len(keys), _BATCH):
            batch = keys[start : start + _BATCH]
            marks = ",".join("?" * len(batch))
            # Only a fixed column list and placeholders are interpolated; the digests
            # travel as parameters.
            sql = f"SELECT {columns} FROM statevault_objects WHERE digest IN ({marks})"  # noqa: S608
            rows.extend(self._read(sql, batch))
        return rows

    def get_objects(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        rows = self._select_digests("digest, data", digests)
        return {self._blob(d, "an object digest"): self._blob(v, "an object") for d, v in rows}

    def has_objects(self, digests: Iterable[bytes]) -> set[bytes]:
        return {
            self._blob(row[0], "an object digest")
            for row in self._select_digests("digest", digests)
        }

    def delete_objects(self, digests: Iterable[bytes]) -> None:
        keys = [(d,) for d in digests]
        if keys:
            with self._transaction() as conn:
                conn.executemany("DELETE FROM statevault_objects WHERE digest = ?", keys)

    def scan_objects(self) -> Iterator[bytes]:
        rows = self._read("SELECT digest FROM statevault_objects")
        return (self._blob(row[0], "an object digest") for row in rows)

    # -- runs ---------------------------------------------------------------------------
    def list_runs(self, prefix: str = "") -> list[str]:
        upper = prefix_upper_bound(prefix)
        bounds: tuple[str, ...] = (prefix,) if upper is None else (prefix, upper)
        if not self._heads_table:
            rows = self._read(_LIST_RUNS[len(bounds)], bounds)
            return [self._text(row[0], "a run id") for row in rows]
        rows = self._read(_LIST_RUNS_CHECKED[len(bounds)], bounds * 2)
        listed = [self._text(run_id, "a run id") for run_id, tag in rows if tag == 0]
        cataloged = sorted(self._text(run_id, "a run id") for run_id, tag in rows if tag == 1)
        if listed != cataloged:
            missing = sorted(set(cataloged) - set(listed))
            raise self._damaged(
                f"its index lists runs {_few(listed)}, its catalog of heads {_few(cataloged)}"
                + (f" (runs {_few(missing)} cannot be found)" if missing else "")
            )
        return listed

    def head(self, run_id: str) -> int:
        check_run_id(run_id)
        if not self._heads_table:
            rows = self._read(
                "SELECT max(seq) FROM statevault_checkpoints WHERE run_id = ?", (run_id,)
            )
            value = rows[0][0]
            return int(value) if isinstance(value, int) else 0
        rows = self._read(
            "SELECT (SELECT max(seq) FROM statevault_checkpoints WHERE run_id = ?), "
            "(SELECT head FROM statevault_heads WHERE run_id = ?)",
            (run_id, run_id),
        )
        found = self._optional_seq(rows[0][0], run_id)
        if found != self._optional_seq(rows[0][1], run_id):
            raise self._heads_differ(run_id, rows[0][1], [found] if found else [])
        return found

    def _optional_seq(self, value: object, run_id: str) -> int:
        return 0 if value is None else self._integer(value, f"a seq of run {run_id!r}")

    def _heads_differ(self, run_id: str, head: object, seqs: Sequence[int]) -> CorruptionError:
        return self._damaged(
            f"its index finds checkpoints {_few(seqs)} of the run, but the catalog of heads "
            f"says its newest is {head or 0}: checkpoints are hidden or duplicated",
            run_id,
        )

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
        # Arguments are checked here, on the caller's thread: a wrong type found while
        # binding it inside a group transaction would fail the group's other writes too.
        check_bytes("record", record)
        if expected_record is not None:
            check_bytes("expected_record", expected_record)
        objects = checked_objects(objects)

        def apply(conn: sqlite3.Connection) -> None:
            self._apply_commit(
                conn,
                run_id,
                seq,
                record,
                expected_head=expected_head,
                expected_record=expected_record,
                objects=objects,
                lease_token=lease_token,
            )

        self._group.submit(apply, len(record) + sum(len(data) for _, data in objects))

    def _apply_commit(
        self,
        conn: sqlite3.Connection,
        run_id: str,
        seq: int,
        record: bytes,
        *,
        expected_head: int,
        expected_record: bytes | None,
        objects: Sequence[tuple[bytes, bytes]],
        lease_token: int | None,
    ) -> None:
        """The compare-and-swap of one commit, inside an open (group) transaction.

        It raises `ConflictError` (or a `LeaseError`) before writing anything, which is
        what lets the rest of its group commit without it.
        """
        check_write_lease(
            run_id, self._stored_lease(conn, run_id), token=lease_token, now=time.time()
        )
        row = conn.execute(
            "SELECT seq, record FROM statevault_checkpoints WHERE run_id = ? "
            "ORDER BY seq DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        head = int(row[0]) if row else 0
        # `row is None` with a record expected is a conflict, as in the other backends;
        # indexing it would raise TypeError, which here would fail the whole group.
        if head != expected_head or (
            expected_record is not None and (row is None or bytes(row[1]) != expected_record)
        ):
            raise ConflictError(run_id, expected=expected_head, actual=head)
        # Objects and record in one transaction: one WAL fsync for the whole save, and a
        # crash can never leave a record whose objects are missing.
        if objects:
            self._insert_objects(conn, objects)
        conn.execute(
            "INSERT INTO statevault_checkpoints(run_id, seq, record) VALUES (?, ?, ?)",
            (run_id, seq, record),
        )
        self._pending_bytes += len(record)

    def rewrite_records(
        self,
        run_id: str,
        rewrites: Sequence[Rewrite],
        *,
        objects: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        check_run_id(run_id)
        checked = check_rewrites(rewrites)
        objects = checked_objects(objects)
        done = 0

        def apply(conn: sqlite3.Connection) -> None:
            nonlocal done
            if objects:
                self._insert_objects(conn, objects)
            row = conn.execute(
                "SELECT max(seq) FROM statevault_checkpoints WHERE run_id = ?", (run_id,)
            ).fetchone()
            head = int(row[0]) if row and row[0] is not None else 0
            # The head's record is never rewritten: writers compare against it.
            below = [(seq, expected, new) for seq, expected, new in checked if seq < head]
            # Deleted and inserted again rather than updated: an UPDATE that shrinks a
            # row leaves the space in its page, and SQLite never merges such pages, so
            # a journal rewritten smaller kept its size on disk (the chat benchmark's
            # file stayed at 2.9 MB). A delete rebalances pages that fell under a third
            # full, and the pages it frees serve later inserts. Comparing the record in
            # the delete makes each rewrite a compare-and-swap.
            for seq, expected, new in below:
                cursor = conn.execute(
                    "DELETE FROM statevault_checkpoints "
                    "WHERE run_id = ? AND seq = ? AND record = ?",
                    (run_id, seq, expected),
                )
                if cursor.rowcount > 0:
                    conn.execute(
                        "INSERT INTO statevault_checkpoints(run_id, seq, record) VALUES (?, ?, ?)",
                        (run_id, seq, new),
                    )
                    done += 1
                    self._pending_bytes += len(new)

        self._group.submit(apply, sum(len(new) for _, _, new in checked))
        return done

    def read_checkpoint(self, run_id: str, seq: int) -> bytes | None:
        # Not cross-checked with the catalog of heads: a seq below the head that the
        # index cannot find is a hole, which the engine reports as damage, and a record
        # found is real data whatever the catalog says.
        check_run_id(run_id)
        rows = self._read(
            "SELECT record FROM statevault_checkpoints WHERE run_id = ? AND seq = ?",
            (run_id, seq),
        )
        return self._blob(rows[0][0], f"run {run_id!r} checkpoint {seq}") if rows else None

    def read_checkpoints(
        self, run_id: str, *, newest_first: bool = True, limit: int | None = None
    ) -> list[StoredCheckpoint]:
        check_run_id(run_id)
        checked = self._heads_table
        sql = _READ_CHECKPOINTS[newest_first, checked]
        params = (run_id, -1 if limit is None else limit)
        rows = self._read(sql, (*params, run_id) if checked else params)
        found = [
            StoredCheckpoint(
                self._integer(s, f"a seq of run {run_id!r}"),
                self._blob(r, f"run {run_id!r} checkpoint {s}"),
            )
            for s, r in rows
            if s is not None
        ]
        if checked:
            # The catalog's row is the one with no seq (the union's second part).
            head = next((r for s, r in rows if s is None), None)
            seqs = [c.seq for c in found]
            if not _agrees(seqs, self._optional_seq(head, run_id), newest_first, limit):
                raise self._heads_differ(run_id, head, seqs)
        return found

    def delete_run(self, run_id: str, *, lease_token: int | None = None) -> bool:
        check_run_id(run_id)
        with self._transaction() as conn:
            check_write_lease(
                run_id, self._stored_lease(conn, run_id), token=lease_token, now=time.time()
            )
            cursor = conn.execute("DELETE FROM statevault_checkpoints WHERE run_id = ?", (run_id,))
            return cursor.rowcount > 0

    # -- leases -------------------------------------------------------------------------
    def _stored_lease(self, conn: sqlite3.Connection, run_id: str) -> LeaseGrant | None:
        """The run's lease row, read on `conn` (inside the caller's transaction, if any)."""
        if not self._lease_table:
            # A vault made before leases: the table appears with the first lease, maybe
            # made by another process since this one looked.
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LEASE_TABLE,)
            ).fetchone()
            if found is None:
                return None
            self._lease_table = True
        row = conn.execute(
            "SELECT owner, token, expires_at FROM statevault_leases WHERE run_id = ?", (run_id,)
        ).fetchone()
        return None if row is None else LeaseGrant(run_id, str(row[0]), int(row[1]), float(row[2]))

    def _store_lease(self, conn: sqlite3.Connection, grant: LeaseGrant) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO statevault_leases(run_id, owner, token, expires_at) "
            "VALUES (?, ?, ?, ?)",
            (grant.run_id, grant.owner, grant.token, grant.expires_at),
        )

    @contextmanager
    def _lease_transaction(self) -> Iterator[sqlite3.Connection]:
        with self._transaction() as conn:
            if not self._lease_table:
                conn.execute(_LEASE_SCHEMA)
                self._lease_table = True
            yield conn

    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> LeaseGrant:
        check_run_id(run_id)
        check_lease_args(owner, ttl)
        with self._lease_transaction() as conn:
            stored = self._stored_lease(conn, run_id)
            grant = grant_lease(run_id, stored, owner=owner, ttl=ttl, now=time.time())
            self._store_lease(conn, grant)
            return grant

    def renew_lease(self, run_id: str, token: int, ttl: float) -> LeaseGrant:
        check_run_id(run_id)
        check_token(token)
        check_ttl(ttl)
        with self._lease_transaction() as conn:
            stored = self._stored_lease(conn, run_id)
            grant = renew_grant(run_id, stored, token=token, ttl=ttl, now=time.time())
            self._store_lease(conn, grant)
            return grant

    def release_lease(self, run_id: str, token: int) -> None:
        check_run_id(run_id)
        check_token(token)
        with self._lease_transaction() as conn:
            released = released_grant(
                self._stored_lease(conn, run_id), token=token, now=time.time()
            )
            if released is not None:
                self._store_lease(conn, released)

    def read_lease(self, run_id: str) -> LeaseGrant | None:
        check_run_id(run_id)
        try:
            return self._stored_lease(self._conn(), run_id)
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from exc

    # -- layout upgrade -----------------------------------------------------------------
    def plan_layout_upgrade(self) -> UpgradeStep | None:
        if self._has_heads_table():
            return None
        runs = self._read("SELECT count(DISTINCT run_id) FROM statevault_checkpoints")[0][0]
        return UpgradeStep(
            "SQLite layout 1 -> 2",
            runs=int(runs) if isinstance(runs, int) else 0,
            detail=(
                "adds a table holding each run's newest seq, kept by triggers, which reads "
                "check the index against; no record or object is rewritten"
            ),
        )

    def upgrade_layout(self, progress: StepProgress | None = None) -> UpgradeStep | None:
        planned = self.plan_layout_upgrade()
        if planned is None:
            return None
        # One transaction: a kill leaves the old layout or the whole new one.
        with self._transaction() as conn:
            for statement in _HEADS_SCHEMA:
                conn.execute(statement)
            conn.execute(_HEADS_FILL)
        self._heads_table = True
        if progress is not None:
            progress(planned.runs, planned.runs)
        return planned

    def _has_heads_table(self) -> bool:
        if not self._heads_table:
            # Another process may have upgraded the vault since this one opened it.
            self._heads_table = bool(
                self._read(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (HEADS_TABLE,)
                )
            )
        return self._heads_table

    # -- repair -------------------------------------------------------------------------
    def roll_back(
        self, run_id: str, keep_through: int, *, lease_token: int | None = None
    ) -> list[StoredCheckpoint]:
        check_run_id(run_id)
        check_keep_through(keep_through)
        with self._transaction() as conn:
            check_write_lease(
                run_id, self._stored_lease(conn, run_id), token=lease_token, now=time.time()
            )
            rows = conn.execute(
                "SELECT seq, record FROM statevault_checkpoints WHERE run_id = ? AND seq > ? "
                "ORDER BY seq",
                (run_id, keep_through),
            ).fetchall()
            conn.execute(
                "DELETE FROM statevault_checkpoints WHERE run_id = ? AND seq > ?",
                (run_id, keep_through),
            )
        return [StoredCheckpoint(int(seq), bytes(record)) for seq, record in rows]

    def quarantine_objects(self, digests: Iterable[bytes]) -> int:
        keys = list(dict.fromkeys(bytes(d) for d in digests))
        if not keys:
            return 0
        moved = 0
        # One transaction: a crash leaves every object either in place or in quarantine.
        with self._transaction() as conn:
            conn.execute(_QUARANTINE_TABLE)
            for start in range(0, len(keys), _BATCH):
                batch = keys[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                rows = conn.execute(
                    f"SELECT digest, data FROM statevault_objects WHERE digest IN ({marks})",  # noqa: S608 - placeholders only
                    batch,
                ).fetchall()
                for digest, data in rows:
                    held = conn.execute(
                        "SELECT 1 FROM statevault_quarantine WHERE digest = ? AND data = ?",
                        (digest, data),
                    ).fetchone()
                    if held is None:
                        conn.execute(
                            "INSERT INTO statevault_quarantine(digest, data) VALUES (?, ?)",
                            (digest, data),
                        )
                    conn.execute("DELETE FROM statevault_objects WHERE digest = ?", (digest,))
                moved += len(rows)
        return moved

    def quarantined_objects(self) -> dict[bytes, bytes]:
        tables = self._read(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'statevault_quarantine'"
        )
        if not tables:
            return {}
        found: dict[bytes, bytes] = {}
        for digest, data in self._read(
            "SELECT digest, data FROM statevault_quarantine ORDER BY id"
        ):
            found.setdefault(
                self._blob(digest, "a quarantined digest"), self._blob(data, "a quarantined object")
            )
        return found

    def close(self) -> None:
        with self._connections_lock:
            if self._closed:
                return
            self._closed = True
            connections, self._connections = self._connections, []
        self._checkpointer.stop()
        for conn in connections:
            conn.close()


_LIST_RUNS = {
    1: "SELECT DISTINCT run_id FROM statevault_checkpoints WHERE run_id >= ? ORDER BY run_id",
    2: "SELECT DISTINCT run_id FROM statevault_checkpoints WHERE run_id >= ? AND run_id < ? "
    "ORDER BY run_id",
}
"""The runs in the index, keyed by the number of bounds (a prefix, and its upper bound)."""
_LIST_RUNS_CHECKED = {
    1: "SELECT * FROM (SELECT DISTINCT run_id, 0 FROM statevault_checkpoints "
    "WHERE run_id >= ? ORDER BY run_id) "
    "UNION ALL SELECT run_id, 1 FROM statevault_heads WHERE run_id >= ?",
    2: "SELECT * FROM (SELECT DISTINCT run_id, 0 FROM statevault_checkpoints "
    "WHERE run_id >= ? AND run_id < ? ORDER BY run_id) "
    "UNION ALL SELECT run_id, 1 FROM statevault_heads WHERE run_id >= ? AND run_id < ?",
}
"""The same, with the catalog's runs tagged 1: both read in one statement, one snapshot."""
_READ_CHECKPOINTS = {
    (True, False): "SELECT seq, record FROM statevault_checkpoints WHERE run_id = ? "
    "ORDER BY seq DESC LIMIT ?",
    (False, False): "SELECT seq, record FROM statevault_checkpoints WHERE run_id = ? "
    "ORDER BY seq ASC LIMIT ?",
    (True, True): "SELECT * FROM (SELECT seq, record FROM statevault_checkpoints "
    "WHERE run_id = ? ORDER BY seq DESC LIMIT ?) "
    "UNION ALL SELECT NULL, head FROM statevault_heads WHERE run_id = ?",
    (False, True): "SELECT * FROM (SELECT seq, record FROM statevault_checkpoints "
    "WHERE run_id = ? ORDER BY seq ASC LIMIT ?) "
    "UNION ALL SELECT NULL, head FROM statevault_heads WHERE run_id = ?",
}
"""A run's records in either order; `checked` adds the catalog's head as a row whose seq
is NULL (seqs are NOT NULL), read in the same statement."""


def _agrees(seqs: list[int], head: int, newest_first: bool, limit: int | None) -> bool:
    """Whether a run's records as the index lists them fit the catalog's head.

    They must be in strict order (a repeat is an index cell pointing at another's row),
    start (newest first) or end (a whole run, oldest first) at the head, and be there
    at all when the head says so. A hole below the head is left to the engine, which
    names the missing checkpoints (`verify`) or refuses to read them.
    """
    if not seqs:
        return head == 0 or limit == 0
    ordered = seqs if not newest_first else seqs[::-1]
    if any(a >= b for a, b in pairwise(ordered)) or ordered[-1] > head:
        return False
    return seqs[0] == head if newest_first else limit is not None or seqs[-1] == head


def _few(items: Sequence[object]) -> str:
    """A list for a message, cut after ten items."""
    shown = ", ".join(repr(item) if isinstance(item, str) else str(item) for item in items[:10])
    return f"[{shown}{', ...' if len(items) > 10 else ''}]"


_BTREE_PAGE_FLAGS = frozenset({2, 5, 10, 13})
"""First byte of a SQLite b-tree page: interior/leaf, index/table."""


def _sqlite_pages_follow(head: bytes, size: int) -> bool:
    """Whether a file whose first page is unreadable has SQLite b-tree pages after it.

    Then it is a SQLite database with a damaged header (whoever's it is), not a file
    of another kind. Checked for every page size SQLite allows.
    """
    for page_size in (4096, 1024, 2048, 8192, 16384, 32768, 65536, 512):
        if size <= page_size or size % page_size:
            continue
        for start in range(page_size, min(len(head), 16 * page_size), page_size):
            page = head[start : start + 8]
            if len(page) == 8 and page[0] in _BTREE_PAGE_FLAGS:
                freeblock, cells = int.from_bytes(page[1:3]), int.from_bytes(page[3:5])
                if freeblock < page_size and 0 < cells < page_size // 4:
                    return True
    return False


_WriteState = Literal["queued", "lead", "running", "done"]


def _roll_back(conn: sqlite3.Connection) -> None:
    """Roll back after a failure; quietly, so the failure's own error is the one raised
    (SQLite rolls back an unfinished transaction at the next open anyway)."""
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


@dataclass(slots=True, eq=False)  # eq=False: queue removal must find this write, not an equal one
class _Write:
    """One commit (or object put) on its way through a group transaction.

    Attributes:
        apply: does the write's statements on the group's open transaction.
        nbytes: its size, for the group's byte bound.
        state: "queued" (waiting), "lead" (its thread runs the next group), "running"
            (in a group under way), "done" (outcome set, thread woken).
        committed: the transaction holding it committed, and it was not refused.
        error: why it was not committed (ConflictError, StorageError, ...).
        wake: held while its thread sleeps; released to wake it.
    """

    apply: Callable[[sqlite3.Connection], None]
    nbytes: int
    state: _WriteState = "queued"
    committed: bool = False
    error: BaseException | None = None
    wake: threading.Lock | None = None


class _GroupCommit:
    """Concurrent writes of one process share one transaction, and so one fsync.

    A leader/follower queue. A write whose thread finds no group under way leads: it
    runs at once on its own thread, so an uncontended commit costs no thread switch
    and no wait. A write arriving while a leader is busy queues and sleeps. When the
    leader's transaction is over it wakes its group's writers with their outcomes and
    hands leadership to the oldest queued write, whose thread runs every write queued
    by then, and every one queued before its COMMIT, in one transaction (up to the
    bounds). While one group's fsync runs the next group forms, so N threads that
    commit together share one or two fsyncs instead of paying N.

    Rejected: a dedicated writer thread (a lone commit would pay two thread switches),
    and a leader that runs transaction after transaction until the queue is empty
    (under steady load its own caller would never return; one transaction, bounded by
    `_GROUP_MAX_WRITES`, is all a leader runs).

    Args:
        execute: runs a group: takes the leader's write in a list, may extend it with
            `gather`, and sets each write's `committed` or `error`.
        location: the vault, for error messages.
    """

    def __init__(self, execute: Callable[[list[_Write]], None], *, location: str) -> None:
        self._execute = execute
        self._location = location
        # Guards the queue, `_leading` and the state of every write in the queue.
        self._lock = threading.Lock()
        self._queue: deque[_Write] = deque()
        self._leading = False

    def submit(self, apply: Callable[[sqlite3.Connection], None], nbytes: int) -> None:
        """Run `apply` in a group transaction; return once that transaction committed.

        Raises:
            ConflictError: `apply` refused the write (nothing of it was written).
            StorageError: the group's transaction failed (nothing of it was written).
        """
        write = _Write(apply, nbytes)
        try:
            with self._lock:
                if self._leading:
                    wake = write.wake = threading.Lock()
                    wake.acquire()
                    self._queue.append(write)
                else:
                    # "lead" before `_leading`: an interrupt between the two must find a
                    # leader to step down, not a queued write that is in no queue.
                    write.state = "lead"
                    self._leading = True
                    wake = None
            if wake is not None:
                wake.acquire()  # released with an outcome, or to hand over leadership
                if write.state == "done":
                    self._outcome(write)
                    return
            self._lead(write)
        except BaseException:
            self._abandon(write)
            raise

    def _lead(self, first: _Write) -> None:
        first.state = "running"
        group = [first]
        try:
            self._execute(group)
        finally:
            # Even when execution broke off: every waiter must wake, and someone must
            # lead the queue, or all writers of this vault would hang for good.
            self._hand_over(group[1:])
        self._outcome(first)

    def gather(self, group: list[_Write]) -> None:
        """Move queued writes into `group`, oldest first, up to the group's bounds."""
        if not self._queue:
            # Unlocked peek, so that a lone commit pays nothing here. A write queued just
            # after it is not lost: it stays in the queue, and `_hand_over` makes it lead.
            return
        with self._lock:
            nbytes = sum(write.nbytes for write in group)
            queue = self._queue
            while queue and len(group) < _GROUP_MAX_WRITES:
                # Stop at the first write that does not fit instead of skipping it: a
                # later write to the same run would then commit first, and the skipped
                # one, though first in line, would find a head it never expected.
                if nbytes + queue[0].nbytes > _GROUP_MAX_BYTES:
                    break
                write = queue.popleft()
                write.state = "running"
                group.append(write)
                nbytes += write.nbytes

    def _hand_over(self, followers: list[_Write]) -> None:
        """Wake the group's followers, and the oldest queued write as the next leader."""
        with self._lock:
            successor = self._queue.popleft() if self._queue else None
            if successor is None:
                self._leading = False
            else:
                successor.state = "lead"
            for write in followers:
                write.state = "done"
        # The successor first: its transaction can begin while the followers return.
        woken = followers if successor is None else [successor, *followers]
        for write in woken:
            assert write.wake is not None, "a queued write always has a wake lock"
            write.wake.release()

    def _abandon(self, write: _Write) -> None:
        """Clean up after `submit` was interrupted (a KeyboardInterrupt in the main thread)."""
        with self._lock:
            if write.state == "queued":
                # Never ran, so nothing of it is written. Left in the queue it would run
                # after its caller had been told (by the interrupt) that it did not.
                with suppress(ValueError):  # interrupted before it was queued
                    self._queue.remove(write)
                return
            handed = write.state == "lead"
        if handed:
            # Leadership arrived as the wait was interrupted: pass it on, or no thread
            # would ever run the queue again.
            write.state = "done"
            self._hand_over([])
        # "running" or "done": its group decides (or decided) the outcome; the caller
        # sees the interrupt, as with any call interrupted mid-commit.

    def _outcome(self, write: _Write) -> None:
        """Return if `write` was committed, else raise why not."""
        if write.committed:
            return
        error, write.error = write.error, None  # no cycle through the traceback
        if error is None:
            error = StorageError(
                f"{self._location}: the thread committing this write with others stopped "
                f"before it could tell whether the write was committed; load the run to "
                f"see its newest checkpoint."
            )
        raise error


class _Checkpointer:
    """Copies the WAL into the database file from a thread of its own.

    Commits only report how many bytes they wrote. The thread runs a PASSIVE
    checkpoint (it never blocks readers or writers) once 4 MiB have piled up, or
    after a second of quiet. If the process dies first nothing is lost: the WAL is
    part of the database, and the next process to write checkpoints it.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._wake = threading.Condition()
        self._backlog = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def committed(self, nbytes: int) -> None:
        with self._wake:
            idle = self._backlog == 0
            self._backlog += nbytes
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="statevault-sqlite-checkpoint", daemon=True
                )
                self._thread.start()
            # Wake the thread only when it has something new to decide: its first bytes,
            # or a backlog now due. Waking it on every commit made it compete with the
            # committing threads for the GIL just when the next transaction should start.
            if (idle and self._backlog) or self._due():
                self._wake.notify()

    def _due(self) -> bool:
        return self._stopping or self._backlog >= _CHECKPOINT_AFTER

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                with self._wake:
                    self._wake.wait_for(lambda: self._stopping or self._backlog > 0)
                    # A small backlog waits for a quiet second, so a burst of commits is
                    # copied once, not page by page as it is rewritten.
                    self._wake.wait_for(self._due, timeout=_CHECKPOINT_IDLE)
                    if self._stopping:
                        return
                    self._backlog = 0
                if conn is None:
                    conn = self._connect()
                with suppress(sqlite3.Error):
                    # A failed checkpoint loses nothing (the WAL keeps the pages); the
                    # next one, or the next process to write, retries.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
