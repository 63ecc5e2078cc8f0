"""SQLite's catalog of heads: index damage that SQLite cannot see is a CorruptionError.

The damage here is done the way a flipped bit does it: bytes of the file changed in
place, then the vault opened afresh.
"""

from __future__ import annotations

import pathlib
import sqlite3

import pytest

import statevault

PAGE = 4096


def _build(path: pathlib.Path, runs: dict[str, int]) -> None:
    with statevault.open(str(path)) as vault:
        for run_id, count in runs.items():
            run = vault.run(run_id)
            for i in range(count):
                run.save({"run": run_id, "i": i})
    for suffix in ("-wal", "-shm"):
        assert not pathlib.Path(f"{path}{suffix}").exists()


def _index_page(path: pathlib.Path) -> int:
    """File offset of the checkpoint index's root page (a leaf, in a small vault)."""
    conn = sqlite3.connect(path)
    try:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master "
            "WHERE name = 'sqlite_autoindex_statevault_checkpoints_1'"
        ).fetchone()
    finally:
        conn.close()
    return (int(root) - 1) * PAGE


def _set_cells(path: pathlib.Path, page: int, change: int) -> None:
    """Change the cell count in a b-tree page header (bytes 3-4), as a flip would."""
    data = bytearray(path.read_bytes())
    assert data[page] == 10, "the index root is a leaf page in a vault this small"
    cells = int.from_bytes(data[page + 3 : page + 5], "big")
    data[page + 3 : page + 5] = (cells + change).to_bytes(2, "big")
    path.write_bytes(bytes(data))


def test_hidden_runs_are_corruption_not_an_empty_vault(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "v.db"
    _build(path, {"a": 2, "b": 2, "c": 2})
    # Six index cells; hide the last two: run "c" is gone from the index.
    _set_cells(path, _index_page(path), -2)
    with statevault.open(str(path), create=False) as vault:
        with pytest.raises(statevault.CorruptionError, match=r"runs \['c'\] cannot be found"):
            vault.runs()
        with pytest.raises(statevault.CorruptionError) as caught:
            vault.run("c").load()
        assert caught.value.run_id == "c"
        assert vault.run("a").load() == {"run": "a", "i": 1}
        assert not vault.verify().ok


def test_hidden_newest_checkpoint_is_not_read_as_the_head(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "v.db"
    _build(path, {"a": 5})
    # The last cell is checkpoint 5: the index alone would make 4 the head.
    _set_cells(path, _index_page(path), -1)
    with statevault.open(str(path), create=False) as vault:
        with pytest.raises(statevault.CorruptionError, match="newest is 5") as caught:
            vault.run("a").load()
        assert caught.value.run_id == "a"
        assert not vault.verify().ok


def test_cells_beyond_the_page_are_corruption(tmp_path: pathlib.Path) -> None:
    """The every-byte suite's finding: a raised cell count made the vault read as empty."""
    path = tmp_path / "v.db"
    _build(path, {"a": 2, "b": 2, "c": 2})
    _set_cells(path, _index_page(path), 16)
    with (
        statevault.open(str(path), create=False) as vault,
        pytest.raises(statevault.CorruptionError, match="damaged"),
    ):
        vault.runs()


def test_hidden_schema_is_a_damaged_vault_not_a_new_one(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "v.db"
    _build(path, {"a": 1})
    data = bytearray(path.read_bytes())
    data[100 + 3 : 100 + 5] = bytes(2)  # page 1's b-tree header: no tables at all
    path.write_bytes(bytes(data))
    for create in (False, True):
        with pytest.raises(statevault.CorruptionError, match="damaged"):
            statevault.open(str(path), create=create)
    assert path.read_bytes() == bytes(data), "nothing was written over the damaged file"


def test_writers_that_predate_the_catalog_keep_it_right(tmp_path: pathlib.Path) -> None:
    """The catalog is kept by triggers, so plain SQL writes of an older release (or
    any tool) keep it in step: inserts, a rewrite below the head, a roll-back, a
    deleted run."""
    path = tmp_path / "v.db"
    _build(path, {"a": 3, "b": 2})
    with statevault.open(str(path)) as vault:
        record = vault._backend.read_checkpoint("a", 3)
        assert record is not None
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("INSERT INTO statevault_checkpoints VALUES ('z', 1, x'00')")
        conn.execute("INSERT INTO statevault_checkpoints VALUES ('z', 2, x'01')")
        conn.execute("DELETE FROM statevault_checkpoints WHERE run_id = 'a' AND seq = 2")
        conn.execute("INSERT INTO statevault_checkpoints VALUES ('a', 2, x'02')")
        conn.execute("DELETE FROM statevault_checkpoints WHERE run_id = 'b' AND seq > 1")
        conn.execute("DELETE FROM statevault_checkpoints WHERE run_id = 'z'")
        heads = dict(conn.execute("SELECT run_id, head FROM statevault_heads").fetchall())
    finally:
        conn.close()
    assert heads == {"a": 3, "b": 1}
    with statevault.open(str(path)) as vault:
        assert vault.runs() == ["a", "b"]
        assert vault.run("b").load() == {"run": "b", "i": 0}


def test_a_vault_without_the_catalog_reads_as_before_until_upgraded(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "v.db"
    _build(path, {"a": 2, "b": 1})
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for name in ("statevault_heads_insert", "statevault_heads_delete"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE statevault_heads")
    finally:
        conn.close()
    with statevault.open(str(path)) as vault:  # layout 1: read and written as it is
        vault.run("a").save({"run": "a", "i": 2})
        assert vault.runs() == ["a", "b"]
        dry = vault.upgrade(dry_run=True)
        assert [s.name for s in dry.steps] == ["SQLite layout 1 -> 2"]
        assert dry.steps[0].runs == 2
        vault.upgrade()
        assert vault.upgrade().current
    conn = sqlite3.connect(path)
    try:
        heads = dict(conn.execute("SELECT run_id, head FROM statevault_heads").fetchall())
    finally:
        conn.close()
    assert heads == {"a": 3, "b": 1}
    _set_cells(path, _index_page(path), -1)  # checked now: checkpoint 1 of "b" hidden
    with (
        statevault.open(str(path), create=False) as vault,
        pytest.raises(statevault.CorruptionError),
    ):
        vault.runs()
