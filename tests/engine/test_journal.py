"""The journal: delta entries, replay, folding, and every step of history loadable."""

from __future__ import annotations

import copy
import pathlib
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from test_corruption import RawSqlite

import statevault
from statevault import ops
from statevault.errors import OpError


def test_apply_commits_a_delta_and_load_replays_it(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"step": 0, "log": []})
    checkpoint = run.apply([ops.increment("step"), ops.append("log", "first")], meta={"n": 1})
    assert checkpoint.kind == "delta"
    assert checkpoint.seq == 2
    assert checkpoint.meta == {"n": 1}
    assert checkpoint.digest == ""
    assert run.load() == {"step": 1, "log": ["first"]}
    assert vault.run("r").load() == {"step": 1, "log": ["first"]}, "a fresh handle replays"
    assert [c.kind for c in run.checkpoints()] == ["delta", "state"]


def test_every_entry_is_loadable(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"n": 0})
    for _ in range(5):
        run.apply([ops.increment("n")])
    assert [run.load(at=seq)["n"] for seq in range(1, 7)] == [0, 1, 2, 3, 4, 5]
    assert run.get("n", at=4) == 3


def test_policy_folds_the_journal(vault: statevault.Vault) -> None:
    run = vault.run("r", policy=statevault.CheckpointPolicy(records=3))
    run.save({"n": 0, "rows": list(range(5000))})
    for i in range(7):
        run.apply([ops.increment("n"), ops.append("rows", -i)])
    kinds = [c.kind for c in reversed(run.checkpoints())]
    assert kinds == ["state", "delta", "delta", "delta", "fold"] + ["delta"] * 3 + ["fold", "delta"]
    folds = [c for c in run.checkpoints() if c.kind == "fold"]
    assert all(c.stored_bytes < 20_000 for c in folds), "a fold writes only changed chunks"
    assert run.load()["n"] == 7
    assert run.load(at=5) == run.load(at=4), "a fold holds the state of the entry before it"
    assert vault.verify().ok


def test_checkpoint_folds_now(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"n": 0})
    assert run.checkpoint().seq == 1, "the head is a state already: nothing to fold"
    run.apply([ops.increment("n")])
    folded = run.checkpoint(meta={"why": "deploy"})
    assert (folded.kind, folded.seq, folded.meta) == ("fold", 3, {"why": "deploy"})
    assert vault.run("r").load() == {"n": 1}


def test_failing_op_writes_nothing(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"n": 0, "log": []})
    with pytest.raises(OpError):
        run.apply([ops.increment("n"), ops.append("missing", 1)])
    assert run.load() == {"n": 0, "log": []}
    assert [c.seq for c in run.checkpoints()] == [1]
    run.apply([ops.increment("n")])  # the handle's cache was not left half-changed
    assert vault.run("r").load() == {"n": 1, "log": []}


def test_apply_needs_a_state(vault: statevault.Vault) -> None:
    with pytest.raises(statevault.RunNotFound):
        vault.run("new").apply([ops.set("a", 1)])


def test_deltas_conflict_like_saves(vault: statevault.Vault) -> None:
    a, b = vault.run("r"), vault.run("r")
    a.save({"n": 0})
    b.load()
    a.apply([ops.increment("n")])
    with pytest.raises(statevault.ConflictError):
        b.apply([ops.increment("n", 10)])
    b.apply([ops.increment("n", 10)])  # the failed attempt dropped b's stale state
    assert vault.run("r").load() == {"n": 11}


def test_deltas_survive_reopen(vault_url: str) -> None:
    if vault_url == "memory://":
        pytest.skip("memory vaults do not persist")
    with statevault.open(vault_url) as vault:
        run = vault.run("r")
        run.save({"log": []})
        for i in range(10):
            run.apply([ops.append("log", i)])
    with statevault.open(vault_url) as vault:
        assert vault.run("r").load() == {"log": list(range(10))}
        assert vault.verify().ok


