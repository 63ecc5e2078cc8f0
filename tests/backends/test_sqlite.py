"""SQLite-specific behaviour: the settings durability depends on, and lock waits."""

from __future__ import annotations

import pathlib
import sqlite3

import pytest

import statevault
from statevault.backends.base import prefix_upper_bound
from statevault.backends.sqlite import SqliteBackend


@pytest.mark.parametrize(("durability", "expected"), [("fsync", 2), ("process", 1)])
def test_synchronous_and_wal(tmp_path: pathlib.Path, durability: str, expected: int) -> None:
    # A kill -9 test cannot tell FULL from NORMAL (the OS flushes after a process dies),
    # so the setting that power-loss durability rests on is asserted directly.
    backend = SqliteBackend(str(tmp_path / "v.db"), durability=durability, initial_meta={})  # type: ignore[arg-type]
    try:
        conn = backend._conn()
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == expected
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        backend.close()


def test_write_lock_held_elsewhere_times_out_cleanly(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "v.db"
    with statevault.open(str(path)) as vault:
        vault.run("r").save({"v": 1})
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with statevault.open(str(path), timeout=0.2) as vault:
            run = vault.run("r")
            with pytest.raises(statevault.VaultBusyError, match="write lock"):
                run.save({"v": 2})
            assert run.load() == {"v": 1}, "readers are not blocked by the writer"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with statevault.open(str(path)) as vault:
        assert vault.run("r").load() == {"v": 1}


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [
        ("", None),
        ("a", "b"),
        ("ab", "ac"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff", None),
        ("\ud7ff", "\ue000"),
    ],
)
def test_prefix_upper_bound(prefix: str, bound: str | None) -> None:
    assert prefix_upper_bound(prefix) == bound
