"""What a disk may hold after a power loss: a recording FileIO and a crash-state enumerator.

`RecordingFileIO` performs every file operation for real (so the workload runs as it
would in production) and logs it as a logical operation on inodes: creates, writes,
truncates, renames, links, unlinks, directory changes and flushes, following a file
across renames. `crash_states` then replays the log onto the directory as it was when
recording started, the way a disk may have kept it at a crash:

- an operation is *durable* once a later flush covers it: a write or truncate once its
  file is fsynced or fdatasynced, a directory entry (create, mkdir, link, rename,
  unlink, rmdir) once its directory is fsynced. A file fsync does not make the file's
  name durable (ext4 happens to do so; POSIX does not promise it). A rename within a
  directory is atomic; a file's rename across directories is two changes, the new
  name made durable by its directory's fsync and the old name's removal by the
  other's; a directory's rename across directories is atomic and durable once both
  directories are flushed (a directory cannot have two names);
- every other operation issued before the crash is *volatile*: any subset of them may
  have reached the disk, in any order. Enumerated: all of them (a process crash),
  none, each in-order prefix (a crash at each point between two flushes, on a disk
  that keeps order), each one left out, each one alone, and every subset when there
  are few, else seeded random ones;
- a kept volatile write may be torn (only a sector-aligned prefix reached the disk) or
  its range filled with zeros or garbage (the size grew before the data landed).

Crash points are the flushes (a crash just before each one) and the end: any crash
between two flushes leaves a state that a prefix at the next flush also gives, because
nothing becomes durable in between. SQLite commits, which SQLite makes durable by its
own I/O, are logged as barriers (`FileIO.db_committed`) and count as crash points.

The model is deliberately harsher than ext4 (which orders some of these): a protocol
that passes it does not depend on one filesystem's habits.
"""

from __future__ import annotations

import itertools
import os
import random
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from statevault.backends.fsio import TEMP_PREFIX, FileIO

SECTOR = 512
ROOT = 0
"""The inode of the recorded directory itself (it exists before and after every crash)."""

DEAD_PID = 4_194_305
"""Above Linux's largest pid (2**22): temp files named with it belong to a dead writer,
as they do after a real crash, so recovery's sweep of strays runs on them."""

MUTATIONS = frozenset({"creat", "mkdir", "write", "truncate", "rename", "link", "unlink", "rmdir"})
DIRECTORY_OPS = frozenset({"creat", "mkdir", "rename", "link", "unlink", "rmdir"})
SYNCS = frozenset({"fsync", "fsync_dir", "db_commit"})


@dataclass(frozen=True, slots=True)
class Op:
    """One logical file operation.

    `parent`/`name` is the directory entry changed (for a rename, the new one, and
    `src_parent`/`src_name` the old); `inode` the file or directory acted on.
    """

    kind: str
    inode: int = -1
    parent: int = -1
    name: str = ""
    src_parent: int = -1
    src_name: str = ""
    offset: int = 0
    data: bytes = b""
    size: int = 0
    is_dir: bool = False

    label: str = field(default="", compare=False)
    """The path (or paths) it acted on when it was recorded, for failure reports."""

    def __str__(self) -> str:
        if self.kind == "write":
            return f"write {self.label} [{self.offset}, {self.offset + len(self.data)})"
        if self.kind == "truncate":
            return f"truncate {self.label} to {self.size}"
        return f"{self.kind} {self.label}".rstrip()


