"""Damaged bytes are detected, named and never returned as data; verify reports them all.

Real bytes are flipped and cut in the stored files and rows, through raw access that
bypasses statevault (the ground truth, as the conformance suite's helpers are).
"""

from __future__ import annotations

import os
import pathlib
import random
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

import statevault
from statevault.backends.base import initial_meta
from statevault.backends.files import FilesBackend
from statevault.vault import FORMAT_VERSION


class Raw(Protocol):
    """Direct access to a vault's stored bytes, bypassing statevault."""

    url: str

    def objects(self) -> dict[str, bytes]: ...
    def write_object(self, key: str, data: bytes) -> None: ...
    def delete_object(self, key: str) -> None: ...
    def record(self, run_id: str, seq: int) -> bytes: ...
    def write_record(self, run_id: str, seq: int, data: bytes) -> None: ...
    def delete_record(self, run_id: str, seq: int) -> None: ...


class RawSqlite:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.url = str(path)

    def _conn(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None)

    def objects(self) -> dict[str, bytes]:
        with self._conn() as conn:
            rows = conn.execute("SELECT digest, data FROM statevault_objects").fetchall()
        return {bytes(d).hex(): bytes(v) for d, v in rows}

    def write_object(self, key: str, data: bytes) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE statevault_objects SET data = ? WHERE digest = ?",
                (data, bytes.fromhex(key)),
            )

    def delete_object(self, key: str) -> None:
        with self._conn() as conn:
            conn.execute("DELETE FROM statevault_objects WHERE digest = ?", (bytes.fromhex(key),))

    def record(self, run_id: str, seq: int) -> bytes:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT record FROM statevault_checkpoints WHERE run_id = ? AND seq = ?",
                (run_id, seq),
            ).fetchone()
        return bytes(row[0])

    def write_record(self, run_id: str, seq: int, data: bytes) -> None:
        with self._conn() as conn:
            conn.execute(
                "UPDATE statevault_checkpoints SET record = ? WHERE run_id = ? AND seq = ?",
                (data, run_id, seq),
            )

    def delete_record(self, run_id: str, seq: int) -> None:
        with self._conn() as conn:
            conn.execute(
                "DELETE FROM statevault_checkpoints WHERE run_id = ? AND seq = ?", (run_id, seq)
            )


