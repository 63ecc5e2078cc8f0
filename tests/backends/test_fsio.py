"""FileIO is the only door to files: a scan of the package, and the door's own rules.

The crash-state enumeration (tests/crash) sees only what passes through `FileIO.syscall`;
a file operation that goes around it would escape every crash test. So the package is
scanned for calls that touch files, and fsio.py for OS calls that skip `syscall`.
"""

from __future__ import annotations

import ast
import errno
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import statevault
from statevault.backends.fsio import FileIO

PACKAGE = pathlib.Path(statevault.__file__).parent
FSIO = PACKAGE / "backends" / "fsio.py"

OS_FILE_CALLS = frozenset(
    [
        "open",
        "fdopen",
        "replace",
        "rename",
        "renames",
        "fsync",
        "fdatasync",
        "sync",
        "write",
        "pwrite",
        "writev",
        "pwritev",
        "read",
        "pread",
        "readv",
        "preadv",
        "truncate",
        "ftruncate",
        "unlink",
        "remove",
        "rmdir",
        "removedirs",
        "mkdir",
        "makedirs",
        "link",
        "symlink",
        "listdir",
        "scandir",
        "walk",
        "fwalk",
        "posix_fallocate",
        "copy_file_range",
        "sendfile",
    ]
)
"""Calls of `os` that read, change or list files."""

MODULES_OF_FILES = frozenset({"shutil", "tempfile", "mmap", "fcntl", "io"})
"""Modules whose every call touches files."""

PATH_METHODS = frozenset(
    [
        "write_bytes",
        "write_text",
        "read_bytes",
        "read_text",
        "touch",
        "hardlink_to",
        "symlink_to",
        "iterdir",
        "glob",
        "rglob",
    ]
)
"""`pathlib.Path` methods that touch files (named so that no FileIO method matches)."""

