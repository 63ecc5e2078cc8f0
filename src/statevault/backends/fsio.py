"""The one door through which statevault touches files.

Every file operation of the files backend (and the SQLite backend's look at a
path before it opens it) goes through a `FileIO`, and every call a `FileIO`
makes to the operating system passes through its `syscall` method. Crash tests
put a recording `syscall` underneath and enumerate what a real disk may keep
after a power loss; fault tests make any one call fail. Code elsewhere must not
call `open`, `os.replace`, `os.fsync` and the like on vault files (a test scans
the package for such calls).

The durability rules that the rest of the package relies on:
- data reaches the disk only after `fsync` (or `fdatasync`) of its file;
- a create, rename, link or unlink survives only after `fsync_dir` of its directory;
- a failed flush poisons the `FileIO`: the kernel may have dropped the dirty
  pages and report a retried flush as a success, so nothing after it is trusted.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import ParamSpec, TypeVar

from statevault.errors import DurabilityError

TEMP_PREFIX = ".tmp-"
"""Temporary files are named `.tmp-<pid>-<random>`; a dead pid marks a stray."""

WRITE_CHUNK = 1 << 20
"""Large writes are issued in 1 MiB calls: on this project's machine, 2 MiB+ write()
calls into a new file ran ~10x slower (see docs/performance.md)."""

_READ_CHUNK = 1 << 20

_P = ParamSpec("_P")
_R = TypeVar("_R")

Data = bytes | bytearray | memoryview


class FileIO:
    """File operations with an explicit durability switch.

    The primitives (`open_file`, `write`, `pwrite`, `truncate`, `fsync`, `fdatasync`,
    `fsync_dir`, `close`, `rename`, `link`, `unlink`, `create_dir`, `remove_dir`, and
    the reads) each make one or a few OS calls through `syscall`; everything else here
    is built from them.

    Args:
        sync: when False (`durability="process"`), flushes are skipped: data then
            survives a crash of the process but not of the machine.
    """

    def __init__(self, *, sync: bool = True) -> None:
        self.sync = sync
        self._poisoned: BaseException | None = None

    def syscall(self, call: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Make one OS call (`os.write`, `os.fsync`, ...). Tests override this to record or
        fail calls; production code never needs to call it directly."""
        return call(*args, **kwargs)

    # -- durability ---------------------------------------------------------------------
    def fail_flush(self, error: BaseException, what: str) -> DurabilityError:
        """Record that a flush failed, here or in a database engine's own I/O; every
        later write or flush is then refused. Returns the error for the caller to raise."""
        self._poisoned = error
        return DurabilityError(
            f"{what} failed ({error}): whether it reached the disk is unknown, and this "
            f"vault handle refuses further writes. Close it and open the vault again."
        )

    def check_writable(self) -> None:
        """Raise DurabilityError if a flush has failed. Every write here calls it, and
        a backend that writes by other means (SQLite) calls it before it writes."""
        if self._poisoned is not None:
            raise DurabilityError(
                "an earlier flush to disk failed, so this vault handle refuses to write: "
                "close it and open the vault again (recovery keeps every acknowledged "
                f"commit). The failure was: {self._poisoned}"
            ) from self._poisoned

    @property
    def poisoned(self) -> bool:
        """True once a flush failed; every later write or flush then raises."""
        return self._poisoned is not None

    def _flush(self, call: Callable[[int], None], fd: int, what: str) -> None:
        # A flush after a failed one is refused too, never retried: it could report
        # success for data the kernel already dropped (the "fsyncgate" failure).
        self.check_writable()
        if not self.sync:
            return
        try:
            self.syscall(call, fd)
        except OSError as exc:
            raise self.fail_flush(exc, what) from exc

    def fsync(self, fd: int) -> None:
        """Flush one open file's data and metadata; a failure poisons this FileIO."""
        self._flush(os.fsync, fd, "fsync")

    def fdatasync(self, fd: int) -> None:
        """Flush one open file's data and size (not its times); a failure poisons this FileIO.

        Cheaper than `fsync` for overwrites of preallocated space, where no size or
        extent changes have to be journaled.
        """
        self._flush(os.fdatasync, fd, "fdatasync")

    def fsync_dir(self, path: str) -> None:
        """Make the entries of a directory (creates, renames, links, unlinks) durable."""
        self.check_writable()
        if not self.sync:
            return
        try:
            fd = self.syscall(os.open, path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            # The entries are not flushed either way: whoever changed them must not be
            # told that the call failed cleanly, since the change is visible and may yet
            # reach the disk. A flush that could not run is a failed flush.
            raise self.fail_flush(exc, f"opening directory {path} to flush it") from exc
        try:
            self._flush(os.fsync, fd, f"fsync of directory {path}")
        finally:
            self.close_quietly(fd)

    def db_committed(self, location: str) -> None:
        """Note that a database engine committed a transaction by its own I/O.

        SQLite (and PostgreSQL) write and flush their files themselves, not through
        this class; their backends call this once each COMMIT has returned (durable
        when `sync` is on), so a recording FileIO can place the commit, as a durable
        barrier, among the file operations around it. Nothing to do here.
        """

    # -- reading ------------------------------------------------------------------------
    def _read_fd(self, fd: int, limit: int | None = None) -> bytes:
        """Read from `fd`'s position to the end of the file, or `limit` bytes at most."""
        parts: list[bytes] = []
        remaining = limit
        # The first read asks for the whole file (and a byte more, so that usually the
        # second read sees the end): one copy, as `open(...).read()` does, not a join.
        want = self.syscall(os.fstat, fd).st_size + 1
        while remaining is None or remaining > 0:
            if remaining is not None:
                want = min(remaining, want)
            part = self.syscall(os.read, fd, want)
            want = _READ_CHUNK
            if not part:
                break
            parts.append(part)
            if remaining is not None:
                remaining -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _open_read(self, path: str, *, dir_fd: int | None = None) -> int:
        return self.syscall(os.open, path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)

    def read(self, path: str) -> bytes:
        """The whole file. Raises FileNotFoundError if it is absent."""
        fd = self._open_read(path)
        try:
            return self._read_fd(fd)
        finally:
            self.close_quietly(fd)

    def map_read(self, path: str) -> memoryview:
        """A read-only view of the whole file through a memory map (`view.obj` is the
        `mmap.mmap`); an empty file, which cannot be mapped, gives an empty view.

        Raises FileNotFoundError if it is absent.
        """
        fd = self._open_read(path)
        try:
            if self.syscall(os.fstat, fd).st_size == 0:
                return memoryview(b"")
            return memoryview(self.syscall(mmap.mmap, fd, 0, access=mmap.ACCESS_READ))
        finally:
            self.close_quietly(fd)

    def read_prefix(self, path: str, size: int) -> bytes:
        """At most the first `size` bytes of a file."""
        fd = self._open_read(path)
        try:
            return self._read_fd(fd, size)
        finally:
            self.close_quietly(fd)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Up to `size` bytes at `offset` of an open file (fewer at its end)."""
        parts: list[bytes] = []
        while size > 0:
            part = self.syscall(os.pread, fd, min(size, _READ_CHUNK), offset)
            if not part:
                break
            parts.append(part)
            size -= len(part)
            offset += len(part)
        return b"".join(parts)

    def read_many(
        self, directory: str, names: Iterable[str] | Callable[[list[str]], Iterable[str]]
    ) -> dict[str, bytes] | None:
        """Read several files of one directory through one open handle on the directory.

        `names` are the files to read, or a function that picks them from the
        directory's listing. Every file comes from the same directory, even if another
        directory takes its path meanwhile, which reading each file by its path cannot
        promise. Missing files are left out.

        Returns None if, by the end, the directory is no longer the one at `directory`
        (renamed away, replaced): then the listing may have been taken while it was
        being emptied. The open handle keeps the directory's inode from being reused,
        so this identity check cannot be fooled by a new directory. Raises
        FileNotFoundError if the directory does not exist.
        """
        dir_fd = self.syscall(os.open, directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            chosen = names(self.syscall(os.listdir, dir_fd)) if callable(names) else names
            found: dict[str, bytes] = {}
            for name in chosen:
                try:
                    fd = self._open_read(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue
                try:
                    found[name] = self._read_fd(fd)
                finally:
                    self.close_quietly(fd)
            try:
                still_there = os.path.samestat(
                    self.syscall(os.fstat, dir_fd), self.syscall(os.stat, directory)
                )
            except FileNotFoundError:
                still_there = False
            return found if still_there else None
        finally:
            self.close_quietly(dir_fd)

    def exists(self, path: str) -> bool:
        return self.syscall(os.path.lexists, path)

    def is_dir(self, path: str) -> bool:
        return self.syscall(os.path.isdir, path)

    def size(self, path: str) -> int:
        return self.syscall(os.stat, path).st_size

    def listdir(self, path: str) -> list[str]:
        """Entry names of a directory; empty if it does not exist."""
        try:
            return self.syscall(os.listdir, path)
        except FileNotFoundError:
            return []

    # -- writing: primitives ------------------------------------------------------------
    def open_file(
        self, path: str, *, create: bool = False, exclusive: bool = False, append: bool = False
    ) -> int:
        """Open a file for reading and writing; returns a descriptor for `close`.

        Args:
            create: create the file if it does not exist.
            exclusive: with `create`, fail with FileExistsError if it exists.
            append: every `write` goes to the end of the file.
        """
        self.check_writable()
        flags = os.O_RDWR | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT | (os.O_EXCL if exclusive else 0)
        if append:
            flags |= os.O_APPEND
        return self.syscall(os.open, path, flags, 0o644)

    def write(self, fd: int, data: Data) -> int:
        """One write at the file position; returns how much was written (may be less)."""
        self.check_writable()
        return self.syscall(os.write, fd, data)

    def pwrite(self, fd: int, data: Data, offset: int) -> int:
        """One write at `offset`; returns how much was written (may be less)."""
        self.check_writable()
        return self.syscall(os.pwrite, fd, data, offset)

    def truncate(self, fd: int, size: int) -> None:
        """Cut or extend (with zeros) an open file to `size` bytes."""
        self.check_writable()
        self.syscall(os.ftruncate, fd, size)

    def close(self, fd: int) -> None:
        self.syscall(os.close, fd)

    def close_quietly(self, fd: int) -> None:
        """Close after a read, after a successful flush, or while another error is on
        its way: Linux frees the descriptor even when close reports an error, which
        would only hide the data read, turn a durable write into a failed call, or hide
        the error that matters."""
        with suppress(OSError):
            self.syscall(os.close, fd)

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` by `src` (durable after `fsync_dir` of dst's parent)."""
        self.check_writable()
        self.syscall(os.replace, src, dst)

    def link(self, src: str, dst: str) -> bool:
        """Create `dst` as a new name of `src` unless `dst` exists; True if created."""
        self.check_writable()
        try:
            self.syscall(os.link, src, dst)
        except FileExistsError:
            return False
        return True

    def unlink(self, path: str, *, missing_ok: bool = False) -> None:
        """Remove a name. Allowed on a poisoned FileIO: it only ever clears up."""
        try:
            self.syscall(os.unlink, path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def discard(self, path: str) -> None:
        """Remove a temporary file if it can be; never raises.

        For clean-up: a failure to remove a temporary file must neither fail a call
        that has done its work (its commit is in place) nor hide the error of one that
        failed. A file left behind is a stray that the next open sweeps away.
        """
        with suppress(OSError):
            self.syscall(os.unlink, path)

    def create_dir(self, path: str) -> bool:
        """Create one directory (its parent must exist); True if this call created it."""
        self.check_writable()
        try:
            self.syscall(os.mkdir, path, 0o755)
        except FileExistsError:
            return False
        return True

    def remove_dir(self, path: str) -> None:
        """Remove an empty directory; a missing one is ignored."""
        with suppress(FileNotFoundError):
            self.syscall(os.rmdir, path)

    # -- writing: built from the primitives ---------------------------------------------
    def write_all(self, fd: int, data: Data) -> None:
        """Write all of `data` at the file position, in calls of at most `WRITE_CHUNK`."""
        view = memoryview(data)
        written = 0
        while written < len(view):
            done = self.write(fd, view[written : written + WRITE_CHUNK])
            if done <= 0:
                raise OSError(errno.EIO, "a write made no progress")
            written += done

    def pwrite_all(self, fd: int, data: Data, offset: int) -> None:
        """Write all of `data` at `offset`, continuing after short writes."""
        view = memoryview(data)
        written = 0
        while written < len(view):
            done = self.pwrite(fd, view[written : written + WRITE_CHUNK], offset + written)
            if done <= 0:
                raise OSError(errno.EIO, "a write made no progress")
            written += done

    def temp_name(self, directory: str) -> str:
        return os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")

    def write_temp(self, directory: str, data: Data) -> str:
        """Write `data` to a new temporary file in `directory`, fsync it, return its path."""
        path = self.temp_name(directory)
        fd = self.open_file(path, create=True, exclusive=True)
        try:
            self.write_all(fd, data)
            self.fsync(fd)
        except BaseException:
            self.close_quietly(fd)
            self.discard(path)
            raise
        try:
            self.close(fd)
        except BaseException:
            self.discard(path)
            raise
        return path

    def write_atomic(
        self,
        path: str,
        data: Data,
        *,
        sync_dir: bool = True,
        temp_dir: str | None = None,
    ) -> None:
        """Replace `path` by `data` whole: temp file, fsync, rename, fsync of the directory.

        Why each step: without the file fsync a crash can leave the new name pointing at
        an empty or partial file; without the directory fsync the rename itself can be
        lost, and the old content (or nothing) comes back.

        `temp_dir` (default: `path`'s directory) must be on the same filesystem as `path`.
        A crash may leave the temporary file there, so it is where stray temps are swept.
        """
        directory = os.path.dirname(path) or "."
        temp = self.write_temp(temp_dir or directory, data)
        try:
            self.rename(temp, path)
        except BaseException:
            self.discard(temp)
            raise
        if sync_dir:
            self.fsync_dir(directory)

    def create_exclusive(self, path: str, data: Data, *, temp_dir: str | None = None) -> bool:
        """Write `path` whole only if it does not exist yet; True if this call created it.

        Data is fsynced under a temporary name, then hard-linked to `path`, which fails
        if the name exists: the exclusive create and the content become visible together.
        The caller fsyncs the directory. `temp_dir` is as in `write_atomic`.
        """
        directory = os.path.dirname(path) or "."
        temp = self.write_temp(temp_dir or directory, data)
        try:
            return self.link(temp, path)
        finally:
            self.discard(temp)

    def mkdir(self, path: str, *, sync_parent: bool = True) -> bool:
        """Create a directory (parents must exist); True if this call created it."""
        created = self.create_dir(path)
        if created and sync_parent:
            self.fsync_dir(os.path.dirname(path.rstrip("/")) or ".")
        return created

    def makedirs(self, path: str) -> None:
        """Create a directory and missing parents, each made durable in its parent."""
        parent = os.path.dirname(path.rstrip("/"))
        if parent and not self.is_dir(parent):
            self.makedirs(parent)
        self.mkdir(path)

    def rmtree(self, path: str) -> None:
        """Remove a directory tree bottom-up (no symlinks are followed)."""
        for entry in self.listdir(path):
            child = os.path.join(path, entry)
            if self.syscall(os.path.isdir, child) and not self.syscall(os.path.islink, child):
                self.rmtree(child)
            else:
                self.unlink(child, missing_ok=True)
        self.remove_dir(path)

    # -- locking ------------------------------------------------------------------------
    @contextmanager
    def locked(self, path: str, *, shared: bool = False) -> Iterator[None]:
        """Hold an exclusive (or shared) lock on a separate lock file.

        `flock` locks belong to the open file description, so, unlike POSIX record
        locks, closing another descriptor of the same file in this process does not
        drop them, and the kernel releases them when the holder dies (even by SIGKILL).
        """
        import fcntl  # noqa: PLC0415 - POSIX only; imported where locks are taken

        fd = self.syscall(os.open, path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    self.syscall(fcntl.flock, fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                    break
                except InterruptedError:
                    continue
            yield
        finally:
            self.close_quietly(fd)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:  # pragma: no cover - other errors mean we cannot tell
        return exc.errno != errno.ESRCH
    return True


def temp_owner_pid(name: str) -> int | None:
    """The writer pid encoded in a temporary file's name, or None if not a temp file."""
    if not name.startswith(TEMP_PREFIX):
        return None
    pid_text = name[len(TEMP_PREFIX) :].split("-", 1)[0]
    return int(pid_text) if pid_text.isdigit() else None