class RawFiles:
    """The files backend's layout 1: objects/ab/<digest>, runs/<dir>/ckpt/<seq:020d>.

    Layout 1 keeps each record in a file of its own, so the engine's own checks of a
    record's bytes are reached directly; layout 2 checks every frame itself first
    (tests/backends/test_seglog.py, tests/crash/test_corruption_artifacts.py).
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.url = f"files://{path}"
        meta = initial_meta(FORMAT_VERSION, {"vault_id": uuid.uuid4().hex.encode()})
        FilesBackend(str(path), initial_meta=meta, layout=1).close()

    def _object_path(self, key: str) -> pathlib.Path:
        return self.path / "objects" / key[:2] / key

    def objects(self) -> dict[str, bytes]:
        found = {}
        for fan in (self.path / "objects").iterdir():
            for item in fan.iterdir():
                if not item.name.startswith("."):
                    found[item.name] = item.read_bytes()
        return found

    def write_object(self, key: str, data: bytes) -> None:
        path = self._object_path(key)
        os.chmod(path, 0o644)
        path.write_bytes(data)

    def delete_object(self, key: str) -> None:
        self._object_path(key).unlink()

    def _record_path(self, run_id: str, seq: int) -> pathlib.Path:
        for run_dir in (self.path / "runs").iterdir():
            if (run_dir / "id").read_text("utf-8") == run_id:
                return run_dir / "ckpt" / f"{seq:020d}"
        raise KeyError(run_id)

    def record(self, run_id: str, seq: int) -> bytes:
        return self._record_path(run_id, seq).read_bytes()

    def write_record(self, run_id: str, seq: int, data: bytes) -> None:
        path = self._record_path(run_id, seq)
        os.chmod(path, 0o644)
        path.write_bytes(data)

    def delete_record(self, run_id: str, seq: int) -> None:
        self._record_path(run_id, seq).unlink()


@pytest.fixture(params=["sqlite", "files"])
def raw(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Raw:
    if request.param == "sqlite":
        return RawSqlite(tmp_path / "v.db")
    return RawFiles(tmp_path / "v")


def big_state(seed: int) -> dict[str, object]:
    rnd = random.Random(seed)
    words = ["order", "ship", "paid", "alpha", "beta", "queue", "retry", "done"]
    return {
        "messages": [" ".join(rnd.choice(words) for _ in range(40)) for _ in range(300)],
        "seed": seed,
    }


@pytest.fixture
def damaged_setup(raw: Raw) -> Iterator[tuple[Raw, str]]:
    """A run with three checkpoints of big states; yields an object only the third uses."""
    with statevault.open(raw.url) as vault:
        run = vault.run("order-42")
        run.save(big_state(0))
        run.save(big_state(1))
        before = set(raw.objects())
        run.save(big_state(2))
    new = sorted(set(raw.objects()) - before)
    assert new, "the third state adds objects of its own"
    return raw, new[0]


def assert_named(exc: statevault.CorruptionError, *, seq: int, digest: str | None) -> None:
    assert exc.run_id == "order-42"
    assert exc.seq == seq
    text = str(exc)
    assert "run 'order-42'" in text
    assert f"checkpoint {seq}" in text
    if digest is not None:
        assert exc.digest == digest
        assert digest[:8] in text


def test_every_flipped_byte_of_an_object_is_caught(damaged_setup: tuple[Raw, str]) -> None:
    raw, key = damaged_setup
    original = raw.objects()[key]
    positions = (
        range(len(original))
        if len(original) <= 4096
        else random.Random(1).sample(range(len(original)), 600)
    )
    with statevault.open(raw.url) as vault:
        run = vault.run("order-42")
        for pos in positions:
            damaged = bytearray(original)
            damaged[pos] ^= 1 << (pos % 8)
            raw.write_object(key, bytes(damaged))
            with pytest.raises(
                (statevault.CorruptionError, statevault.UnsupportedFormatError)
            ) as caught:
                run.load()
            if isinstance(caught.value, statevault.CorruptionError):
                assert_named(caught.value, seq=3, digest=key)
        raw.write_object(key, original)
        assert run.load() == big_state(2)


def test_truncated_or_extended_object_is_caught(damaged_setup: tuple[Raw, str]) -> None:
    raw, key = damaged_setup
    original = raw.objects()[key]
    cuts = [0, 1, 29, 30, 31, len(original) // 2, len(original) - 1]
    variants = [original[:cut] for cut in cuts] + [
        original + b"garbage",
        original[:30] + bytes(len(original) - 30),
        original[:4096] + bytes(4096) + original[8192:],
    ]
    with statevault.open(raw.url) as vault:
        for variant in variants:
            raw.write_object(key, variant)
            with pytest.raises(statevault.CorruptionError) as caught:
                vault.run("order-42").load()
            assert_named(caught.value, seq=3, digest=key)
            report = vault.verify()
            assert not report.ok
            assert any(p.seq == 3 and p.digest == key for p in report.problems)


def test_missing_object(damaged_setup: tuple[Raw, str]) -> None:
    raw, key = damaged_setup
    raw.delete_object(key)
    with statevault.open(raw.url) as vault:
        with pytest.raises(statevault.CorruptionError, match="missing") as caught:
            vault.run("order-42").load()
        assert_named(caught.value, seq=3, digest=key)
        assert vault.run("order-42").load(at=2) == big_state(1), "older checkpoints still load"
        report = vault.verify()
        assert [(p.kind, p.seq, p.digest) for p in report.problems] == [("missing-object", 3, key)]


def test_every_flipped_byte_of_a_record_is_caught(raw: Raw) -> None:
    with statevault.open(raw.url) as vault:
        vault.run("order-42").save({"small": "state", "n": [1, 2, 3]})
    original = raw.record("order-42", 1)
    with statevault.open(raw.url) as vault:
        for pos in range(len(original)):
            damaged = bytearray(original)
            damaged[pos] ^= 0x10
            raw.write_record("order-42", 1, bytes(damaged))
            with pytest.raises(statevault.CorruptionError) as caught:
                vault.run("order-42").load()
            assert_named(caught.value, seq=1, digest=None)
            report = vault.verify()
            assert [(p.kind, p.seq) for p in report.problems] == [("record", 1)]


def test_truncated_record_is_caught(raw: Raw) -> None:
    with statevault.open(raw.url) as vault:
        vault.run("order-42").save({"small": "state"})
    original = raw.record("order-42", 1)
    with statevault.open(raw.url) as vault:
        for cut in range(len(original)):
            raw.write_record("order-42", 1, original[:cut])
            with pytest.raises(statevault.CorruptionError):
                vault.run("order-42").load()


def test_replaced_and_reordered_history_is_caught(raw: Raw, tmp_path: pathlib.Path) -> None:
    other = RawSqlite(tmp_path / "other.db")
    for target in (raw, other):
        with statevault.open(target.url) as vault:
            run = vault.run("order-42")
            for seed in range(4):
                run.save({"seed": seed, "target": target.url})
    # A record copied from another history: valid on its own, but it breaks the chain.
    raw.write_record("order-42", 2, other.record("order-42", 2))
    with statevault.open(raw.url) as vault:
        report = vault.verify()
        kinds = sorted((p.kind, p.seq) for p in report.problems)
        assert kinds == [("chain", 2), ("chain", 3)]
    # A record moved to another position names the wrong seq.
    raw.write_record("order-42", 4, raw.record("order-42", 1))
    with statevault.open(raw.url) as vault:
        with pytest.raises(
            statevault.CorruptionError, match="belongs to run 'order-42' checkpoint 1"
        ):
            vault.run("order-42").load()
        assert ("record", 4) in {(p.kind, p.seq) for p in vault.verify().problems}


def test_missing_middle_checkpoint(raw: Raw) -> None:
    with statevault.open(raw.url) as vault:
        run = vault.run("order-42")
        for i in range(4):
            run.save({"i": i})
    raw.delete_record("order-42", 2)
    with statevault.open(raw.url) as vault:
        problems = {(p.kind, p.seq) for p in vault.verify().problems}
        assert ("missing-checkpoint", 2) in problems
        assert vault.run("order-42").load() == {"i": 3}


def test_verify_counts_and_never_raises(damaged_setup: tuple[Raw, str]) -> None:
    raw, _ = damaged_setup
    with statevault.open(raw.url) as vault:
        clean = vault.verify()
        assert clean.ok
        assert (clean.runs, clean.checkpoints) == (1, 3)
        assert clean.objects == len(raw.objects())
        assert clean.bytes_read > 0
    for other_key, data in raw.objects().items():
        raw.write_object(other_key, data[:10])
    raw.write_record("order-42", 1, b"junk")
    with statevault.open(raw.url) as vault:
        report = vault.verify()
    assert not report.ok
    kinds = {(p.kind, p.seq) for p in report.problems}
    assert ("record", 1) in kinds
    assert ("object", 2) in kinds
    assert ("object", 3) in kinds
    assert all(str(p) for p in report.problems)


def relocated_journal(raw: Raw) -> tuple[list[dict[str, Any]], list[int], str]:
    """A run whose first deltas were re-encoded against the fold after them.

    Returns the state after each seq (index = seq), the relocated seqs, and the hex
    digest of the dictionary node they name.
    """
    rnd = random.Random(3)
    words = ["order", "ship", "paid", "alpha", "beta", "queue", "retry", "done", "wait"]
    state: dict[str, Any] = {"messages": [], "step": 0}
    states: list[dict[str, Any]] = [{}, {"messages": [], "step": 0}]
    with statevault.open(raw.url, policy=statevault.CheckpointPolicy(records=4)) as vault:
        run = vault.run("order-42")
        run.save(state)
        for step in range(1, 6):
            message = " ".join(rnd.choice(words) for _ in range(3000))
            with run.transaction() as s:
                s["messages"].append(message)
                s["step"] = step
            states.append({"messages": [*states[-1]["messages"], message], "step": step})
            if run.known_seq > len(states) - 1:  # a fold followed: the same state again
                states.append(states[-1])
    relocated = []
    references = set()
    for seq in range(2, 6):
        record = raw.record("order-42", seq)
        header = record.find(b"SV", 8)
        if record[header + 4] == 3:  # compression id 3: against a dictionary
            relocated.append(seq)
            references.add(record[header + 30 : header + 62].hex())
    assert relocated == [2, 3, 4, 5], "the deltas before the fold were relocated"
    assert len(references) == 1
    return states, relocated, references.pop()


def test_every_flipped_byte_of_a_relocated_entry_is_caught(raw: Raw) -> None:
    states, relocated, _ = relocated_journal(raw)
    seq = relocated[1]
    original = raw.record("order-42", seq)
    with statevault.open(raw.url) as vault:
        assert vault.run("order-42").load(at=seq) == states[seq]
        for pos in range(len(original)):
            damaged = bytearray(original)
            damaged[pos] ^= 0x10
            raw.write_record("order-42", seq, bytes(damaged))
            with pytest.raises(statevault.CorruptionError) as caught:
                vault.run("order-42").load(at=seq)
            assert caught.value.seq == seq, pos
            report = vault.verify()
            assert [(p.kind, p.seq) for p in report.problems] == [("record", seq)], pos
        raw.write_record("order-42", seq, original)
        assert vault.verify().ok


def test_missing_dictionary_of_relocated_entries(raw: Raw) -> None:
    states, relocated, reference = relocated_journal(raw)
    raw.delete_object(reference)
    with statevault.open(raw.url) as vault:
        run = vault.run("order-42")
        for seq in relocated:
            with pytest.raises(statevault.CorruptionError, match="missing") as caught:
                run.load(at=seq)
            # Replay stops at the first entry that needs the dictionary.
            assert_named(caught.value, seq=relocated[0], digest=reference)
        assert run.load() == states[-1], "the fold after them needs no dictionary"
        assert run.load(at=1) == states[1]
        report = vault.verify()
        assert ("missing-object", relocated[0]) in {(p.kind, p.seq) for p in report.problems}
        assert {p.seq for p in report.problems} == set(relocated)


def test_every_flipped_byte_of_a_replayed_delta_is_caught(raw: Raw) -> None:
    """A load replays deltas checking each envelope once (frame, digest): damage to any
    byte of a delta in the journal is still caught, by load, get and a transaction."""
    with statevault.open(raw.url) as vault:
        run = vault.run("order-42")
        run.save({"messages": [], "step": 0})
        for step in range(1, 4):
            with run.transaction() as s:
                s["messages"].append(f"message {step} " + "text " * 40)
                s["step"] = step
    original = raw.record("order-42", 3)
    with statevault.open(raw.url) as vault:
        for pos in range(len(original)):
            damaged = bytearray(original)
            damaged[pos] ^= 0x10
            raw.write_record("order-42", 3, bytes(damaged))
            run = vault.run("order-42")
            with pytest.raises(statevault.CorruptionError) as loaded:
                run.load()
            with pytest.raises(statevault.CorruptionError) as got:
                run.get("step")
            with pytest.raises(statevault.CorruptionError) as changed, run.transaction() as s:
                s["step"] = -1
            assert loaded.value.seq == got.value.seq == changed.value.seq == 3, pos
        raw.write_record("order-42", 3, original)
        assert vault.run("order-42").load()["step"] == 3
