"""The one door through which statevault touches files.

Every file operation of the files backend (and the SQLite backend's look at a
path before it opens it) goes through an `FileIO`, so that crash tests can put
a recording implementation underneath and enumerate what a real disk may keep
after a power loss. Code elsewhere must not call `open`, `os.replace` or
`os.fsync` on vault files.

The durability rules that the rest of the package relies on:
- data reaches the disk only after `fsync` of its file;
- a create, rename or unlink survives only after `fsync_dir` of its directory;
- a failed fsync poisons the `FileIO`: the kernel may have dropped the dirty
  pages and report a retried fsync as a success, so nothing after it is trusted.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress

from statevault.errors import DurabilityError

TEMP_PREFIX = ".tmp-"
"""Temporary files are named `.tmp-<pid>-<random>`; a dead pid marks a stray."""

WRITE_CHUNK = 1 << 20
"""Large writes are issued in 1 MiB calls: on this project's machine, 2 MiB+ write()
calls into a new file ran ~10x slower (see docs/performance.md)."""


class FileIO:
    """File operations with an explicit durability switch.

    Args:
        sync: when False (`durability="process"`), fsyncs are skipped: data then
            survives a crash of the process but not of the machine.
    """

    def __init__(self, *, sync: bool = True) -> None:
        self.sync = sync
        self._poisoned: OSError | None = None

    # -- durability ---------------------------------------------------------------
    def _check_poison(self) -> None:
        if self._poisoned is not None:
            raise DurabilityError(
                "an earlier flush to disk failed, so this vault handle refuses to write: "
                "close it and open the vault again (recovery keeps every acknowledged "
                f"commit). The failure was: {self._poisoned}"
            ) from self._poisoned

    def fsync(self, fd: int) -> None:
        """Flush one open file's data and metadata; a failure poisons this FileIO."""
        if not self.sync:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            self._poisoned = exc
            raise DurabilityError(f"fsync failed: {exc}") from exc

    def fsync_dir(self, path: str) -> None:
        """Make the entries of a directory (creates, renames, unlinks) durable."""
        if not self.sync:
            return
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------
    def read(self, path: str) -> bytes:
        """The whole file. Raises FileNotFoundError if it is absent."""
        with open(path, "rb") as f:
            return f.read()

    def read_prefix(self, path: str, size: int) -> bytes:
        """At most the first `size` bytes of a file."""
        with open(path, "rb") as f:
            return f.read(size)

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
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            chosen = names(os.listdir(dir_fd)) if callable(names) else names
            found: dict[str, bytes] = {}
            for name in chosen:
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue
                with open(fd, "rb") as f:
                    found[name] = f.read()
            try:
                still_there = os.path.samestat(os.fstat(dir_fd), os.stat(directory))
            except FileNotFoundError:
                still_there = False
            return found if still_there else None
        finally:
            os.close(dir_fd)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def size(self, path: str) -> int:
        return os.stat(path).st_size

    def listdir(self, path: str) -> list[str]:
        """Entry names of a directory; empty if it does not exist."""
        try:
            return os.listdir(path)
        except FileNotFoundError:
            return []

    # -- writing ------------------------------------------------------------------
    def temp_name(self, directory: str) -> str:
        return os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")

    def write_temp(self, directory: str, data: bytes | memoryview) -> str:
        """Write `data` to a new temporary file in `directory`, fsync it, return its path."""
        self._check_poison()
        path = self.temp_name(directory)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += os.write(fd, view[written : written + WRITE_CHUNK])
            self.fsync(fd)
        except BaseException:
            os.close(fd)
            self.unlink(path, missing_ok=True)
            raise
        os.close(fd)
        return path

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` by `src` (durable after `fsync_dir` of dst's parent)."""
        self._check_poison()
        os.replace(src, dst)

    def link(self, src: str, dst: str) -> bool:
        """Create `dst` as a new name of `src` unless `dst` exists; True if created."""
        self._check_poison()
        try:
            os.link(src, dst)
        except FileExistsError:
            return False
        return True

    def write_atomic(
        self,
        path: str,
        data: bytes | memoryview,
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
            self.unlink(temp, missing_ok=True)
            raise
        if sync_dir:
            self.fsync_dir(directory)

    def create_exclusive(
        self, path: str, data: bytes | memoryview, *, temp_dir: str | None = None
    ) -> bool:
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
            self.unlink(temp, missing_ok=True)

    def mkdir(self, path: str, *, sync_parent: bool = True) -> bool:
        """Create a directory (parents must exist); True if this call created it."""
        self._check_poison()
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            return False
        if sync_parent:
            self.fsync_dir(os.path.dirname(path.rstrip("/")) or ".")
        return True

    def makedirs(self, path: str) -> None:
        """Create a directory and missing parents, each made durable in its parent."""
        parent = os.path.dirname(path.rstrip("/"))
        if parent and not os.path.isdir(parent):
            self.makedirs(parent)
        self.mkdir(path)

    def unlink(self, path: str, *, missing_ok: bool = False) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self, path: str) -> None:
        """Remove a directory tree bottom-up (no symlinks are followed)."""
        for entry in self.listdir(path):
            child = os.path.join(path, entry)
            if os.path.isdir(child) and not os.path.islink(child):
                self.rmtree(child)
            else:
                self.unlink(child, missing_ok=True)
        with suppress(FileNotFoundError):
            os.rmdir(path)

    # -- locking ------------------------------------------------------------------
    @contextmanager
    def locked(self, path: str, *, shared: bool = False) -> Iterator[None]:
        """Hold an exclusive (or shared) lock on a separate lock file.

        `flock` locks belong to the open file description, so, unlike POSIX record
        locks, closing another descriptor of the same file in this process does not
        drop them, and the kernel releases them when the holder dies (even by SIGKILL).
        """
        import fcntl  # noqa: PLC0415 - POSIX only; imported where locks are taken

        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
                    break
                except InterruptedError:
                    continue
            yield
        finally:
            os.close(fd)


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