ALLOWED = {
    ("cli/demo.py", "tempfile.mkdtemp"): "makes the demo's own empty directory, before "
    "any vault exists in it",
    ("cli/demo.py", "tempfile.TemporaryFile"): "holds a demo worker's stderr, not vault data",
    ("cli/common.py", "os.listdir"): "looks whether a path a person typed is an empty "
    "directory, to explain why it is not a vault; it reads no vault file",
    ("cli/schema.py", "<path>.write_text"): "writes the migration module `schema diff "
    "--output` proposes, a source file for a person, not vault data",
}
"""(file, call) pairs outside fsio.py that may touch files, and why."""


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _file_calls(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, call) of every call in `tree` that touches files."""
    # Names bound to modules or their functions by imports, by what they stand for:
    # `io = self._io` must not count as the io module.
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr in PATH_METHODS:
            yield node.lineno, f"<path>.{node.func.attr}"
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        if head not in imported:
            if name == "open":
                yield node.lineno, name
            continue
        name = f"{imported[head]}.{rest}" if rest else imported[head]
        module, _, attr = name.rpartition(".")
        if (module == "os" and attr in OS_FILE_CALLS) or module in MODULES_OF_FILES:
            yield node.lineno, name


def _sources() -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == FSIO:
            continue
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path))


def test_only_fsio_touches_files() -> None:
    found = [
        f"{where}:{line}: {call}"
        for where, tree in _sources()
        for line, call in _file_calls(tree)
        if (where, call) not in ALLOWED
    ]
    assert not found, "file operations outside FileIO (route them through it):\n" + "\n".join(found)


def test_allowlist_has_no_stale_entries() -> None:
    present = {(where, call) for where, tree in _sources() for _, call in _file_calls(tree)}
    assert set(ALLOWED) <= present


def test_scan_catches_each_kind_of_call() -> None:
    source = (
        "import os, shutil\nimport tempfile as t\nfrom os import replace as r\n"
        "open('x')\nos.fsync(1)\nr('a', 'b')\nshutil.copy('a', 'b')\np.write_bytes(b'')\n"
        "t.mkdtemp()\nio = object()\nio.open()\nos.path.join('a')\n"
    )
    calls = sorted(call for _, call in _file_calls(ast.parse(source)))
    assert calls == sorted(
        ["open", "os.fsync", "os.replace", "shutil.copy", "<path>.write_bytes", "tempfile.mkdtemp"]
    )


def test_fsio_makes_every_os_call_through_syscall() -> None:
    tree = ast.parse(FSIO.read_text())
    direct = [
        f"fsio.py:{line}: {call}"
        for line, call in _file_calls(tree)
        if not call.startswith("<path>")
    ]
    # `os.path` queries and `os.kill` are not file operations; every other OS call in
    # fsio.py must be passed to `self.syscall` (as a reference), never called directly.
    assert not direct, "\n".join(direct)


# -- the door's rules ---------------------------------------------------------------------
class _FailingFlush(FileIO):
    """Real file operations, except that flushes fail with EIO."""

    def syscall(self, call: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if call in (os.fsync, os.fdatasync):
            raise OSError(errno.EIO, "injected flush failure")
        return call(*args, **kwargs)


@pytest.mark.parametrize("flush", ["fsync", "fdatasync"])
def test_failed_flush_poisons_every_later_write_and_flush(
    tmp_path: pathlib.Path, flush: str
) -> None:
    io = _FailingFlush()
    fd = io.open_file(str(tmp_path / "f"), create=True)
    io.write_all(fd, b"data")
    with pytest.raises(statevault.DurabilityError, match="injected"):
        getattr(io, flush)(fd)
    assert io.poisoned
    # A retried flush must not report success, and nothing new may be written.
    for attempt in (
        lambda: io.fsync(fd),
        lambda: io.fdatasync(fd),
        lambda: io.fsync_dir(str(tmp_path)),
        lambda: io.write(fd, b"more"),
        lambda: io.pwrite(fd, b"more", 0),
        lambda: io.truncate(fd, 0),
        lambda: io.open_file(str(tmp_path / "g"), create=True),
        lambda: io.write_temp(str(tmp_path), b"x"),
        lambda: io.rename(str(tmp_path / "f"), str(tmp_path / "h")),
        lambda: io.link(str(tmp_path / "f"), str(tmp_path / "h")),
        lambda: io.mkdir(str(tmp_path / "d")),
    ):
        with pytest.raises(statevault.DurabilityError, match="refuses to write"):
            attempt()
    io.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_unsynced_fileio_never_flushes(tmp_path: pathlib.Path) -> None:
    io = _FailingFlush(sync=False)
    io.write_atomic(str(tmp_path / "f"), b"data")
    assert io.read(str(tmp_path / "f")) == b"data"
    assert not io.poisoned


class _ShortWrites(FileIO):
    """Every write stores at most 3 bytes, as a signal-interrupted write may."""

    def syscall(self, call: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if call is os.write:
            fd, data = args
            return call(fd, bytes(data[:3]))
        if call is os.pwrite:
            fd, data, offset = args
            return call(fd, bytes(data[:3]), offset)
        return call(*args, **kwargs)


def test_short_writes_are_continued(tmp_path: pathlib.Path) -> None:
    io = _ShortWrites()
    io.write_atomic(str(tmp_path / "f"), b"0123456789")
    assert io.read(str(tmp_path / "f")) == b"0123456789"
    fd = io.open_file(str(tmp_path / "f"))
    io.pwrite_all(fd, b"abcdefg", 2)
    io.close(fd)
    assert io.read(str(tmp_path / "f")) == b"01abcdefg9"
    assert io.read_prefix(str(tmp_path / "f"), 4) == b"01ab"


def test_reads_of_large_and_empty_files(tmp_path: pathlib.Path) -> None:
    io = FileIO()
    big = os.urandom((3 << 20) + 5)
    io.write_atomic(str(tmp_path / "big"), big)
    io.write_atomic(str(tmp_path / "empty"), b"")
    assert io.read(str(tmp_path / "big")) == big
    assert io.read(str(tmp_path / "empty")) == b""
    assert io.read_prefix(str(tmp_path / "big"), 10) == big[:10]
    fd = io.open_file(str(tmp_path / "big"))
    assert io.pread(fd, 2 << 20, 1 << 20) == big[1 << 20 : 3 << 20]
    io.close(fd)


class _FailingCalls(FileIO):
    """Real file operations, except that the named calls fail with EIO."""

    def __init__(self, *failing: Callable[..., Any]) -> None:
        super().__init__()
        self.failing = set(failing)

    def syscall(self, call: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if call in self.failing:
            if call is os.close:
                call(*args)  # Linux frees the descriptor even when close fails
            raise OSError(errno.EIO, f"injected {call.__name__} failure")
        return call(*args, **kwargs)


def test_a_directory_that_cannot_be_opened_for_its_flush_poisons(tmp_path: pathlib.Path) -> None:
    io = _FailingCalls()
    io.write_atomic(str(tmp_path / "f"), b"data", sync_dir=False)
    io.failing.add(os.open)
    # The rename is visible and may yet reach the disk: the caller must hear that its
    # durability is unknown, not that the call failed cleanly.
    with pytest.raises(statevault.DurabilityError, match="to flush it"):
        io.fsync_dir(str(tmp_path))
    assert io.poisoned


def test_clean_up_failures_neither_fail_a_done_call_nor_hide_an_error(
    tmp_path: pathlib.Path,
) -> None:
    io = _FailingCalls(os.unlink)
    # The link is made; the temporary file cannot be removed: the call still succeeds,
    # and the temporary file is left for the sweep at the next open.
    assert io.create_exclusive(str(tmp_path / "f"), b"data")
    assert io.read(str(tmp_path / "f")) == b"data"
    # A failed flush, then a failing close and unlink while cleaning up: the flush's
    # error is the one raised.
    io.failing |= {os.fsync, os.close}
    with pytest.raises(statevault.DurabilityError, match="injected fsync"):
        io.write_temp(str(tmp_path), b"more")
