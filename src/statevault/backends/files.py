"""A vault as a directory of plain files, shared safely by threads and processes.

Layout (versions 1 and 2, named in the marker file)::

    <dir>/STATEVAULT                  marker + metadata (see `encode_marker`)
    <dir>/tmp/                        every temporary file except the marker's
    <dir>/locks/<run dir name>        one flock file per run, and `meta.lock`
    <dir>/objects/<ab>/<abcdef...>    one file per object, named by the full hex digest
    <dir>/runs/<name>/id              the run id, UTF-8
    <dir>/runs/<name>/ckpt/<seq>      layout 1: one file per record, seq as 20 digits
    <dir>/runs/<name>/log/<seq>       layout 2: segments of records (`backends.seglog`)
    <dir>/leases/<run dir name>       the run's lease (see `encode_lease`), kept for good
    <dir>/trash/                      deleted run directories on their way out
    <dir>/rollbacks/<run dir name>    a roll-back under way: the seq it keeps through
    <dir>/quarantine/<hex>[.<n>]      objects moved aside by repair (never deleted)
    <dir>/recovery/<name>.<seq>.<id>  torn journal tails set aside (layout 2, never deleted)

How a write becomes durable: the bytes go to a temporary file in `tmp/` and are fsynced,
then the file is linked under its final name and the final directory is fsynced (the
Maildir pattern). A name therefore never points at partial data, and `open()` only has
to sweep `tmp/` and the vault root for strays, not every object or run directory.

A run's head is its highest checkpoint file. A commit takes the run's lock, checks the
head and links the next record; that check-then-link under the lock is the
compare-and-swap of `Backend.commit_checkpoint`. The run's lease file is read under
the same lock, so the fencing check and the compare-and-swap are one step. Lease files
live outside `runs/` and are never removed: a deleted run's tokens keep growing.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import re
import secrets
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from statevault.backends.base import (
    Capabilities,
    Durability,
    LeaseGrant,
    RecoveryNote,
    Rewrite,
    StepProgress,
    StoredCheckpoint,
    UpgradeStep,
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
from statevault.backends.fsio import FileIO, pid_alive, temp_owner_pid
from statevault.backends.seglog import (
    LogView,
    Segment,
    SegmentWriter,
    SuccessorMissing,
    Tail,
    ends_at,
    parse_segment_name,
    read_log,
    salvage,
    segments_for_newest,
)
from statevault.errors import (
    ConflictError,
    CorruptionError,
    NotAVaultError,
    StateVaultError,
    StorageError,
    UnsupportedFormatError,
    VaultBusyError,
    VaultClosedError,
)
from statevault.faults import crash_point, register

MARKER_NAME = "STATEVAULT"
MARKER_MAGIC = b"statevault-files\n"
LAYOUT_VERSION = 2
"""The newest directory layout, the one new vaults get. A reader refuses a marker with a
higher one. Layout 1 keeps each record in its own file under `ckpt/`; layout 2 keeps a
run's records as frames in segment files under `log/` (see `statevault.backends.seglog`).
A vault keeps its layout until `statevault upgrade` rewrites it."""

_SUBDIRS = ("tmp", "locks", "objects", "runs", "trash")
"""Made at open. `rollbacks/` and `quarantine/` are made on first use instead, so that
opening a vault of an earlier release (a golden vault, a read-only look) adds nothing."""
_QUARANTINE_NAME = re.compile(r"((?:[0-9a-f]{2})+)(?:\.([0-9]+))?")
_SEQ_DIGITS = 20
_MAX_SEQ = 10**_SEQ_DIGITS - 1
_NAME_CHARS = 40
_NAME_HASH_BYTES = 12
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9_-]")
_TEMP_FILE = re.compile(r"\.tmp-[0-9]+-[0-9a-f]{12}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_LOCK_STRIPES = 64
_PROBE_STEPS = 64
"""Checkpoint files probed one by one past a known head before listing the directory."""
_PROBE_READ_LIMIT = 64
"""`read_checkpoints(limit=...)` up to this size reads files by seq instead of listing."""
_READ_ATTEMPTS = 8
_CACHE_LIMIT = 65536


_CRASH_OBJECTS_WRITTEN = register(
    "files.objects.after_data", "objects' bytes are fsynced in tmp/, not yet linked"
)
_CRASH_OBJECTS_LINKED = register(
    "files.objects.after_link", "objects are linked, their directories not yet fsynced"
)
_CRASH_RUN_PREPARED = register(
    "files.run.after_id", "a new run's directory and id exist, not yet fsynced"
)
_CRASH_RECORD_LINKED = register(
    "files.record.after_link", "a record is linked under its seq, ckpt/ not yet fsynced"
)
_CRASH_RECORD_SYNCED = register(
    "files.record.after_sync", "a record is durable; the commit has not returned"
)
_CRASH_DELETE_MOVED = register(
    "files.delete.after_rename", "a deleted run is moved to trash/, not yet fsynced"
)
_CRASH_DELETE_SYNCED = register(
    "files.delete.after_sync", "a deletion is durable; the run's files are not yet removed"
)
_CRASH_ROLLBACK_INTENT = register(
    "files.rollback.after_intent", "a roll-back's intent is durable; no record removed yet"
)
_CRASH_ROLLBACK_REMOVING = register(
    "files.rollback.after_unlink",
    "a roll-back removed one more record file or segment (top down), or set one aside",
)
_CRASH_QUARANTINE_LINKED = register(
    "files.quarantine.after_link", "an object is linked in quarantine/, still in objects/"
)
_CRASH_UPGRADE_RUN = register(
    "files.upgrade.after_run", "one more run has log/ (layout upgrade); the marker names layout 1"
)
_CRASH_UPGRADE_CONVERTED = register(
    "files.upgrade.after_convert", "every run has log/, the marker still names layout 1"
)
_CRASH_SWEEP = register(
    "files.open.after_sweep_step", "open removed one stray file or finished one roll-back"
)


# -- names ------------------------------------------------------------------------------
def run_dir_name(run_id: str) -> str:
    """The directory name of a run: a readable stem, `~`, and a hash of the exact id.

    The stem keeps [A-Za-z0-9_-] and turns every other character into `_`, so no id can
    name a path outside `runs/` ("..", "a/b") or depend on the filesystem's Unicode
    normalization. The stem is lossy; the hash is what keeps names apart, also on
    case-insensitive filesystems (the hex digits are lowercase, and the hash covers the
    id's exact case). 96 bits make an accidental collision negligible; the `id` file in
    each run directory turns one into a `CorruptionError` instead of a mix-up.

    Example:
        >>> run_dir_name("order/42")
        'order_42~...'  # doctest: +SKIP
    """
    stem = _UNSAFE_CHAR.sub("_", run_id)[:_NAME_CHARS]
    digest = hashlib.blake2b(run_id.encode("utf-8"), digest_size=_NAME_HASH_BYTES).hexdigest()
    return f"{stem}~{digest}"


def _seq_name(seq: int) -> str:
    return f"{seq:0{_SEQ_DIGITS}d}"


def _parse_seq(name: str) -> int | None:
    if len(name) == _SEQ_DIGITS and name.isascii() and name.isdigit():
        return int(name)
    return None


@dataclass(frozen=True, slots=True)
class _KnownTail:
    """A run's tail as this process last wrote or read it, and the record before it."""

    tail: Tail
    record_digest: bytes | None
    """`_record_digest` of the head's record (the frame just before `tail`), if known:
    32 bytes a run, where the record itself could be kilobytes for each of up to
    `_CACHE_LIMIT` runs."""


def _record_digest(record: bytes | None) -> bytes | None:
    return None if record is None else hashlib.blake2b(record, digest_size=32).digest()


def _segment_of(seq: int) -> Callable[[list[str]], list[str]]:
    """Picks the segment that holds `seq` from a sorted listing of segment names."""

    def pick(names: list[str]) -> list[str]:
        firsts = [parse_segment_name(n) or 0 for n in names]
        index = bisect.bisect_right(firsts, seq) - 1
        return names[index : index + 1] if index >= 0 else []

    return pick


# -- the marker -------------------------------------------------------------------------
class _MarkerError(Exception):
    """The marker's bytes are not a marker this module wrote (or they are damaged)."""


def encode_marker(meta: Mapping[str, bytes], *, layout: int = LAYOUT_VERSION) -> bytes:
    """The STATEVAULT file: magic line, layout version, entries, CRC32 of all before it.

    Entries are `u32 key length, UTF-8 key, u32 value length, value`, sorted by key; all
    integers big-endian. The CRC catches torn or damaged markers, which matter because
    the marker is both what makes a directory a vault and the home of the metadata.
    """
    parts = [MARKER_MAGIC, struct.pack(">HI", layout, len(meta))]
    for key in sorted(meta):
        raw_key = key.encode("utf-8")
        value = bytes(meta[key])
        parts += [struct.pack(">I", len(raw_key)), raw_key, struct.pack(">I", len(value)), value]
    body = b"".join(parts)
    return body + struct.pack(">I", zlib.crc32(body))


def decode_marker(data: bytes) -> dict[str, bytes]:
    """The metadata in a STATEVAULT file (see `read_marker`)."""
    return read_marker(data)[1]


def read_marker(data: bytes) -> tuple[int, dict[str, bytes]]:
    """The layout version and the metadata in a STATEVAULT file.

    Raises:
        _MarkerError: not a marker, or a damaged one.
        UnsupportedFormatError: a marker of a newer layout than this module knows.
    """
    header = len(MARKER_MAGIC) + struct.calcsize(">HI")
    if not data.startswith(MARKER_MAGIC):
        raise _MarkerError("it does not start with the statevault-files magic line")
    if len(data) < header + 4:
        raise _MarkerError(f"it is truncated ({len(data)} bytes)")
    body = data[:-4]
    (stored_crc,) = struct.unpack(">I", data[-4:])
    actual_crc = zlib.crc32(body)
    if stored_crc != actual_crc:
        raise _MarkerError(
            f"its checksum does not match (stored {stored_crc:08x}, computed {actual_crc:08x})"
        )
    # The version is read only after the CRC passed, so a damaged byte is never reported
    # as "written by a newer statevault".
    version, count = struct.unpack_from(">HI", body, len(MARKER_MAGIC))
    if version > LAYOUT_VERSION:
        raise UnsupportedFormatError(
            found=version, supported=LAYOUT_VERSION, what="directory vault layout"
        )
    if version < 1:
        raise _MarkerError(f"it names layout version {version}")
    meta: dict[str, bytes] = {}
    pos = header
    try:
        for _ in range(count):
            (key_len,) = struct.unpack_from(">I", body, pos)
            key = body[pos + 4 : pos + 4 + key_len].decode("utf-8")
            pos += 4 + key_len
            (value_len,) = struct.unpack_from(">I", body, pos)
            value = body[pos + 4 : pos + 4 + value_len]
            pos += 4 + value_len
            if pos > len(body):
                raise _MarkerError("an entry runs past the end of the file")
            meta[key] = value
    except (struct.error, UnicodeDecodeError) as exc:
        raise _MarkerError(f"an entry is malformed ({exc})") from exc
    if pos != len(body):
        raise _MarkerError(f"{len(body) - pos} bytes follow the last entry")
    return version, meta


# -- lease files ------------------------------------------------------------------------
LEASE_MAGIC = b"statevault-lease\n"
_LEASE_VERSION = 1
_LEASE_FIXED = struct.Struct(">HQdI")  # version, token, expires_at, owner length


def encode_lease(grant: LeaseGrant) -> bytes:
    """A lease file: magic line, version, token, expiry, owner, run id, CRC32 of all before.

    Integers big-endian; `expires_at` an IEEE double; owner length-prefixed, the run id
    (UTF-8) runs to the CRC. The CRC matters: a damaged lease file must never be read
    as a smaller token, which would let a stale holder write again.
    """
    owner = grant.owner.encode("utf-8")
    body = b"".join(
        [
            LEASE_MAGIC,
            _LEASE_FIXED.pack(_LEASE_VERSION, grant.token, grant.expires_at, len(owner)),
            owner,
            grant.run_id.encode("utf-8"),
        ]
    )
    return body + struct.pack(">I", zlib.crc32(body))


def decode_lease(data: bytes, *, run_id: str, path: str) -> LeaseGrant:
    """The grant in a lease file of run `run_id`; CorruptionError if it is not whole."""
    header = len(LEASE_MAGIC) + _LEASE_FIXED.size
    body = data[:-4]
    problem = ""
    if not data.startswith(LEASE_MAGIC) or len(data) < header + 4:
        problem = "it is not a lease file (or it is truncated)"
    elif struct.unpack(">I", data[-4:])[0] != zlib.crc32(body):
        problem = "its checksum does not match"
    else:
        version, token, expires_at, owner_len = _LEASE_FIXED.unpack_from(body, len(LEASE_MAGIC))
        owner = body[header : header + owner_len]
        stored_id = body[header + owner_len :]
        if version != _LEASE_VERSION:
            problem = f"it has lease format {version}, this statevault knows {_LEASE_VERSION}"
        elif len(owner) != owner_len or stored_id != run_id.encode("utf-8"):
            problem = "it belongs to another run"
        else:
            return LeaseGrant(run_id, owner.decode("utf-8", "replace"), token, expires_at)
    raise CorruptionError(
        f"the lease file {path} is damaged: {problem}",
        run_id=run_id,
        hint=(
            "Its fencing token cannot be trusted, so the run refuses writes. Stop every "
            "worker of the run, then delete the file: the next lease starts a new count."
        ),
    )


# -- the backend ------------------------------------------------------------------------
class FilesBackend:
    """A vault in a directory: one file per object and per checkpoint record.

    Args:
        path: the directory. Created if it does not exist; an empty directory is
            turned into a vault; anything else that is not a vault is refused unchanged.
        durability: "fsync" (a returned write survives power loss) or "process" (it
            survives a crash of the process only; no fsyncs are issued).
        initial_meta: metadata written when the vault is created.
        create: when False, a missing or empty directory raises `NotAVaultError`.
        fileio: the file operations to use (crash tests pass a recording one).
        layout: the directory layout of a vault created here (an existing vault keeps
            its own); 1 exists for tests of vaults made by earlier releases.

    Raises:
        NotAVaultError: the path holds something else; nothing was changed.
        CorruptionError: the directory is a vault whose marker is damaged.
        UnsupportedFormatError: the vault was written by a newer layout.

    Example:
        >>> backend = FilesBackend("/tmp/vault", initial_meta={"format": b"1"})  # doctest: +SKIP
        >>> backend.commit_checkpoint("order-42", 1, b"record", expected_head=0)  # doctest: +SKIP
    """

    capabilities = Capabilities(
        persistent=True,
        multi_process=True,
        durable_fsync=True,
        leases=True,
        rewrite_records=True,
        map_objects=True,
    )

    def __init__(
        self,
        path: str,
        *,
        durability: Durability = "fsync",
        initial_meta: Mapping[str, bytes],
        create: bool = True,
        fileio: FileIO | None = None,
        layout: int = LAYOUT_VERSION,
    ) -> None:
        if layout not in (1, LAYOUT_VERSION):
            raise ValueError(f"layout must be 1 or {LAYOUT_VERSION}; got {layout!r}")
        self._new_layout = layout
        self._root = os.path.abspath(path)
        self._io = fileio or FileIO(sync=durability == "fsync")
        self._marker = os.path.join(self._root, MARKER_NAME)
        self._tmp = os.path.join(self._root, "tmp")
        self._locks = os.path.join(self._root, "locks")
        self._objects = os.path.join(self._root, "objects")
        self._runs = os.path.join(self._root, "runs")
        self._trash = os.path.join(self._root, "trash")
        self._leases = os.path.join(self._root, "leases")
        self._leases_ready = False
        self._rollbacks = os.path.join(self._root, "rollbacks")
        self._quarantine = os.path.join(self._root, "quarantine")
        self._closed = False
        # flock alone already excludes threads: each `FileIO.locked` call opens the lock
        # file anew, and flock locks belong to the open file description, not the process
        # (checked on Linux/ext4). The in-process locks are kept because on NFS Linux
        # emulates flock with POSIX record locks, which are per process, and because they
        # queue threads cheaply in Python rather than in the kernel. Striped by run name
        # so the table stays small however many runs there are.
        self._run_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._meta_lock = threading.Lock()
        # Caches of facts that stay true: a run directory whose `id` file was checked
        # keeps that id (a re-created directory gets the same one), and a known head is
        # where probing for the current one starts (see `_read_head`).
        self._verified: set[str] = set()
        self._head_hints: dict[str, int] = {}
        self._layout = LAYOUT_VERSION
        self._vault_lock: int | None = None
        self._segments = SegmentWriter(self._io, self._tmp)
        self._recovery = os.path.join(self._root, "recovery")
        # Layout 2: each run's tail (checked with two small reads before it is trusted)
        # with its head's record, verified scans of segments (by name and key; a
        # rewritten segment has a new key), and torn tails seen by readers that no
        # writer has set aside yet.
        self._tails: dict[str, _KnownTail] = {}
        self._scans: dict[tuple[str, bytes], Segment] = {}
        self._torn_seen: dict[str, tuple[int, int]] = {}
        self._open(initial_meta, create=create)

    @property
    def location(self) -> str:
        return self._root

    # -- opening ------------------------------------------------------------------------
    def _open(self, initial_meta: Mapping[str, bytes], *, create: bool) -> None:
        io = self._io
        try:
            # Everything up to reading the marker only looks, so a foreign path is left
            # exactly as it was (not even a lock file is created).
            if not io.exists(self._root):
                if not create:
                    raise NotAVaultError(self._root, "it does not exist (and create=False)")
                io.makedirs(self._root)
            elif not io.is_dir(self._root):
                raise NotAVaultError(
                    self._root,
                    "it is a file, not a directory (a single-file vault is a SQLite vault: "
                    "open it with a bare path or `sqlite:///path`)",
                )
            entries = io.listdir(self._root)
            if MARKER_NAME not in entries:
                # Temporary files are all an interrupted (or concurrent) creation can
                # leave before the marker exists, so they do not make a directory foreign.
                foreign = sorted(name for name in entries if not _TEMP_FILE.fullmatch(name))
                if foreign:
                    shown = ", ".join(repr(name) for name in foreign[:5])
                    more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
                    raise NotAVaultError(
                        self._root,
                        f"it is a non-empty directory ({shown}{more}) without a {MARKER_NAME} file",
                    )
                if not create:
                    raise NotAVaultError(
                        self._root, f"it holds no {MARKER_NAME} file (and create=False)"
                    )
                self._create_marker(initial_meta)
            self._load_marker(at_open=True)
            made = False
            for sub in _SUBDIRS:
                made |= io.mkdir(os.path.join(self._root, sub), sync_parent=False)
            if made:
                # The sub-directories' entries must be durable before anything is
                # written into them, or a crash could keep files whose directory is lost.
                io.fsync_dir(self._root)
            self._hold_vault_lock()
            self._sweep()
        except StateVaultError:
            raise
        except OSError as exc:
            raise StorageError(f"{self._root}: could not open the vault ({exc})") from exc

    def _create_marker(self, initial_meta: Mapping[str, bytes]) -> None:
        # The marker comes first and the sub-directories after it, so a crash during
        # creation leaves an empty directory (plus perhaps a temp file), which the next
        # open accepts, never a half-made vault that it would refuse as foreign.
        # An exclusive create, not a replace: when two processes create the vault at
        # once, the first marker (and its vault id) stands and the other process uses it.
        self._io.create_exclusive(
            self._marker, encode_marker(initial_meta, layout=self._new_layout)
        )
        # Without this the marker's name could be lost in a crash while files written
        # afterwards survive, and the vault would no longer be recognised.
        self._io.fsync_dir(self._root)

    def _load_marker(self, *, at_open: bool = False) -> dict[str, bytes]:
        try:
            data = self._io.read(self._marker)
        except (IsADirectoryError, FileNotFoundError) as exc:
            if at_open:
                raise NotAVaultError(self._root, f"its {MARKER_NAME} is not a file") from exc
            raise CorruptionError(f"the vault marker {self._marker} is missing") from exc
        try:
            layout, meta = read_marker(data)
        except _MarkerError as exc:
            looks_like_vault = self._io.is_dir(self._objects) and self._io.is_dir(self._runs)
            if at_open and not looks_like_vault:
                raise NotAVaultError(
                    self._root, f"its {MARKER_NAME} file is not a statevault marker: {exc}"
                ) from exc
            raise CorruptionError(
                f"the vault marker {self._marker} is damaged: {exc}",
                hint=(
                    "Objects and runs are stored apart from it and are untouched; restore "
                    "the STATEVAULT file from a backup to open the vault again."
                ),
            ) from exc
        self._layout = layout
        return meta

    def _sweep(self) -> None:
        """Remove what crashed writers left: their temp files and half-deleted runs.

        A temp file is removed only if the pid in its name is dead: another process may
        be writing it right now, and removing it would fail that write. A removal here
        need not be durable; one that a crash undoes is simply redone at the next open.
        Caveat: processes in different pid namespaces sharing one vault cannot see each
        other's pids; a removed live temp then fails that writer's call (never silently).
        """
        for directory in (self._root, self._tmp):
            for name in self._io.listdir(directory):
                pid = temp_owner_pid(name)
                if pid is not None and not pid_alive(pid):
                    # A stray that cannot be removed now is left for a later open.
                    self._io.discard(os.path.join(directory, name))
                    crash_point(_CRASH_SWEEP)
        for name in self._io.listdir(self._trash):
            # Another process may be removing the same tree; both only remove, so the
            # race is harmless, and whatever is left goes at a later open.
            with suppress(OSError):
                self._io.rmtree(os.path.join(self._trash, name))
            crash_point(_CRASH_SWEEP)
        for name in self._io.listdir(self._rollbacks):
            if _TEMP_FILE.fullmatch(name):
                continue
            # A damaged intent fails only its own run's writes (with the hint), not the
            # opening of the whole vault.
            with self._run_lock(name), suppress(CorruptionError):
                self._settle_roll_back(name)
            crash_point(_CRASH_SWEEP)

    def _hold_vault_lock(self) -> None:
        """Hold a shared flock on the `locks/` directory while the vault is open.

        `upgrade_layout` needs the vault to itself: it converts to an exclusive lock,
        which fails while any other handle (process, or backend in this process) holds
        its shared one. Opening waits while an upgrade holds it. The directory itself is
        locked, so that opening creates no file.
        """
        import fcntl  # noqa: PLC0415 - POSIX only, as `FileIO.locked`

        fd = self._io.syscall(os.open, self._locks, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            while True:
                try:
                    self._io.syscall(fcntl.flock, fd, fcntl.LOCK_SH)
                    break
                except InterruptedError:
                    continue
        except BaseException:
            self._io.close_quietly(fd)
            raise
        self._vault_lock = fd

    # -- plumbing -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise VaultClosedError(f"the vault {self._root} is closed; open it again")

    @contextmanager
    def _op(self, what: str) -> Iterator[None]:
        """Refuse calls after close, and report OS failures as `StorageError`."""
        self._check_open()
        try:
            yield
        except StateVaultError:
            raise
        except OSError as exc:
            raise StorageError(
                f"{self._root}: could not {what} ({exc}); the call did not complete"
            ) from exc

    @contextmanager
    def _run_lock(self, name: str) -> Iterator[None]:
        with (
            self._run_locks[hash(name) % _LOCK_STRIPES],
            # Lock files are never deleted: a process waiting on a lock file that another
            # one unlinked would lock an orphan, and a third process would create and
            # lock a fresh file of the same name, so two writers would hold "the" lock.
            self._io.locked(os.path.join(self._locks, name)),
        ):
            yield

    def _run_dir(self, name: str) -> str:
        return os.path.join(self._runs, name)

    def _ckpt_dir(self, name: str) -> str:
        return os.path.join(self._runs, name, "ckpt")

    def _ckpt_path(self, name: str, seq: int) -> str:
        return os.path.join(self._runs, name, "ckpt", _seq_name(seq))

    def _id_path(self, name: str) -> str:
        return os.path.join(self._runs, name, "id")

    def _object_path(self, digest: bytes) -> tuple[str, str]:
        if not digest:
            raise ValueError("an object digest must not be empty")
        name = digest.hex()
        fan_dir = os.path.join(self._objects, name[:2])
        return fan_dir, os.path.join(fan_dir, name)

    # -- metadata -----------------------------------------------------------------------
    def get_meta(self) -> dict[str, bytes]:
        with self._op("read the metadata"):
            return self._load_marker()

    def set_meta(self, key: str, value: bytes) -> None:
        if not isinstance(key, str):
            raise TypeError(f"a metadata key must be a str, got {type(key).__qualname__}")
        with (
            self._op("write the metadata"),
            self._meta_lock,
            # Read-modify-write of the whole marker: the lock keeps two writers of
            # different keys from each dropping the other's entry.
            self._io.locked(os.path.join(self._locks, "meta.lock")),
        ):
            meta = self._load_marker()
            meta[key] = bytes(value)
            # An atomic replace: a crash leaves the old marker or the new, never a torn
            # one that would make the whole vault unreadable.
            self._io.write_atomic(self._marker, encode_marker(meta, layout=self._layout))

    # -- objects ------------------------------------------------------------------------
    def put_objects(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        with self._op("store objects"):
            self._put_objects(items)

    def _put_objects(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        io = self._io
        pending: dict[str, tuple[str, bytes]] = {}
        present_dirs: set[str] = set()
        for digest, data in items:
            fan_dir, path = self._object_path(bytes(digest))
            if path in pending:
                continue
            if io.exists(path):
                # Objects are immutable and named by their content: one already present
                # holds the same bytes and is not rewritten. But another writer may have
                # linked it a moment ago and not yet fsynced its directory, while our
                # caller is about to make a record that needs it durable; so its
                # directory is fsynced below too. Rare: the engine sends only objects
                # that `has_objects` did not find.
                present_dirs.add(fan_dir)
            else:
                pending[path] = (fan_dir, data)
        fan_dirs = sorted({fan_dir for fan_dir, _ in pending.values()})
        made_fan_dir = False
        for fan_dir in fan_dirs:
            made_fan_dir |= io.mkdir(fan_dir, sync_parent=False)
        if made_fan_dir:
            # A new fan-out directory must itself survive, or the objects in it are lost.
            io.fsync_dir(self._objects)
        temps: list[str] = []
        try:
            # All data first (each temp fsynced by write_temp), then all names: the
            # batch costs one fsync per file plus one per touched directory, not two
            # directory fsyncs per object.
            for _, data in pending.values():
                temps.append(io.write_temp(self._tmp, data))
            if temps:
                crash_point(_CRASH_OBJECTS_WRITTEN)
            for temp, path in zip(temps, pending, strict=True):
                # A link, not a rename: it never replaces a file that a concurrent
                # writer of the same object has put there meanwhile (False then).
                io.link(temp, path)
            if temps:
                crash_point(_CRASH_OBJECTS_LINKED)
        finally:
            for temp in temps:
                io.discard(temp)
        for fan_dir in sorted(present_dirs.union(fan_dirs)):
            # Makes the new names durable; the data under them was fsynced before they
            # existed, so a crash never leaves a name pointing at missing bytes.
            io.fsync_dir(fan_dir)

    def get_objects(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        with self._op("read objects"):
            for digest in dict.fromkeys(bytes(d) for d in digests):
                try:
                    found[digest] = self._io.read(self._object_path(digest)[1])
                except FileNotFoundError:
                    continue
        return found

    def map_object(self, digest: bytes) -> memoryview | None:
        # Objects are files linked in whole and never written in place, so a map of one
        # stays as it was; one deleted meanwhile (GC, quarantine) stays readable through
        # it. Only damage from outside that truncates the file under a map would fault
        # its reader (SIGBUS): one reason mapping is asked for, never the default.
        with self._op("map an object"):
            try:
                return self._io.map_read(self._object_path(bytes(digest))[1])
            except FileNotFoundError:
                return None

    def has_objects(self, digests: Iterable[bytes]) -> set[bytes]:
        with self._op("look up objects"):
            return {
                digest
                for digest in (bytes(d) for d in digests)
                if self._io.exists(self._object_path(digest)[1])
            }

    def delete_objects(self, digests: Iterable[bytes]) -> None:
        with self._op("delete objects"):
            touched: set[str] = set()
            for digest in dict.fromkeys(bytes(d) for d in digests):
                fan_dir, path = self._object_path(digest)
                if self._io.exists(path):
                    self._io.unlink(path, missing_ok=True)
                    touched.add(fan_dir)
            for fan_dir in sorted(touched):
                # Without it a crash could bring a collected object back; harmless to
                # correctness, but GC would have reported space it did not free.
                self._io.fsync_dir(fan_dir)

    def scan_objects(self) -> Iterator[bytes]:
        self._check_open()  # now, not at the first next()
        return self._scan_objects()

    def _scan_objects(self) -> Iterator[bytes]:
        with self._op("scan objects"):
            for fan in self._io.listdir(self._objects):
                if len(fan) != 2 or not _HEX.fullmatch(fan):
                    continue
                for name in self._io.listdir(os.path.join(self._objects, fan)):
                    if name.startswith(fan) and _HEX.fullmatch(name):
                        yield bytes.fromhex(name)

    # -- runs: reading ------------------------------------------------------------------
    def _listed_seqs(self, name: str) -> list[int]:
        """The seqs in the run's `ckpt/`, from a listing of the live directory.

        Listed through `read_many` (which reads nothing here) for its check that the
        directory is still in place: a listing of one that `delete_run` has moved away
        and is emptying could show any subset of its records.
        """
        listed: list[int] = []

        def keep(listing: list[str]) -> list[str]:
            listed[:] = sorted(s for s in map(_parse_seq, listing) if s is not None)
            return []

        for _ in range(_READ_ATTEMPTS):
            try:
                if self._io.read_many(self._ckpt_dir(name), keep) is not None:
                    return listed
            except FileNotFoundError:
                return []
        return []  # deleted at every look: "no checkpoints" was true at each of them

    def _read_head(self, name: str, *, locked: bool = False) -> int:
        """The run's highest seq, found from the last known head without a full listing.

        Listing `ckpt/` costs O(checkpoints) (8 ms at 10,000 on this project's machine)
        and every commit needs the head, so the last head this process saw is kept and
        the files after it are probed. That is exact because a run's seqs have no gap
        above its head at any time a process can have observed it: commits add head + 1
        only, records vanish only with their whole run (then the known head's file is
        gone and this falls back to listing), and a gap can arise only from a power
        loss in `durability="process"` mode, which also ends every process and its
        cache. `roll_back` removes records from the top down, so it never makes a gap
        either: a hint it removed is missing (a listing follows), and a hint that
        commits after it brought back still has no gap above it.
        """
        if self._layout >= 2:
            return self._log_head(name, locked=locked)
        hint = self._head_hints.get(name, 0)
        if hint > 0 and self._io.exists(self._ckpt_path(name, hint)):
            head = hint
            for _ in range(_PROBE_STEPS):
                if not self._io.exists(self._ckpt_path(name, head + 1)):
                    break
                head += 1
            else:
                head = max(self._listed_seqs(name), default=0)
        else:
            head = max(self._listed_seqs(name), default=0)
        if len(self._head_hints) >= _CACHE_LIMIT:
            self._head_hints.clear()
        if head:
            self._head_hints[name] = head
        else:
            self._head_hints.pop(name, None)
        return head

    def _check_id(self, name: str, run_id: str) -> bool:
        """Check that the run directory holds `run_id`; False if it has vanished.

        Raises:
            CorruptionError: it holds another id, or checkpoints without an id.
        """
        if name in self._verified:
            return True
        try:
            stored = self._io.read(self._id_path(name))
        except FileNotFoundError:
            if not self._has_records(name):
                return False  # deleted meanwhile, or a directory a crash left half-made
            raise CorruptionError(
                f"the run directory {self._run_dir(name)} holds checkpoints but no `id` file",
                run_id=run_id,
            ) from None
        if stored != run_id.encode("utf-8"):
            raise self._wrong_id(name, run_id, stored)
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified.add(name)
        return True

    def _wrong_id(self, name: str, run_id: str, stored: bytes) -> CorruptionError:
        return CorruptionError(
            f"the run directory {self._run_dir(name)} belongs to run "
            f"{stored.decode('utf-8', 'replace')!r}, not to this one",
            run_id=run_id,
            hint="Two ids share a directory name only if the directory was renamed or copied.",
        )

    def list_runs(self, prefix: str = "") -> list[str]:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__qualname__}")
        # A directory stem is the sanitized id cut to 40 chars, so it starts with the
        # sanitized prefix whenever the id starts with the prefix: skip the rest unread.
        stem_prefix = _UNSAFE_CHAR.sub("_", prefix)[:_NAME_CHARS]
        found: list[str] = []
        with self._op("list runs"):
            for name in self._io.listdir(self._runs):
                stem, tilde, _ = name.rpartition("~")
                if not tilde or not stem.startswith(stem_prefix):
                    continue
                try:
                    stored = self._io.read(self._id_path(name))
                except FileNotFoundError:
                    continue  # deleted meanwhile, or half-made by a crash: no checkpoints
                try:
                    run_id = stored.decode("utf-8")
                except UnicodeDecodeError:
                    run_id = ""
                if run_dir_name(run_id) != name:
                    raise CorruptionError(
                        f"the run directory {self._run_dir(name)} holds the id {stored!r}, "
                        f"which does not belong to it"
                    )
                # In layout 2 a run is listed by its segments, without reading them, so
                # that one damaged run does not make the whole vault unlistable.
                if run_id.startswith(prefix) and (
                    self._has_records(name) if self._layout >= 2 else self._read_head(name) > 0
                ):
                    found.append(run_id)
        return sorted(found)

    def head(self, run_id: str) -> int:
        name = run_dir_name(check_run_id(run_id))
        with self._op("read the head"):
            head = self._read_head(name)
            if head and not self._check_id(name, run_id):
                return 0  # deleted while we looked
            return head

    def read_checkpoint(self, run_id: str, seq: int) -> bytes | None:
        name = run_dir_name(check_run_id(run_id))
        if not isinstance(seq, int) or not 1 <= seq <= _MAX_SEQ:
            return None
        with self._op("read a checkpoint"):
            if self._layout >= 2:
                found = self._log_record(name, run_id, seq)
                return found if found is not None and self._check_id(name, run_id) else None
            try:
                record = self._io.read(self._ckpt_path(name, seq))
            except FileNotFoundError:
                return None
            return record if self._check_id(name, run_id) else None

    def read_checkpoints(
        self, run_id: str, *, newest_first: bool = True, limit: int | None = None
    ) -> list[StoredCheckpoint]:
        name = run_dir_name(check_run_id(run_id))
        ckpt_dir = self._ckpt_dir(name)
        # Records are read through one handle on `ckpt/` (`FileIO.read_many`): if the run
        # is deleted and re-created meanwhile, the result still comes from one of the two
        # directories, never a mix. Files leave a `ckpt/` only after delete_run has moved
        # it to trash/, so a result from a directory still in place at the end of the
        # read is complete; otherwise (None, or a listed file gone) the read starts again
        # on whatever directory holds the run now.
        with self._op("read checkpoints"):
            if self._layout >= 2:
                return self._log_checkpoints(name, run_id, newest_first=newest_first, limit=limit)
            if newest_first and limit is not None and 0 < limit <= _PROBE_READ_LIMIT:
                # The usual "newest few" read: by seq from the head, no listing. Any
                # file missing (a deleted run, or a gap that a power loss left in
                # "process" mode) sends it to the exact, listing read below.
                head = self._read_head(name)
                if head == 0:
                    return []
                seqs = list(range(head, max(head - limit, 0), -1))
                with suppress(FileNotFoundError):
                    found = self._io.read_many(ckpt_dir, [_seq_name(seq) for seq in seqs])
                    if seqs and found is not None and len(found) == len(seqs):
                        return self._records(name, run_id, seqs, found)
            chosen: list[int] = []

            def pick(listing: list[str]) -> list[str]:
                seqs = sorted(s for s in map(_parse_seq, listing) if s is not None)
                if newest_first:
                    seqs.reverse()
                chosen[:] = seqs[:limit]
                return [_seq_name(seq) for seq in chosen]

            for _ in range(_READ_ATTEMPTS):
                try:
                    found = self._io.read_many(ckpt_dir, pick)
                except FileNotFoundError:
                    return []  # no such run (now)
                if found is not None and len(found) == len(chosen):
                    return self._records(name, run_id, chosen, found)
            raise StorageError(
                f"{self._root}: run {run_id!r} was deleted {_READ_ATTEMPTS} times while it "
                f"was being read; try again"
            )

    def _records(
        self, name: str, run_id: str, seqs: list[int], found: Mapping[str, bytes]
    ) -> list[StoredCheckpoint]:
        if seqs and not self._check_id(name, run_id):
            return []  # the run was deleted after its records were read
        return [StoredCheckpoint(seq, found[_seq_name(seq)]) for seq in seqs]

    # -- runs: layout 2, the segment log ------------------------------------------------
    def _records_dir(self, name: str) -> str:
        return os.path.join(self._runs, name, "log" if self._layout >= 2 else "ckpt")

    def _has_records(self, name: str) -> bool:
        if self._layout >= 2:
            return any(parse_segment_name(n) for n in self._io.listdir(self._records_dir(name)))
        return bool(self._listed_seqs(name))

    def _read_log(
        self,
        name: str,
        run_id: str,
        *,
        pick: Callable[[list[str]], list[str]] | None = None,
        want: Callable[[int], bool] = lambda seq: True,
    ) -> LogView:
        """A consistent read of the run's segments (all of them, or those `pick` takes).

        Read through one handle on `log/` (`FileIO.read_many`), for the same reason as
        `read_checkpoints` of layout 1: a run deleted and made anew meanwhile gives the
        segments of one of the two, never a mix. A segment that vanished meanwhile (a
        roll-back) sends the read round again.
        """
        log_dir = self._records_dir(name)
        chosen: list[str] = []
        newest: list[str] = []

        def choose(listing: list[str]) -> list[str]:
            names = sorted(n for n in listing if parse_segment_name(n) is not None)
            chosen[:] = pick(names) if pick is not None else names
            newest[:] = names[-1:]
            return chosen

        for attempt in range(_READ_ATTEMPTS):
            try:
                found = self._io.read_many(log_dir, choose)
            except FileNotFoundError:
                return LogView({}, 0, None, b"")
            if found is None or len(found) != len(chosen):
                continue
            if len(self._scans) >= _CACHE_LIMIT:
                self._scans.clear()
            try:
                view = read_log(
                    [(n, found[n]) for n in chosen],
                    run_id=run_id,
                    describe=lambda n: os.path.join(log_dir, n),
                    want=want,
                    cache=self._scans,
                    newest=chosen[-1:] == newest,
                )
            except SuccessorMissing:
                # A writer may have linked the successor (and sealed this segment)
                # after our listing: a new listing shows it, unless it is really gone.
                if attempt + 1 < _READ_ATTEMPTS:
                    continue
                if run_id:
                    raise
                return self._read_log(name, self._run_id_of(name), pick=pick, want=want)
            except CorruptionError:
                if run_id:
                    raise
                # Callers that know only the directory: read again to name the run.
                return self._read_log(name, self._run_id_of(name), pick=pick, want=want)
            if view.torn and view.tail is not None:
                self._torn_seen[name] = (view.head + 1, len(view.torn))
            return view
        raise StorageError(
            f"{self._root}: run {run_id!r} changed {_READ_ATTEMPTS} times while it was being "
            f"read; try again"
        )

    def _log_head(self, name: str, *, locked: bool) -> int:
        """The run's head: its cached tail if two small reads show it is still the tail,
        else from reading its newest segment.

        Only callers holding the run's lock (`locked`) update the cached tail, which the
        next commit writes at: a reader's tail may be older than the commit that
        another thread is about to make, and must never become that commit's offset.
        """
        known = self._tails.get(name)
        if known is not None and self._segments.tail_is_current(
            self._records_dir(name), known.tail
        ):
            return known.tail.next_seq - 1
        view = self._read_log(name, "", pick=lambda names: names[-1:])
        if locked:
            self._tails.pop(name, None)
            if len(self._tails) >= _CACHE_LIMIT:
                self._tails.clear()
            if view.tail is not None and not view.torn:
                self._tails[name] = _KnownTail(
                    view.tail, _record_digest(view.records.get(view.head))
                )
        return view.head

    def _log_checkpoints(
        self, name: str, run_id: str, *, newest_first: bool, limit: int | None
    ) -> list[StoredCheckpoint]:
        if limit is not None and limit <= 0:
            return []
        if newest_first and limit is not None:
            # The newest few: from the segments that can hold them, by the first seqs in
            # their names (one read, usually of the newest segment or two).
            view = self._read_log(
                name, run_id, pick=lambda names: segments_for_newest(names, limit)
            )
            seqs = sorted(view.records, reverse=True)[:limit]
            if len(seqs) == limit or 1 in view.records:
                return self._stored(name, run_id, view, seqs)
        # Every segment (also when the pick fell short: the log is damaged, or was
        # rolled back meanwhile, and the whole read says which).
        view = self._read_log(name, run_id)
        seqs = sorted(view.records, reverse=newest_first)[:limit]
        return self._stored(name, run_id, view, seqs)

    def _stored(
        self, name: str, run_id: str, view: LogView, seqs: list[int]
    ) -> list[StoredCheckpoint]:
        if seqs and not self._check_id(name, run_id):
            return []
        return [StoredCheckpoint(seq, view.records[seq]) for seq in seqs]

    def _log_append(self, name: str, run_id: str, seq: int, record: bytes) -> None:
        """Write the record of `seq` (run lock held; `_read_head` just said seq - 1)."""
        log_dir = self._records_dir(name)
        known = self._tails.get(name)
        tail = None if known is None else known.tail
        if seq > 1 and (tail is None or tail.next_seq != seq):
            view = self._read_log(name, run_id, pick=lambda names: names[-1:])
            if view.torn:
                self._set_torn_tail_aside(name, run_id, view)
            tail = view.tail
        self._tails.pop(name, None)
        tail = self._segments.append(log_dir, tail if seq > 1 else None, seq, record)
        self._tails[name] = _KnownTail(tail, _record_digest(record))

    def _set_torn_tail_aside(self, name: str, run_id: str, view: LogView) -> None:
        """Keep a torn tail's bytes in recovery/, then wipe them so the log goes on."""
        assert view.tail is not None
        self._io.mkdir(self._recovery)
        kept_as = os.path.join(
            self._recovery, f"{name}.{view.head + 1}.{time.time_ns()}-{secrets.token_hex(3)}"
        )
        self._io.write_atomic(kept_as, view.torn, temp_dir=self._tmp)
        self._segments.wipe(
            self._records_dir(name), view.tail.name, view.tail.end, view.tail.end + len(view.torn)
        )
        self._torn_seen.pop(name, None)

    def _log_rewrite(
        self, name: str, run_id: str, head: int, checked: list[tuple[int, bytes, bytes]]
    ) -> int:
        log_dir = self._records_dir(name)
        view = self._read_log(name, run_id)
        payloads = {
            seq: new
            for seq, expected, new in checked
            if seq < head and view.records.get(seq) == expected
        }
        if not payloads:
            return 0
        names = self._segment_names(name)
        firsts = [parse_segment_name(n) or 0 for n in names]
        touched = sorted({bisect.bisect_right(firsts, seq) - 1 for seq in payloads})
        for index in touched:
            data = self._io.read(os.path.join(log_dir, names[index]))
            self._segments.replace(log_dir, data, payloads, last=index == len(names) - 1)
        self._tails.pop(name, None)
        return len(payloads)

    def _log_record(self, name: str, run_id: str, seq: int) -> bytes | None:
        """The record of `seq`, read from its segment alone.

        If a later part of that segment is damaged, a record before the damage is still
        returned: its frame's tag proves its bytes, and repair needs to read the intact
        history of a damaged run to find how far it verifies.
        """
        pick = _segment_of(seq)
        try:
            return self._read_log(name, run_id, pick=pick, want=seq.__eq__).records.get(seq)
        except CorruptionError as exc:
            names = pick(self._segment_names(name))
            if not names:
                raise
            try:
                data = self._io.read(os.path.join(self._records_dir(name), names[0]))
            except FileNotFoundError:
                raise exc from None
            found = salvage(data).get(seq)
            if found is None:
                raise
            return found

    def _segment_names(self, name: str) -> list[str]:
        listing = self._io.listdir(self._records_dir(name))
        return sorted(n for n in listing if parse_segment_name(n) is not None)

    def _log_roll_back(self, name: str, run_id: str, keep_through: int) -> list[StoredCheckpoint]:
        """`roll_back` in layout 2 (run lock held); it works on a damaged log too.

        Returns the removed records that can still be read. Every segment it changes is
        first kept whole in recovery/, so even damaged records are never deleted.
        """
        try:
            view = self._read_log(name, run_id, want=lambda seq: seq > keep_through)
            if view.head <= keep_through:
                return []
            records = dict(view.records)
        except CorruptionError:
            records = {}
            for segment in self._segment_names(name):
                with suppress(FileNotFoundError):
                    data = self._io.read(os.path.join(self._records_dir(name), segment))
                    records.update(
                        (seq, rec) for seq, rec in salvage(data).items() if seq > keep_through
                    )
        if not self._segment_names(name):
            return []
        self._check_id(name, run_id)
        self._io.mkdir(self._rollbacks)
        self._io.write_atomic(
            os.path.join(self._rollbacks, name), b"%d" % keep_through, temp_dir=self._tmp
        )
        crash_point(_CRASH_ROLLBACK_INTENT)
        self._settle_roll_back(name)
        return [StoredCheckpoint(seq, records[seq]) for seq in sorted(records)]

    def _log_truncate(self, name: str, keep_through: int) -> None:
        """Remove the records after `keep_through` (run lock held), from the top down.

        Whole segments above it move to recovery/; the segment that holds it is linked
        there before it is rewritten without them. Run again after a crash, it picks up
        where it stopped: moved segments are gone, and a rewritten one ends at
        `keep_through` already.
        """
        log_dir = self._records_dir(name)
        names = self._segment_names(name)
        moved = False
        for segment in reversed(names):
            if (parse_segment_name(segment) or 0) > keep_through:
                self._io.mkdir(self._recovery)
                self._io.rename(os.path.join(log_dir, segment), self._recovery_path(name, segment))
                moved = True
                crash_point(_CRASH_ROLLBACK_REMOVING)
        if moved:
            self._io.fsync_dir(self._recovery)
            self._io.fsync_dir(log_dir)
        kept = [n for n in names if (parse_segment_name(n) or 0) <= keep_through]
        if not kept:
            return
        path = os.path.join(log_dir, kept[-1])
        data = self._io.read(path)
        if ends_at(data, keep_through):
            return
        self._io.mkdir(self._recovery)
        self._io.link(path, self._recovery_path(name, kept[-1]))
        self._io.fsync_dir(self._recovery)
        crash_point(_CRASH_ROLLBACK_REMOVING)
        self._segments.truncate_after(log_dir, kept[-1], data, keep_through)

    def _recovery_path(self, name: str, segment: str) -> str:
        """Where a segment that a roll-back changes is kept (not a torn-tail note)."""
        stamp = f"{time.time_ns()}-{secrets.token_hex(3)}"
        return os.path.join(self._recovery, f"{name}.rolled-back-{segment}.{stamp}")

    def recovery_notes(self) -> list[RecoveryNote]:
        notes: list[RecoveryNote] = []
        with self._op("list recovery notes"):
            for entry in sorted(self._io.listdir(self._recovery)):
                name, dot, rest = entry.partition(".")
                seq_text = rest.partition(".")[0]
                if not dot or not seq_text.isdigit():
                    continue
                path = os.path.join(self._recovery, entry)
                notes.append(
                    RecoveryNote(self._run_id_of(name), int(seq_text), self._io.size(path), path)
                )
            for name, (seq, size) in sorted(self._torn_seen.items()):
                notes.append(RecoveryNote(self._run_id_of(name), seq, size, None))
        return notes

    def _run_id_of(self, name: str) -> str:
        try:
            return self._io.read(self._id_path(name)).decode("utf-8", "replace")
        except FileNotFoundError:
            return f"<deleted run {name}>"

    # -- upgrading layout 1 to layout 2 --------------------------------------------------
    def _run_names(self) -> list[str]:
        return sorted(n for n in self._io.listdir(self._runs) if "~" in n)

    def plan_layout_upgrade(self) -> UpgradeStep | None:
        with self._op("plan a layout upgrade"):
            self._load_marker()
            runs = records = size = 0
            for name in self._run_names():
                seqs = self._listed_seqs(name)
                if not seqs:
                    continue
                runs += 1
                records += len(seqs)
                size += sum(self._io.size(self._ckpt_path(name, s)) for s in seqs)
            if self._layout >= LAYOUT_VERSION:
                if not runs:
                    return None
                return UpgradeStep(
                    f"files layout {LAYOUT_VERSION} (finishing)",
                    runs=runs,
                    detail="the record files (ckpt/) an interrupted upgrade left are removed",
                )
            return UpgradeStep(
                f"files layout {self._layout} -> {LAYOUT_VERSION}",
                runs=runs,
                records=records,
                bytes=size,
                detail=(
                    "each run's records move from a file per record (ckpt/) into segments "
                    "(log/), byte for byte: a commit becomes one write in place and one flush"
                ),
            )

    def upgrade_layout(self, progress: StepProgress | None = None) -> UpgradeStep | None:
        """Move every run's records into segments, then switch the marker to layout 2.

        Safe to kill anywhere: a run's segments are built in `log.new/` and renamed to
        `log/` whole, and they count only once the marker names layout 2, which is
        written last, atomically, after every run is converted and read back equal.
        Until then the vault is a layout-1 vault (a rerun rebuilds any `log/`); after
        it, leftover `ckpt/` directories are ignored and removed here.

        Raises:
            VaultBusyError: another handle has the vault open (it holds the vault
                lock); nothing was changed.
        """
        planned = self.plan_layout_upgrade()
        if planned is None:
            return None
        import fcntl  # noqa: PLC0415 - POSIX only, as `FileIO.locked`

        with self._op("upgrade the layout"), contextlib.ExitStack() as stack:
            assert self._vault_lock is not None
            try:
                self._io.syscall(fcntl.flock, self._vault_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise VaultBusyError(
                    f"{self._root}: other programs (or other open vaults in this one) have "
                    f"the vault open; close them and run the upgrade again. Nothing was changed."
                ) from None
            stack.callback(self._io.syscall, fcntl.flock, self._vault_lock, fcntl.LOCK_SH)
            # Threads of this process that share this backend wait until it is done.
            for lock in self._run_locks:
                stack.enter_context(lock)
            names = self._run_names()
            if self._layout < LAYOUT_VERSION:
                for done, name in enumerate(names, 1):
                    self._convert_run(name)
                    crash_point(_CRASH_UPGRADE_RUN)
                    if progress is not None:
                        progress(done, len(names))
                crash_point(_CRASH_UPGRADE_CONVERTED)
                with self._meta_lock:
                    meta = self._load_marker()
                    self._io.write_atomic(self._marker, encode_marker(meta, layout=LAYOUT_VERSION))
                self._layout = LAYOUT_VERSION
                self._head_hints.clear()
                self._tails.clear()
            for name in names:
                ckpt_dir = self._ckpt_dir(name)
                if self._io.is_dir(ckpt_dir):
                    trash_path = os.path.join(
                        self._trash, f"{name}.ckpt.{os.getpid()}-{secrets.token_hex(6)}"
                    )
                    self._io.rename(ckpt_dir, trash_path)
                    self._io.rmtree(trash_path)
            return planned

    def _convert_run(self, name: str) -> None:
        """Build the run's `log/` from its `ckpt/` files (layout 1 still in force)."""
        io = self._io
        self._settle_roll_back(name)
        seqs = self._listed_seqs(name)
        run_dir = self._run_dir(name)
        building = os.path.join(run_dir, "log.new")
        log_dir = os.path.join(run_dir, "log")
        for stale in (building, log_dir):
            if io.is_dir(stale):
                io.rmtree(stale)
        if not seqs:
            return
        found = io.read_many(self._ckpt_dir(name), [_seq_name(seq) for seq in seqs])
        if found is None or len(found) != len(seqs):
            raise StorageError(f"{self._root}: run directory {name} changed during the upgrade")
        records = {seq: found[_seq_name(seq)] for seq in seqs}
        if seqs != list(range(1, len(seqs) + 1)):
            raise CorruptionError(
                f"the run directory {run_dir} has a gap in its records ({seqs[:10]}...): "
                f"run `statevault verify` and `statevault repair` before upgrading"
            )
        io.mkdir(building, sync_parent=False)
        self._segments.write_log(building, records)
        io.fsync_dir(building)
        view = read_log(
            [(n, io.read(os.path.join(building, n))) for n in sorted(io.listdir(building))],
            run_id=self._run_id_of(name),
            describe=lambda n: os.path.join(building, n),
        )
        if dict(view.records) != records:
            raise StorageError(f"{self._root}: the converted log of {name} does not read back")
        io.rename(building, log_dir)
        io.fsync_dir(run_dir)

    # -- runs: writing ------------------------------------------------------------------
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
        name = run_dir_name(check_run_id(run_id))
        check_next_seq(seq, expected_head)
        if seq > _MAX_SEQ:
            raise ValueError(f"seq must be at most {_MAX_SEQ}; got {seq}")
        with self._op("commit a checkpoint"):
            # Objects first, and durable, before the record that refers to them can
            # exist; outside the lock, since they may be large and are safe to share.
            self._put_objects(objects)
            with self._run_lock(name):
                self._check_write_lease(name, run_id, lease_token)
                self._settle_roll_back(name)
                head = self._read_head(name, locked=True)
                if head != expected_head or (
                    expected_record is not None
                    and not self._head_record_is(name, head, expected_record)
                ):
                    raise ConflictError(run_id, expected=expected_head, actual=head)
                if head == 0:
                    self._prepare_run_dir(name, run_id)
                else:
                    self._check_id(name, run_id)
                if self._layout >= 2:
                    self._log_append(name, run_id, seq, record)
                    crash_point(_CRASH_RECORD_SYNCED)
                    return
                ckpt_dir = self._ckpt_dir(name)
                if not self._io.create_exclusive(
                    self._ckpt_path(name, seq), record, temp_dir=self._tmp
                ):
                    # Only a writer that ignores the lock could have put it there.
                    raise ConflictError(run_id, expected=expected_head, actual=seq)
                crash_point(_CRASH_RECORD_LINKED)
                # The commit is acknowledged when this returns: the record's name must be
                # on disk by then (its bytes were fsynced before the name existed).
                self._io.fsync_dir(ckpt_dir)
                self._head_hints[name] = seq
                crash_point(_CRASH_RECORD_SYNCED)

    def rewrite_records(
        self,
        run_id: str,
        rewrites: Sequence[Rewrite],
        *,
        objects: Sequence[tuple[bytes, bytes]] = (),
    ) -> int:
        name = run_dir_name(check_run_id(run_id))
        checked = check_rewrites(rewrites)
        with self._op("rewrite records"):
            self._put_objects(objects)
            with self._run_lock(name):
                self._settle_roll_back(name)
                head = self._read_head(name, locked=True)
                if head == 0 or not self._check_id(name, run_id):
                    return 0
                if self._layout >= 2:
                    return self._log_rewrite(name, run_id, head, checked)
                done = 0
                for seq, expected, new in checked:
                    path = self._ckpt_path(name, seq)
                    try:
                        if seq >= head or self._io.read(path) != expected:
                            continue
                    except FileNotFoundError:
                        continue
                    # Replaced whole (a temp file fsynced, then renamed over the record):
                    # readers and crashes see the old bytes or the new, both valid. The
                    # directory is not fsynced: a lost rename only loses the saving.
                    self._io.write_atomic(path, new, sync_dir=False, temp_dir=self._tmp)
                    done += 1
                return done

    def _head_record_is(self, name: str, head: int, expected: bytes) -> bool:
        """Whether the head's record holds exactly `expected` (run lock held)."""
        if head == 0:
            return False
        if self._layout >= 2:
            known = self._tails.get(name)
            if (
                known is not None
                and known.tail.next_seq == head + 1
                and known.record_digest is not None
            ):
                # The caller's `_read_head` just found this tail current, and the frames
                # before a current tail are never changed in place (a rewrite or a
                # roll-back writes a segment with a new key): no need to read the
                # segment again, which cost most of a small commit.
                return known.record_digest == _record_digest(expected)
            found = self._read_log(name, "", pick=_segment_of(head), want=head.__eq__)
            return found.records.get(head) == expected
        try:
            return self._io.read(self._ckpt_path(name, head)) == expected
        except FileNotFoundError:
            return False

    def _prepare_run_dir(self, name: str, run_id: str) -> None:
        """Make the run directory, its `id` and `ckpt/` exist durably (run lock held).

        Done before every first record of a run, fsyncs included, even when the
        directory is already there: a process that crashed while creating it may have
        left entries that are visible but not yet on disk. Later records need not
        repeat it: the first one was linked only after this had completed.
        """
        io = self._io
        run_dir = self._run_dir(name)
        io.mkdir(run_dir, sync_parent=False)
        try:
            stored: bytes | None = io.read(self._id_path(name))
        except FileNotFoundError:
            stored = None
        if stored is None:
            io.write_atomic(
                self._id_path(name), run_id.encode("utf-8"), sync_dir=False, temp_dir=self._tmp
            )
        elif stored != run_id.encode("utf-8"):
            raise self._wrong_id(name, run_id, stored)
        io.mkdir(self._records_dir(name), sync_parent=False)
        crash_point(_CRASH_RUN_PREPARED)
        # `id` and `ckpt/` before any record goes in: a record must never survive a
        # crash without the id that names its run, nor inside a lost `ckpt/`.
        io.fsync_dir(run_dir)
        # And the run directory's own entry in runs/.
        io.fsync_dir(self._runs)

    def delete_run(self, run_id: str, *, lease_token: int | None = None) -> bool:
        name = run_dir_name(check_run_id(run_id))
        with self._op("delete a run"), self._run_lock(name):
            self._check_write_lease(name, run_id, lease_token)
            # A roll-back that a crash interrupted is finished first, so that its intent
            # can never outlive this run and later apply to a new run of the same name.
            self._settle_roll_back(name)
            run_dir = self._run_dir(name)
            if not self._io.is_dir(run_dir):
                return False
            head = self._read_head(name, locked=True)
            # Never remove a directory that belongs to another id.
            try:
                stored: bytes | None = self._io.read(self._id_path(name))
            except FileNotFoundError:
                stored = None
            if stored is not None or head:
                self._check_id(name, run_id)
            # One rename takes the whole run out of runs/ at once: readers see all of it
            # or none of it, and a crash never leaves a run with some records missing.
            # The next writer finds head 0, so a stale writer that expects the old head
            # gets ConflictError instead of resurrecting the run.
            trash_path = os.path.join(self._trash, f"{name}.{os.getpid()}-{secrets.token_hex(6)}")
            self._io.rename(run_dir, trash_path)
            crash_point(_CRASH_DELETE_MOVED)
            # runs/: the deletion must survive a crash once acknowledged. trash/: the tree
            # must stay reachable there (for the sweep at open) rather than be orphaned.
            self._io.fsync_dir(self._runs)
            self._io.fsync_dir(self._trash)
            self._head_hints.pop(name, None)
            self._tails.pop(name, None)
            self._verified.discard(name)
            crash_point(_CRASH_DELETE_SYNCED)
            # Failing to free the space does not undo the deletion; open() retries.
            with suppress(OSError):
                self._io.rmtree(trash_path)
            return head > 0

    # -- leases -------------------------------------------------------------------------
    def _lease_path(self, name: str) -> str:
        return os.path.join(self._leases, name)

    def _stored_lease(self, name: str, run_id: str) -> LeaseGrant | None:
        path = self._lease_path(name)
        try:
            data = self._io.read(path)
        except FileNotFoundError:
            return None
        return decode_lease(data, run_id=run_id, path=path)

    def _check_write_lease(self, name: str, run_id: str, token: int | None) -> None:
        """The fencing check of a write (run lock held)."""
        if token is not None:
            check_token(token)
        check_write_lease(run_id, self._stored_lease(name, run_id), token=token, now=time.time())

    def _store_lease(self, name: str, grant: LeaseGrant, *, new_token: bool) -> None:
        """Replace the lease file whole (run lock held).

        The new file's bytes are always fsynced before its rename, so a crash leaves the
        old file or the new one, never a torn one. A grant with a new token is durable
        before it returns (the directory is fsynced too): a grant lost in a crash would
        let its token be granted again, and two holders with one token defeat fencing.
        A renewal or a release skips the directory fsync, since losing one is safe: the
        lease then ends at its earlier expiry, after which fencing refuses its holder.
        `leases/` is made by the first lease, not at open: opening a vault that never
        used leases must not need to write.
        """
        if not self._leases_ready:
            # Fsynced even if another process made it: its fsync may not have run yet,
            # and the directory must be durable before a lease file goes in.
            self._io.mkdir(self._leases, sync_parent=False)
            self._io.fsync_dir(self._root)
            self._leases_ready = True
        self._io.write_atomic(
            self._lease_path(name), encode_lease(grant), sync_dir=new_token, temp_dir=self._tmp
        )

    def acquire_lease(self, run_id: str, owner: str, ttl: float) -> LeaseGrant:
        name = run_dir_name(check_run_id(run_id))
        check_lease_args(owner, ttl)
        with self._op("acquire a lease"), self._run_lock(name):
            stored = self._stored_lease(name, run_id)
            grant = grant_lease(run_id, stored, owner=owner, ttl=ttl, now=time.time())
            self._store_lease(name, grant, new_token=True)
            return grant

    def renew_lease(self, run_id: str, token: int, ttl: float) -> LeaseGrant:
        name = run_dir_name(check_run_id(run_id))
        check_token(token)
        check_ttl(ttl)
        with self._op("renew a lease"), self._run_lock(name):
            stored = self._stored_lease(name, run_id)
            grant = renew_grant(run_id, stored, token=token, ttl=ttl, now=time.time())
            self._store_lease(name, grant, new_token=False)
            return grant

    def release_lease(self, run_id: str, token: int) -> None:
        name = run_dir_name(check_run_id(run_id))
        check_token(token)
        with self._op("release a lease"), self._run_lock(name):
            released = released_grant(
                self._stored_lease(name, run_id), token=token, now=time.time()
            )
            if released is not None:
                self._store_lease(name, released, new_token=False)

    def read_lease(self, run_id: str) -> LeaseGrant | None:
        name = run_dir_name(check_run_id(run_id))
        with self._op("read a lease"):
            return self._stored_lease(name, run_id)

    # -- repair -------------------------------------------------------------------------
    def roll_back(
        self, run_id: str, keep_through: int, *, lease_token: int | None = None
    ) -> list[StoredCheckpoint]:
        name = run_dir_name(check_run_id(run_id))
        check_keep_through(keep_through)
        with self._op("roll back a run"), self._run_lock(name):
            self._check_write_lease(name, run_id, lease_token)
            self._settle_roll_back(name)
            if self._layout >= 2:
                return self._log_roll_back(name, run_id, keep_through)
            head = self._read_head(name, locked=True)
            if head <= keep_through:
                return []
            self._check_id(name, run_id)
            seqs = list(range(keep_through + 1, head + 1))
            # The run lock is held, so no commit, delete or roll-back can change `ckpt/`.
            found = self._io.read_many(self._ckpt_dir(name), [_seq_name(seq) for seq in seqs])
            if found is None or len(found) != len(seqs):
                raise StorageError(
                    f"{self._root}: run {run_id!r} changed while it was rolled back, though "
                    f"its lock was held; is another program writing to the vault?"
                )
            removed = [StoredCheckpoint(seq, found[_seq_name(seq)]) for seq in seqs]
            # Several files cannot vanish in one step, so the intent is made durable
            # first: if a crash stops the removal half-way, the next writer of this run
            # (or the next open) finishes it before anything else happens to the run.
            # Without it a commit could land on a half-removed history and be removed
            # with the rest when the repair ran again.
            self._io.mkdir(self._rollbacks)
            self._io.write_atomic(
                os.path.join(self._rollbacks, name), b"%d" % keep_through, temp_dir=self._tmp
            )
            crash_point(_CRASH_ROLLBACK_INTENT)
            self._settle_roll_back(name)
            return removed

    def _settle_roll_back(self, name: str) -> None:
        """Finish the run's interrupted roll-back, if there is one (run lock held)."""
        intent = os.path.join(self._rollbacks, name)
        try:
            text = self._io.read(intent)
        except FileNotFoundError:
            return
        if not text.isdigit():
            # Written atomically, so a damaged intent means damage from outside: keep
            # the run as it is rather than guess how much of it to remove.
            raise CorruptionError(
                f"the roll-back intent {intent} is damaged ({text[:20]!r})",
                hint="Remove the file and run `statevault repair` on the vault again.",
            )
        keep_through = int(text)
        if self._layout >= 2:
            self._log_truncate(name, keep_through)
            self._io.unlink(intent, missing_ok=True)
            self._io.fsync_dir(self._rollbacks)
            self._tails.pop(name, None)
            return
        ckpt_dir = self._ckpt_dir(name)
        # From the top down: whatever a crash leaves is a history without gaps, which
        # `_read_head` relies on.
        for seq in sorted((s for s in self._listed_seqs(name) if s > keep_through), reverse=True):
            self._io.unlink(self._ckpt_path(name, seq), missing_ok=True)
            crash_point(_CRASH_ROLLBACK_REMOVING)
        if self._io.is_dir(ckpt_dir):
            self._io.fsync_dir(ckpt_dir)
        # Only once the removals are durable may the intent go.
        self._io.unlink(intent, missing_ok=True)
        self._io.fsync_dir(self._rollbacks)
        if keep_through:
            self._head_hints[name] = keep_through
        else:
            self._head_hints.pop(name, None)

    def quarantine_objects(self, digests: Iterable[bytes]) -> int:
        moved = 0
        with self._op("quarantine objects"):
            self._io.mkdir(self._quarantine)
            touched: set[str] = set()
            for digest in dict.fromkeys(bytes(d) for d in digests):
                fan_dir, path = self._object_path(digest)
                try:
                    data = self._io.read(path)
                except FileNotFoundError:
                    continue
                target = self._quarantine_slot(digest.hex(), data)
                if target is not None:
                    # A link, then the unlink: at every moment the bytes have a name
                    # that survives a crash, which a rename across directories does
                    # not promise on every filesystem.
                    self._io.link(path, target)
                    self._io.fsync_dir(self._quarantine)
                    crash_point(_CRASH_QUARANTINE_LINKED)
                self._io.unlink(path, missing_ok=True)
                touched.add(fan_dir)
                moved += 1
            for fan_dir in sorted(touched):
                self._io.fsync_dir(fan_dir)
        return moved

    def _quarantine_slot(self, hex_name: str, data: bytes) -> str | None:
        """A free name in quarantine/ for these bytes, or None if they are there already."""
        for n in range(1 << 16):
            slot = os.path.join(self._quarantine, hex_name if n == 0 else f"{hex_name}.{n}")
            try:
                held = self._io.read(slot)
            except FileNotFoundError:
                return slot
            if held == data:
                return None
        raise StorageError(f"{self._quarantine}: too many quarantined copies of {hex_name}")

    def quarantined_objects(self) -> dict[bytes, bytes]:
        found: dict[bytes, tuple[int, bytes]] = {}
        with self._op("read quarantined objects"):
            for name in self._io.listdir(self._quarantine):
                match = _QUARANTINE_NAME.fullmatch(name)
                if match is None:
                    continue
                digest = bytes.fromhex(match.group(1))
                copy = int(match.group(2) or 0)
                if digest in found and found[digest][0] < copy:
                    continue
                found[digest] = (copy, self._io.read(os.path.join(self._quarantine, name)))
        return {digest: data for digest, (_, data) in found.items()}

    def close(self) -> None:
        """Refuse further calls, and let go of the vault lock (see `_hold_vault_lock`)."""
        self._closed = True
        fd, self._vault_lock = self._vault_lock, None
        if fd is not None:
            self._io.close_quietly(fd)
