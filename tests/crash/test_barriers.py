"""Database commits in the recorded file model: each durable COMMIT is a barrier.

SQLite writes and flushes its own files, outside `FileIO`; its backend reports each
COMMIT that returned (`FileIO.db_committed`), and the recording logs it as a flush
that makes everything recorded before it durable (`diskmodel.SYNCS`). These tests hold
the backend to that: one barrier per write transaction, after the directory it made
is recorded, and none when commits are not flushed.
"""

from __future__ import annotations

from pathlib import Path

from diskmodel import SYNCS, RecordingFileIO

import statevault


def _barriers(io: RecordingFileIO) -> list[str]:
    return [op.label for op in io.ops if op.kind == "db_commit"]


def test_every_sqlite_commit_is_a_durable_barrier(tmp_path: Path) -> None:
    assert "db_commit" in SYNCS
    root = tmp_path / "root"
    root.mkdir()
    io = RecordingFileIO(str(root))
    path = str(root / "sub" / "v.db")
    with statevault.open(path, fileio=io) as vault:
        made = len(_barriers(io))
        assert made >= 1, "creating the vault commits its tables"
        first = next(i for i, op in enumerate(io.ops) if op.kind == "db_commit")
        # The parent directory the backend made, and its flush, come before the first
        # commit, so no crash state keeps the database without the directory entry.
        assert [op.kind for op in io.ops[:first]].count("fsync_dir") >= 1
        run = vault.run("r")
        run.save({"a": 1})
        assert len(_barriers(io)) == made + 1
        with run.transaction() as state:
            state["a"] = 2
        assert len(_barriers(io)) == made + 2
        assert vault.delete_run("r")
        assert len(_barriers(io)) == made + 3
    assert set(_barriers(io)) == {path}


def test_unflushed_sqlite_commits_are_no_barriers(tmp_path: Path) -> None:
    """With `durability="process"` (synchronous=NORMAL) a commit can be lost to a power
    cut, so it must not count as one."""
    root = tmp_path / "root"
    root.mkdir()
    io = RecordingFileIO(str(root), sync=False)
    with statevault.open(str(root / "v.db"), durability="process", fileio=io) as vault:
        vault.run("r").save({"a": 1})
    assert _barriers(io) == []