@dataclass(slots=True)
class Image:
    """A filesystem as inodes: directories map names to inodes, files hold bytes."""

    dirs: dict[int, dict[str, int]] = field(default_factory=lambda: {ROOT: {}})
    files: dict[int, bytes] = field(default_factory=dict)
    """Immutable contents, so a copy shares them and a digest reuses their cached hash."""

    def copy(self) -> Image:
        return Image({k: dict(v) for k, v in self.dirs.items()}, dict(self.files))

    def apply(self, op: Op) -> None:
        kind = op.kind
        if kind == "write":
            data = self.files.get(op.inode, b"")
            gap = bytes(max(0, op.offset - len(data)))
            end = op.offset + len(op.data)
            self.files[op.inode] = data[: op.offset] + gap + op.data + data[end:]
        elif kind == "truncate":
            data = self.files.get(op.inode, b"")
            self.files[op.inode] = data[: op.size] + bytes(max(0, op.size - len(data)))
        elif kind == "creat":
            self.files.setdefault(op.inode, b"")
            self.dirs.setdefault(op.parent, {})[op.name] = op.inode
        elif kind == "mkdir":
            self.dirs.setdefault(op.inode, {})
            self.dirs.setdefault(op.parent, {})[op.name] = op.inode
        elif kind == "link":
            # The inode exists even if the create that named it first was lost.
            self.files.setdefault(op.inode, b"")
            self.dirs.setdefault(op.parent, {})[op.name] = op.inode
        elif kind == "rename":
            if op.is_dir:
                self.dirs.setdefault(op.inode, {})
            else:
                self.files.setdefault(op.inode, b"")
            if op.src_name:  # a rename within one directory; else only its new name
                source = self.dirs.setdefault(op.src_parent, {})
                if source.get(op.src_name) == op.inode:
                    del source[op.src_name]
            self.dirs.setdefault(op.parent, {})[op.name] = op.inode
        elif kind in ("unlink", "rmdir"):
            entries = self.dirs.setdefault(op.parent, {})
            if entries.get(op.name) == op.inode:
                del entries[op.name]

    def walk(self, inode: int = ROOT, prefix: str = "") -> Iterator[tuple[str, int, bool]]:
        """(relative path, inode, is_dir) of everything reachable, parents first."""
        for name in sorted(self.dirs.get(inode, {})):
            child = self.dirs[inode][name]
            path = f"{prefix}{name}"
            is_dir = child in self.dirs
            yield path, child, is_dir
            if is_dir:
                yield from self.walk(child, path + "/")

    def digest(self) -> int:
        """Identifies what a reader of the directory tree can see (hard links included).

        Python's hash of bytes is computed once per object and cached in it, and images
        share their unchanged contents, so this costs little per image. Equal digests
        of different trees would only skip a check, with odds of about 2**-64 each.
        """
        return hash(
            tuple(
                (path, None if is_dir else (inode, len(self.files[inode]), self.files[inode]))
                for path, inode, is_dir in self.walk()
            )
        )

    def materialize(self, target: str) -> None:
        """Write the reachable tree into the empty or absent directory `target`."""
        os.makedirs(target, exist_ok=True)
        written: dict[int, str] = {}
        for path, inode, is_dir in self.walk():
            full = os.path.join(target, path)
            if is_dir:
                os.mkdir(full)
            elif inode in written:
                os.link(written[inode], full)
            else:
                with open(full, "wb") as f:
                    f.write(self.files[inode])
                written[inode] = full

    @classmethod
    def scan(cls, root: str) -> Image:
        """The image of an existing directory."""
        image = cls()
        numbers = itertools.count(ROOT + 1)
        by_ino: dict[int, int] = {}  # st_ino -> inode here, so hard links stay shared
        inodes: dict[str, int] = {root: ROOT}
        for current, dirnames, filenames in os.walk(root):
            parent = inodes[current]
            for name in sorted(dirnames + filenames):
                full = os.path.join(current, name)
                st = os.lstat(full)
                if stat.S_ISDIR(st.st_mode):
                    inode = next(numbers)
                    image.dirs[inode] = {}
                elif st.st_ino in by_ino:
                    inode = by_ino[st.st_ino]
                else:
                    inode = by_ino[st.st_ino] = next(numbers)
                    with open(full, "rb") as f:
                        image.files[inode] = f.read()
                inodes[full] = inode
                image.dirs[parent][name] = inode
        return image


