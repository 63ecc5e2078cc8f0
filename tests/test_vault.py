"""The public API over every backend."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import os
import pathlib
import sqlite3
import threading
import uuid
import zlib
from typing import Any

import numpy as np
import pytest

import statevault
from samples import EXAMPLES, SAMPLE_TYPES, assert_same
from statevault.backends.sqlite import SqliteBackend


@pytest.fixture(autouse=True, scope="module")
def _registered() -> None:
    for cls in SAMPLE_TYPES:
        statevault.register(cls)


def test_readme_example(tmp_path: pathlib.Path) -> None:
    vault = statevault.open(str(tmp_path / "state.db"))
    run = vault.run("order-42")
    run.save({"step": 1, "items": ["a"]}, meta={"note": "after fetch"})
    assert run.load() == {"step": 1, "items": ["a"]}
    vault.close()
    with statevault.open(str(tmp_path / "state.db")) as again:
        assert again.run("order-42").load() == {"step": 1, "items": ["a"]}
        assert again.run("order-42").head.meta == {"note": "after fetch"}  # type: ignore[union-attr]


def test_every_type_roundtrips_through_the_vault(vault: statevault.Vault) -> None:
    run = vault.run("types")
    state = {f"v{i}": value for i, value in enumerate(EXAMPLES)}
    run.save(state)
    assert_same(state, vault.run("types").load())


def test_checkpoint_record(vault: statevault.Vault) -> None:
    run = vault.run("r")
    first = run.save({"a": 1}, meta={"note": "n", "when": dt.date(2024, 1, 1)})
    assert first.run_id == "r" and first.seq == 1 and first.parent is None
    assert first.meta == {"note": "n", "when": dt.date(2024, 1, 1)}
    assert first.created_at.tzinfo is dt.UTC
    assert abs((dt.datetime.now(dt.UTC) - first.created_at).total_seconds()) < 60
    assert first.raw_bytes > 0 and first.stored_bytes > 0
    assert len(first.digest) == 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.seq = 5  # type: ignore[misc]
    second = run.save({"a": 1})
    assert second.digest == first.digest, "equal states have equal digests"
    assert second.parent == 1
    assert [c.seq for c in run.checkpoints()] == [2, 1]
    assert [c.seq for c in run.checkpoints(limit=1)] == [2]
    assert run.checkpoint_at(1) == first
    assert run.head == second


def test_large_state_goes_to_objects_and_dedups(vault: statevault.Vault) -> None:
    big = {"blob": os.urandom(200_000), "rows": list(range(10_000))}
    first = vault.run("a").save(big)
    again = vault.run("b").save(big)
    assert first.stored_bytes > 200_000
    assert again.stored_bytes == 0, "identical content is stored once"
    assert vault.run("b").load() == big


def test_load_errors_and_default(vault: statevault.Vault) -> None:
    run = vault.run("missing")
    with pytest.raises(statevault.RunNotFound) as caught:
        run.load()
    assert isinstance(caught.value, KeyError)
    assert "missing" in str(caught.value)
    assert run.load(default={"fresh": True}) == {"fresh": True}
    assert run.load(default=None) is None
    run.save({"x": 1})
    with pytest.raises(statevault.CheckpointNotFound, match=r"checkpoints are 1\.\.1"):
        run.load(at=5)
    for bad in (0, -1, "1", 1.0, True):
        with pytest.raises(ValueError):
            run.load(at=bad)  # type: ignore[arg-type]
    with pytest.raises(statevault.RunNotFound):
        vault.run("missing-too").load(at=1)


def test_get_path(vault: statevault.Vault) -> None:
    run = vault.run("p")
    run.save({"results": {"rows": [{"n": i} for i in range(20)]}, "a.b": {"c": 1}, 7: "int"})
    assert run.get("results.rows.17.n") == 17
    assert run.get('["a.b"].c') == 1
    assert run.get("7") == "int"
    assert run.get("") == run.load()
    with pytest.raises(KeyError, match="20 items"):
        run.get("results.rows.20")
    assert run.get("nope", default=0) == 0


def test_unstorable_state_writes_nothing(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"ok": 1})
    with pytest.raises(statevault.SerializationError) as caught:
        run.save({"jobs": [{"callback": lambda: None}]})
    assert caught.value.path == "state['jobs'][0]['callback']"
    assert [c.seq for c in run.checkpoints()] == [1]
    assert run.load() == {"ok": 1}
    run.save({"ok": 2})  # the handle still works


def test_conflicts(vault: statevault.Vault) -> None:
    a, b = vault.run("r"), vault.run("r")
    a.save({"v": 1})
    with pytest.raises(statevault.ConflictError) as caught:
        b.save({"v": 2})
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert b.load() == {"v": 1}
    b.save({"v": 2})  # after loading, b knows the head
    with pytest.raises(statevault.ConflictError):
        a.save({"v": 3})
    a.save({"v": 3}, force=True)
    assert vault.run("r").load() == {"v": 3}


def test_stale_handle_cannot_append_to_a_recreated_run(vault: statevault.Vault) -> None:
    stale = vault.run("r")
    stale.save({"v": "old"})
    vault.delete_run("r")
    vault.run("r").save({"v": "new"})  # the same seq as the stale handle knows
    with pytest.raises(statevault.ConflictError):
        stale.save({"v": "late"})
    assert vault.run("r").load() == {"v": "new"}
    assert vault.verify().ok


def test_new_handle_sees_existing_head(vault: statevault.Vault) -> None:
    vault.run("r").save({"v": 1})
    late = vault.run("r")
    assert late.known_seq == 1
    assert late.save({"v": 2}).seq == 2


def test_delete_run(vault: statevault.Vault) -> None:
    stale = vault.run("gone")
    stale.save({"v": 1})
    vault.run("kept").save({"v": 1})
    assert vault.delete_run("gone") is True
    assert vault.delete_run("gone") is False
    assert vault.runs() == ["kept"]
    with pytest.raises(statevault.ConflictError):
        stale.save({"v": "late write"})
    assert vault.runs() == ["kept"], "a late writer must not resurrect a deleted run"


def test_runs_prefix_and_odd_ids(vault: statevault.Vault) -> None:
    ids = ["job/1", "job/2", "jobs", "../x", "名前", "x" * 256]
    for run_id in ids:
        vault.run(run_id).save({"id": run_id})
    assert vault.runs() == sorted(ids)
    assert vault.runs("job/") == ["job/1", "job/2"]
    for run_id in ids:
        assert vault.run(run_id).load() == {"id": run_id}
    for bad in ["", "x" * 257, 5]:
        with pytest.raises(statevault.InvalidRunIdError):
            vault.run(bad)  # type: ignore[arg-type]


def test_closed_vault(vault_url: str) -> None:
    vault = statevault.open(vault_url)
    run = vault.run("r")
    vault.close()
    with pytest.raises(statevault.VaultClosedError):
        run.save({"x": 1})
    with pytest.raises(statevault.VaultClosedError):
        vault.runs()


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
@pytest.mark.parametrize("durability", ["fsync", "process"])
def test_options(vault_url: str, compression: Any, durability: Any) -> None:
    state = {"text": "words " * 5000, "n": np.arange(1000)}
    with statevault.open(vault_url, compression=compression, durability=durability) as vault:
        checkpoint = vault.run("r").save(state)
        assert_same(state, vault.run("r").load())
        if compression == "none":
            assert checkpoint.stored_bytes > checkpoint.raw_bytes
        else:
            assert checkpoint.stored_bytes < checkpoint.raw_bytes / 3


def test_zstd_level(tmp_path: pathlib.Path) -> None:
    with statevault.open(str(tmp_path / "v.db"), level=19) as vault:
        vault.run("r").save({"x": "y" * 10_000})
        assert vault.run("r").load() == {"x": "y" * 10_000}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"compression": "gzip"}, "compression must be"),
        ({"compression": "zstd", "level": 99}, "zstd level"),
        ({"compression": "lz4", "level": -1}, "lz4 level"),
        ({"durability": "none"}, "durability must be"),
        ({"unknown_types": "ignore"}, "unknown_types"),
    ],
)
def test_bad_options(tmp_path: pathlib.Path, options: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        statevault.open(str(tmp_path / "v.db"), **options)
    assert not (tmp_path / "v.db").exists()


def test_bad_urls(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="unknown vault URL scheme"):
        statevault.open("s3://bucket/x")
    with pytest.raises(ValueError, match=r"\?pool_size= must be a whole number"):
        statevault.open("postgresql://localhost/test?pool_size=0")


def test_url_forms(tmp_path: pathlib.Path) -> None:
    for url in [str(tmp_path / "a.db"), f"sqlite://{tmp_path}/b.db", tmp_path / "c.db"]:
        with statevault.open(url) as vault:
            vault.run("r").save({"x": 1})
    assert (tmp_path / "b.db").exists()
    with statevault.open(f"files://{tmp_path}/dir") as vault:
        vault.run("r").save({"x": 1})
    # A bare path to a files vault directory opens it as one.
    with statevault.open(str(tmp_path / "dir")) as vault:
        assert vault.run("r").load() == {"x": 1}
    with statevault.open(str(tmp_path / "new" / "nested" / "v.db")) as vault:
        vault.run("r").save({"x": 1})


def test_many_threads_share_one_vault(vault: statevault.Vault) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            run = vault.run(f"t{n}")
            for i in range(20):
                run.save({"n": n, "i": i})
                assert run.load() == {"n": n, "i": i}
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(vault.runs()) == 8


# -- foreign paths and format versions ---------------------------------------------


def _snapshot(path: pathlib.Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(path.rglob("*"))
    }


def test_foreign_text_file_is_refused_untouched(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("my precious notes\n")
    before = _snapshot(tmp_path)
    with pytest.raises(statevault.NotAVaultError, match="not a SQLite database"):
        statevault.open(str(target))
    assert _snapshot(tmp_path) == before


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "app.db"
    conn = sqlite3.connect(target)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    before = _snapshot(tmp_path)
    with pytest.raises(statevault.NotAVaultError, match="other tables"):
        statevault.open(str(target))
    assert _snapshot(tmp_path) == before, "no WAL switch, no tables, no side files"


def test_foreign_directory_is_refused_untouched(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "project"
    target.mkdir()
    (target / "README").write_text("hello")
    before = _snapshot(tmp_path)
    with pytest.raises(statevault.NotAVaultError):
        statevault.open(f"files://{target}")
    with pytest.raises(statevault.NotAVaultError, match="directory"):
        statevault.open(str(target))
    assert _snapshot(tmp_path) == before


def test_empty_file_becomes_a_vault(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "empty.db"
    target.touch()
    with statevault.open(str(target)) as vault:
        vault.run("r").save({"x": 1})


def test_newer_vault_format_is_refused(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "v.db")
    statevault.open(path).close()
    backend = SqliteBackend(path, initial_meta={})
    backend.set_meta("format", b"7")
    backend.close()
    with pytest.raises(statevault.UnsupportedFormatError) as caught:
        statevault.open(path)
    assert (caught.value.found, caught.value.supported) == (7, statevault.FORMAT_VERSION)
    assert "format 7" in str(caught.value)
    assert f"up to {statevault.FORMAT_VERSION}" in str(caught.value)


def test_newer_object_format_is_refused_on_load(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "v.db")
    with statevault.open(path) as vault:
        vault.run("r").save({"blob": os.urandom(50_000)})
    conn = sqlite3.connect(path)
    (data,) = conn.execute("SELECT data FROM statevault_objects").fetchone()
    newer = bytearray(data)
    newer[2] = 9  # format version 9, with a CRC that matches it
    newer[26:30] = zlib.crc32(newer[30:], zlib.crc32(newer[:26])).to_bytes(4, "little")
    conn.execute("UPDATE statevault_objects SET data = ?", (bytes(newer),))
    conn.commit()
    conn.close()
    with statevault.open(path) as vault, pytest.raises(statevault.UnsupportedFormatError):
        vault.run("r").load()


def test_values_module_register_and_vault_register(tmp_path: pathlib.Path) -> None:
    @dataclasses.dataclass
    class Local:
        when: dt.datetime
        amount: decimal.Decimal
        ref: uuid.UUID

    value = Local(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), decimal.Decimal("9.90"), uuid.uuid4())
    with statevault.open(str(tmp_path / "v.db")) as vault:
        with pytest.raises(statevault.SerializationError, match="register"):
            vault.run("r").save({"x": value})
        vault.register(Local, name="tests.Local")
        vault.run("r").save({"x": value})
        assert vault.run("r").load() == {"x": value}
    with (
        statevault.open(str(tmp_path / "v.db")) as vault,
        pytest.raises(statevault.UnknownTypeError, match=r"tests\.Local"),
    ):
        vault.run("r").load()
    with statevault.open(str(tmp_path / "v.db"), unknown_types="keep") as vault:
        loaded = vault.run("r").load()["x"]
        assert isinstance(loaded, statevault.UnknownRecord)
        assert loaded.fields["amount"] == decimal.Decimal("9.90")


@pytest.mark.parametrize("kind", ["sqlite", "files"])
def test_create_false_creates_nothing(tmp_path: pathlib.Path, kind: str) -> None:
    empty_file = tmp_path / "empty.db"
    empty_file.touch()
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    before = _snapshot(tmp_path)
    targets = (
        [str(tmp_path / "missing.db"), str(empty_file)]
        if kind == "sqlite"
        else [f"files://{tmp_path / 'missing'}", f"files://{empty_dir}"]
    )
    for url in targets:
        with pytest.raises(statevault.NotAVaultError):
            statevault.open(url, create=False)
    assert _snapshot(tmp_path) == before
    with pytest.raises(statevault.NotAVaultError):
        statevault.open("memory://", create=False)