def test_damaged_delta_is_caught(tmp_path: pathlib.Path) -> None:
    raw = RawSqlite(tmp_path / "v.db")
    with statevault.open(raw.url) as vault:
        run = vault.run("order-42")
        run.save({"n": 0})
        run.apply([ops.increment("n")])
        run.apply([ops.increment("n")])
    sealed = bytearray(raw.record("order-42", 2))
    sealed[len(sealed) // 2] ^= 1
    raw.write_record("order-42", 2, bytes(sealed))
    with statevault.open(raw.url) as vault:
        with pytest.raises(statevault.CorruptionError) as caught:
            vault.run("order-42").load()
        assert caught.value.seq == 2
        assert vault.run("order-42").load(at=1) == {"n": 0}
        assert ("record", 2) in {(p.kind, p.seq) for p in vault.verify().problems}


def _flip_inline_payload(raw: RawSqlite, run_id: str, seq: int) -> None:
    """Flip a byte inside the inline envelope of a stored record (not its sealed body)."""
    sealed = bytearray(raw.record(run_id, seq))
    assert sealed.startswith(b"SVR2"), "a record that carries its envelope beside its body"
    sealed[4 + 4 + 40] ^= 1  # magic, payload length, 30-byte envelope header, into the payload
    raw.write_record(run_id, seq, bytes(sealed))


def test_long_replay_unpacks_deltas_ahead_and_still_names_the_damaged_one(
    tmp_path: pathlib.Path,
) -> None:
    """Past `_UNPACK_AHEAD_FROM` deltas, they are unpacked on the pool while the state
    loads; damage found there is reported as it is without the overlap."""
    raw = RawSqlite(tmp_path / "v.db")
    long_text = "a message long enough to be compressed, " * 8
    with statevault.open(raw.url) as vault:
        run = vault.run("chat")
        run.save({"messages": [], "opening": long_text})
        for i in range(30):
            run.apply([ops.append("messages", f"{i}: {long_text}")])
    with statevault.open(raw.url) as vault:
        loaded = vault.run("chat").load()
        assert loaded["messages"] == [f"{i}: {long_text}" for i in range(30)]

    _flip_inline_payload(raw, "chat", 12)
    with statevault.open(raw.url) as vault:
        with pytest.raises(statevault.CorruptionError) as caught:
            vault.run("chat").load()
        assert caught.value.seq == 12
        assert len(vault.run("chat").load(at=11)["messages"]) == 10

    _flip_inline_payload(raw, "chat", 1)
    with statevault.open(raw.url) as vault:
        with pytest.raises(statevault.CorruptionError) as caught:
            vault.run("chat").load()
        assert caught.value.seq == 1, "damage in the state entry is reported before the deltas'"


class _Abort(Exception):
    pass


# -- a model of history ------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c"])


class JournalModel(RuleBasedStateMachine):
    """Every seq of a run's history loads as the model's state after that step."""

    @initialize(kind=st.sampled_from(["sqlite", "files", "memory"]))
    def open_vault(self, kind: str) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="statevault-journal-"))
        self.url = {
            "sqlite": str(self.dir / "v.db"),
            "files": f"files://{self.dir / 'v'}",
            "memory": "memory://",
        }[kind]
        self.persistent = kind != "memory"
        self.vault = statevault.open(self.url)
        self.policy = statevault.CheckpointPolicy(records=4)
        self.run = self.vault.run("r", policy=self.policy)
        self.history: list[dict[str, Any]] = []

    def teardown(self) -> None:
        if hasattr(self, "vault"):
            assert self.vault.verify().ok
            self.vault.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def current(self) -> dict[str, Any]:
        return copy.deepcopy(self.history[-1])

    @rule(n=st.integers(-5, 5))
    def save(self, n: int) -> None:
        state = {"n": n, "log": [], "kv": {}}
        self.run.save(state)
        self.history.append(copy.deepcopy(state))

    @rule(item=st.integers() | st.text(max_size=5), key=KEYS, amount=st.integers(-3, 3))
    def apply_ops(self, item: Any, key: str, amount: int) -> None:
        if not self.history:
            return
        batch = [ops.append("log", item), ops.increment("n", amount), ops.set(["kv", key], item)]
        checkpoint = self.run.apply(batch)
        state = self.current
        state["log"].append(item)
        state["n"] += amount
        state["kv"][key] = item
        assert checkpoint.seq == len(self.history) + 1
        self.history.append(state)
        # A fold entry may follow a delta: it repeats the state it folds.
        while len(self.history) < self.run.known_seq:
            self.history.append(copy.deepcopy(state))

    @rule(key=KEYS)
    def delete_key(self, key: str) -> None:
        if not self.history or key not in self.history[-1]["kv"]:
            return
        self.run.apply([ops.delete(["kv", key])])
        state = self.current
        del state["kv"][key]
        self.history.append(state)
        while len(self.history) < self.run.known_seq:
            self.history.append(copy.deepcopy(state))

    @rule(item=st.integers(), key=KEYS, fail=st.booleans())
    def transaction(self, item: int, key: str, fail: bool) -> None:
        if not self.history:
            return
        try:
            with self.run.transaction() as s:
                s["log"].append(item)
                s["kv"][key] = [item]
                s["n"] += 1
                if fail:
                    raise _Abort
        except _Abort:
            return  # rolled back: nothing committed
        state = self.current
        state["log"].append(item)
        state["kv"][key] = [item]
        state["n"] += 1
        self.history.append(state)
        while len(self.history) < self.run.known_seq:
            self.history.append(copy.deepcopy(state))

    @rule()
    def reopen(self) -> None:
        if self.persistent:
            self.vault.close()
            self.vault = statevault.open(self.url)
            self.run = self.vault.run("r", policy=self.policy)

    @rule(data=st.data())
    def load_any(self, data: st.DataObject) -> None:
        if self.history:
            seq = data.draw(st.integers(1, len(self.history)))
            assert self.run.load(at=seq) == self.history[seq - 1]

    @invariant()
    def newest(self) -> None:
        if getattr(self, "history", None):
            assert self.vault.run("r").load() == self.history[-1]
            assert len(self.run.checkpoints()) == len(self.history)


TestJournalModel = settings(max_examples=40, stateful_step_count=30, deadline=None)(
    JournalModel
).TestCase