class RecordingFileIO(FileIO):
    """A real FileIO that logs every change below `root` as an `Op`.

    Args:
        root: the directory whose contents are recorded; it must exist. What is in it
            already counts as durable.
        start: the image of `root` when it was just materialized from one (saves a scan).
        sync: as for FileIO (False: flushes are skipped, and so not logged).
    """

    def __init__(self, root: str, *, sync: bool = True, start: Image | None = None) -> None:
        super().__init__(sync=sync)
        self.root = os.path.abspath(root)
        self.start = start if start is not None else Image.scan(self.root)
        self.live = self.start.copy()
        self._next_inode = max([ROOT, *self.start.files, *self.start.dirs]) + 1
        self.ops: list[Op] = []
        self._fds: dict[int, tuple[int, bool, str]] = {}  # fd -> (inode, append, path)

    # -- paths -------------------------------------------------------------------------
    def _relative(self, path: str | bytes | int) -> str:
        assert isinstance(path, str), f"only str paths are recorded, got {path!r}"
        full = os.path.normpath(os.path.abspath(path))
        if full == self.root:
            return "."
        assert full.startswith(self.root + os.sep), f"{full} is outside {self.root}"
        return full[len(self.root) + 1 :]

    def _entry(self, path: str) -> tuple[int, str]:
        """(parent inode, name) of a path below root; KeyError if a parent is missing."""
        *parents, name = self._relative(path).split(os.sep)
        inode = ROOT
        for part in parents:
            inode = self.live.dirs[inode][part]
        return inode, name

    def _inode(self, path: str) -> int | None:
        if self._relative(path) == ".":
            return ROOT
        try:
            parent, name = self._entry(path)
        except KeyError:
            return None
        return self.live.dirs.get(parent, {}).get(name)

    def _log(self, op: Op) -> None:
        self.ops.append(op)
        self.live.apply(op)

    def _new_inode(self) -> int:
        self._next_inode += 1
        return self._next_inode

    # -- the hooks ---------------------------------------------------------------------
    def temp_name(self, directory: str) -> str:
        return os.path.join(directory, f"{TEMP_PREFIX}{DEAD_PID}-{secrets.token_hex(6)}")

    def db_committed(self, location: str) -> None:
        if self.sync:
            self.ops.append(Op("db_commit", label=location))

    def syscall(self, call: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        handler = self._handlers.get(call)
        if handler is None:
            return call(*args, **kwargs)
        return handler(self, call, *args, **kwargs)

    def _on_open(
        self, call: Callable[..., int], path: str, flags: int, *rest: Any, **kw: Any
    ) -> int:
        writable = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        if not writable and not flags & os.O_DIRECTORY:
            return call(path, flags, *rest, **kw)  # a read: nothing to record or flush
        assert kw.get("dir_fd") is None, "a write or flush through dir_fd is not recorded"
        inode = self._inode(path)
        fd = call(path, flags, *rest, **kw)
        label = self._relative(path)
        if inode is None and flags & os.O_CREAT:
            inode = self._new_inode()
            self._log(Op("creat", inode, *self._entry(path), label=label))
        if flags & os.O_TRUNC and inode is not None:
            self._log(Op("truncate", inode, size=0, label=label))
        if inode is not None:
            self._fds[fd] = (inode, bool(flags & os.O_APPEND), label)
        return fd

    def _on_close(self, call: Callable[[int], None], fd: int) -> None:
        self._fds.pop(fd, None)
        call(fd)

    def _on_write(self, call: Callable[..., int], fd: int, data: Any, *offset: int) -> int:
        inode, append, label = self._fds[fd]
        if offset:
            at = offset[0]
        elif append:
            at = os.fstat(fd).st_size
        else:
            at = os.lseek(fd, 0, os.SEEK_CUR)
        data = bytes(data)
        written = call(fd, data, *offset)
        self._log(Op("write", inode, offset=at, data=data[:written], label=label))
        return written

    def _on_truncate(self, call: Callable[[int, int], None], fd: int, size: int) -> None:
        call(fd, size)
        inode, _, label = self._fds[fd]
        self._log(Op("truncate", inode, size=size, label=label))

    def _on_flush(self, call: Callable[[int], None], fd: int) -> None:
        call(fd)
        inode, _, label = self._fds[fd]
        self.ops.append(Op("fsync_dir" if inode in self.live.dirs else "fsync", inode, label=label))

    def _on_rename(self, call: Callable[[str, str], None], src: str, dst: str) -> None:
        inode = self._inode(src)
        source, target = self._entry(src), self._entry(dst)
        call(src, dst)
        assert inode is not None
        is_dir = inode in self.live.dirs
        label = f"{self._relative(src)} -> {self._relative(dst)}"
        if source[0] == target[0] or is_dir:
            # Atomic: within one directory, or of a directory (which cannot have two
            # names); across directories it is durable once both are flushed.
            self._log(Op("rename", inode, *target, *source, is_dir=is_dir, label=label))
            return
        # A file across directories: each directory's change becomes durable with its
        # own fsync, so the new name may survive while the old one is still there too.
        self._log(Op("rename", inode, *target, label=f"{label} (new name)"))
        self._log(Op("unlink", inode, *source, label=f"{label} (old name)"))

    def _on_link(self, call: Callable[[str, str], None], src: str, dst: str) -> None:
        inode = self._inode(src)
        call(src, dst)
        assert inode is not None
        label = f"{self._relative(dst)} (= {self._relative(src)})"
        self._log(Op("link", inode, *self._entry(dst), label=label))

    def _on_remove(self, call: Callable[[str], None], path: str) -> None:
        inode = self._inode(path)
        call(path)
        assert inode is not None
        kind = "unlink" if call is os.unlink else "rmdir"
        self._log(Op(kind, inode, *self._entry(path), label=self._relative(path)))

    def _on_mkdir(self, call: Callable[..., None], path: str, *rest: Any) -> None:
        call(path, *rest)
        op = Op("mkdir", self._new_inode(), *self._entry(path), label=self._relative(path))
        self._log(op)

    _handlers: ClassVar[dict[Callable[..., Any], Callable[..., Any]]] = {
        os.open: _on_open,
        os.close: _on_close,
        os.write: _on_write,
        os.pwrite: _on_write,
        os.ftruncate: _on_truncate,
        os.fsync: _on_flush,
        os.fdatasync: _on_flush,
        os.replace: _on_rename,
        os.rename: _on_rename,
        os.link: _on_link,
        os.unlink: _on_remove,
        os.rmdir: _on_remove,
        os.mkdir: _on_mkdir,
    }
    """The calls that change files (or name the files a flush covers)."""


# -- crash states -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Damage:
    """How one kept volatile write reached the disk: torn at `keep` bytes, or its range
    filled with `fill` ("zeros" or "garbage")."""

    op: int
    keep: int | None = None
    fill: str | None = None

    def apply(self, op: Op, seed: int) -> Op:
        if self.keep is not None:
            return replace(op, data=op.data[: self.keep])
        if self.fill == "zeros":
            return replace(op, data=bytes(len(op.data)))
        return replace(op, data=random.Random(seed).randbytes(len(op.data)))


@dataclass(frozen=True, slots=True)
class CrashState:
    """The disk after a crash just before op `point`: durable ops plus `kept` volatile ones."""

    point: int
    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    damage: Damage | None
    how: str


@dataclass(frozen=True, slots=True)
class Policy:
    """How many states to build at each crash point."""

    exhaustive_up_to: int = 6
    """Every subset of the volatile ops when there are at most this many."""
    random_subsets: int = 8
    """Seeded random subsets when there are more."""
    singles: bool = True
    """Each volatile op left out, and each alone."""
    damage: bool = True
    """Torn, zeroed and garbage variants of each volatile write."""
    seed: int = 0


def _cuts(op: Op) -> list[int]:
    """Bytes of a write that a tear at a sector boundary inside it keeps: none, the first
    sector's worth, about half, all but the last sector's worth."""
    start, end = op.offset, op.offset + len(op.data)
    bounds = list(range((start // SECTOR + 1) * SECTOR, end, SECTOR))
    picks = {0}
    if bounds:
        picks |= {bounds[0] - start, bounds[len(bounds) // 2] - start, bounds[-1] - start}
    return sorted(picks)


class Recording:
    """A finished recording: its start image and op log, and the crash states it allows."""

    def __init__(self, io: RecordingFileIO) -> None:
        self.start = io.start
        self.ops = list(io.ops)
        self._next_sync = self._covering_syncs()

    def _covering_syncs(self) -> list[int]:
        """For each op, the index of the first later flush that makes it durable."""
        never = len(self.ops) + 1
        covering = [never] * len(self.ops)
        pending_data: dict[int, list[int]] = {}
        pending_entries: dict[int, list[int]] = {}
        # A directory renamed across directories needs both flushed: how many to go.
        waiting: dict[int, int] = {}
        for i, op in enumerate(self.ops):
            if op.kind in ("write", "truncate"):
                pending_data.setdefault(op.inode, []).append(i)
            elif op.kind in DIRECTORY_OPS:
                pending_entries.setdefault(op.parent, []).append(i)
                if op.kind == "rename" and op.src_name and op.src_parent != op.parent:
                    pending_entries.setdefault(op.src_parent, []).append(i)
                    waiting[i] = 2
            elif op.kind == "fsync":
                for j in pending_data.pop(op.inode, []):
                    covering[j] = i
            elif op.kind == "fsync_dir":
                for j in pending_entries.pop(op.inode, []):
                    waiting[j] = waiting.get(j, 1) - 1
                    if waiting[j] == 0:
                        covering[j] = i
        return covering

    def crash_points(self) -> list[int]:
        """Just before each flush, and after the last op."""
        return [i for i, op in enumerate(self.ops) if op.kind in SYNCS] + [len(self.ops)]

    def volatile(self, point: int) -> list[int]:
        return [
            i for i in range(point) if self.ops[i].kind in MUTATIONS and self._next_sync[i] >= point
        ]

    def states(self, point: int, policy: Policy) -> Iterator[CrashState]:
        volatile = self.volatile(point)
        n = len(volatile)
        seen: set[tuple[int, ...]] = set()

        def subset(kept: tuple[int, ...], how: str) -> Iterator[CrashState]:
            if kept not in seen:
                seen.add(kept)
                dropped = tuple(i for i in volatile if i not in kept)
                yield CrashState(point, kept, dropped, None, how)

        yield from subset(tuple(volatile), "all volatile ops kept (process crash)")
        yield from subset((), "every volatile op lost")
        for j in range(1, n):
            yield from subset(tuple(volatile[:j]), f"first {j} volatile ops kept")
        if n <= policy.exhaustive_up_to:
            for size in range(1, n):
                for combo in itertools.combinations(volatile, size):
                    yield from subset(combo, "a subset of the volatile ops kept")
        else:
            if policy.singles:
                for i in volatile:
                    rest = tuple(v for v in volatile if v != i)
                    yield from subset(rest, f"op {i} alone lost")
                    yield from subset((i,), f"op {i} alone kept")
            rng = random.Random(policy.seed * 1_000_003 + point)
            for _ in range(policy.random_subsets):
                combo = tuple(v for v in volatile if rng.random() < 0.5)
                yield from subset(combo, "a random subset of the volatile ops kept")
        if policy.damage:
            for position, i in enumerate(volatile):
                op = self.ops[i]
                if op.kind != "write" or not op.data:
                    continue
                variants = [Damage(i, keep=k) for k in _cuts(op)]
                variants += [Damage(i, fill="zeros"), Damage(i, fill="garbage")]
                for damage in variants:
                    what = (
                        f"op {i} torn after {damage.keep} bytes"
                        if damage.keep is not None
                        else f"op {i} filled with {damage.fill}"
                    )
                    before = tuple(volatile[: position + 1])
                    yield CrashState(
                        point,
                        before,
                        tuple(volatile[position + 1 :]),
                        damage,
                        what + ", later lost",
                    )
                    yield CrashState(point, tuple(volatile), (), damage, what + ", others kept")

    def image(self, state: CrashState) -> Image:
        image = self.start.copy()
        kept = set(state.kept)
        for i in range(state.point):
            op = self.ops[i]
            if op.kind not in MUTATIONS:
                continue
            if self._next_sync[i] >= state.point and i not in kept:
                continue
            if state.damage is not None and state.damage.op == i:
                op = state.damage.apply(op, seed=i)
            image.apply(op)
        return image

    def explain(self, state: CrashState) -> str:
        lines = [f"crash just before op {state.point} of {len(self.ops)}: {state.how}"]
        for i in range(state.point):
            op = self.ops[i]
            if op.kind not in MUTATIONS and op.kind not in SYNCS:
                continue
            mark = "  "
            if i in state.dropped:
                mark = "- "
            elif state.damage is not None and state.damage.op == i:
                mark = "~ "
            elif i in state.kept:
                mark = "+ "
            lines.append(f"  {mark}{i:4d} {op}")
        lines.append("  (+ volatile kept, - volatile lost, ~ damaged, blank durable or flush)")
        return "\n".join(lines)
