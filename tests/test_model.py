"""A vault and a plain-dict model driven side by side by Hypothesis.

Rules: saves, transactions, `run.apply`, explicit folds (and folds by policy, every
three journal entries), deletions, stale handles, reopening, and "crash and reopen"
(the handle abandoned without closing). tests/crash/test_enumerate_model.py adds a
simulated power loss to the files backend's machine.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import statevault
from statevault import CheckpointPolicy, ops
from statevault.errors import OpError

POLICY = CheckpointPolicy(records=3)
"""Folds by policy come every three journal entries, so the machine meets many."""

RUN_IDS = st.sampled_from(["a", "b/c", "../d", "名前"])
STATES = st.recursive(
    st.none() | st.integers() | st.text(max_size=20) | st.binary(max_size=3000),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.tuples(inner, inner)
    ),
    max_leaves=12,
)


VALUES = st.none() | st.integers() | st.text(max_size=10) | st.binary(max_size=2000)
KEYS = st.sampled_from(["k", "n", "名"])


class VaultModel(RuleBasedStateMachine):
    """Each run's history must equal the list of states committed to it, in order.

    A run's history holds one state per entry: whole saves, the state after each
    journal entry (transaction or apply), and folds, which repeat the state before them.
    """

    kind = "sqlite"

    def connect(self) -> statevault.Vault:
        """Open the vault at `self.url` (subclasses open it through their own FileIO)."""
        return statevault.open(self.url, policy=POLICY)

    @initialize()
    def open_vault(self) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="statevault-model-"))
        self.url = {
            "sqlite": str(self.dir / "v.db"),
            "files": f"files://{self.dir / 'v'}",
            "memory": "memory://",
        }[self.kind]
        self.vault = self.connect()
        self.model: dict[str, list[Any]] = {}
        # Journal entries since each run's last whole state (saved or folded).
        self.deltas: dict[str, int] = {}
        self.abandoned: list[statevault.Vault] = []
        self.counter = 0
        # Each deletion starts a new incarnation of a run id; a handle that saw one
        # incarnation's head must not append to the next (the ABA case).
        self.incarnation: dict[str, int] = {}
        self.stale: dict[str, tuple[statevault.Run, int, int]] = {}

    def teardown(self) -> None:
        if hasattr(self, "vault"):
            report = self.vault.verify()
            assert report.ok, [str(p) for p in report.problems]
            self.vault.close()
            for vault in self.abandoned:
                vault.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(run_id=RUN_IDS, state=STATES)
    def save(self, run_id: str, state: Any) -> None:
        run = self.vault.run(run_id)
        checkpoint = run.save(state)
        history = self.model.setdefault(run_id, [])
        history.append(state)
        self.deltas[run_id] = 0
        assert checkpoint.seq == len(history)

    def _unique(self, value: Any) -> list[Any]:
        """`value` made unlike anything stored before, so every change is a change."""
        self.counter += 1
        return [self.counter, value]

    def _committed_delta(self, run_id: str, state: dict[Any, Any]) -> None:
        history = self.model[run_id]
        history.append(state)
        self.deltas[run_id] = self.deltas.get(run_id, 0) + 1
        if self.deltas[run_id] >= POLICY.records:
            history.append(state)  # the fold by policy, in the same call
            self.deltas[run_id] = 0

    @rule(run_id=RUN_IDS, key=KEYS, value=VALUES)
    def transaction(self, run_id: str, key: str, value: Any) -> None:
        history = self.model.get(run_id, [])
        if history and not isinstance(history[-1], dict):
            return  # a transaction sets a key: the root must be a dict
        new = self._unique(value)
        with self.vault.run(run_id).transaction(default={}) as state:
            state[key] = new
        if not history:
            self.model[run_id] = [{key: new}]  # the first entry is a whole state
            self.deltas[run_id] = 0
            return
        self._committed_delta(run_id, {**history[-1], key: new})

    @rule(run_id=RUN_IDS, key=KEYS, value=VALUES)
    def apply(self, run_id: str, key: str, value: Any) -> None:
        history = self.model.get(run_id, [])
        new = self._unique(value)
        run = self.vault.run(run_id)
        if not history:
            with pytest.raises(statevault.RunNotFound):
                run.apply([ops.set([key], new)])
        elif not isinstance(history[-1], dict):
            with pytest.raises(OpError):
                run.apply([ops.set([key], new)])
        else:
            run.apply([ops.set([key], new)])
            self._committed_delta(run_id, {**history[-1], key: new})

    @rule(run_id=RUN_IDS)
    def fold(self, run_id: str) -> None:
        history = self.model.get(run_id, [])
        run = self.vault.run(run_id)
        if not history:
            with pytest.raises(statevault.RunNotFound):
                run.checkpoint()
            return
        checkpoint = run.checkpoint()
        if self.deltas.get(run_id, 0):
            history.append(history[-1])
            self.deltas[run_id] = 0
        assert checkpoint.seq == len(history)

    @rule(run_id=RUN_IDS)
    def take_stale_handle(self, run_id: str) -> None:
        seen = len(self.model.get(run_id, []))
        self.stale[run_id] = (self.vault.run(run_id), self.incarnation.get(run_id, 0), seen)

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data(), state=STATES)
    def save_through_stale_handle(self, data: st.DataObject, state: Any) -> None:
        run_id = data.draw(st.sampled_from(sorted(self.stale)))
        handle, incarnation, seen = self.stale[run_id]
        history = self.model.get(run_id, [])
        current = self.incarnation.get(run_id, 0)
        assert handle.known_seq == seen
        if seen == len(history) and (seen == 0 or incarnation == current):
            handle.save(state)
            self.model.setdefault(run_id, []).append(state)
            self.deltas[run_id] = 0
            self.stale[run_id] = (handle, current, seen + 1)
        else:
            with pytest.raises(statevault.ConflictError):
                handle.save(state)

    @rule(run_id=RUN_IDS)
    def delete(self, run_id: str) -> None:
        assert self.vault.delete_run(run_id) == bool(self.model.get(run_id))
        self.model.pop(run_id, None)
        self.deltas.pop(run_id, None)
        self.incarnation[run_id] = self.incarnation.get(run_id, 0) + 1

    @precondition(lambda self: self.kind != "memory")
    @rule()
    def reopen(self) -> None:
        self.vault.close()
        self.vault = self.connect()
        self.stale.clear()

    @precondition(lambda self: self.kind != "memory")
    @rule()
    def crash_and_reopen(self) -> None:
        """Open again without closing, as a restarted process would after a crash."""
        self.abandoned.append(self.vault)
        self.vault = self.connect()
        self.stale.clear()

    @rule(run_id=RUN_IDS, data=st.data())
    def load_any_checkpoint(self, run_id: str, data: st.DataObject) -> None:
        history = self.model.get(run_id, [])
        run = self.vault.run(run_id)
        if not history:
            with pytest.raises(statevault.RunNotFound):
                run.load()
            return
        seq = data.draw(st.integers(1, len(history)))
        assert run.load(at=seq) == history[seq - 1]

    @invariant()
    def newest_states_match(self) -> None:
        if not hasattr(self, "vault"):
            return
        assert self.vault.runs() == sorted(r for r, h in self.model.items() if h)
        for run_id, history in self.model.items():
            if history:
                assert self.vault.run(run_id).load() == history[-1]


class SqliteModel(VaultModel):
    kind = "sqlite"


class FilesModel(VaultModel):
    kind = "files"


class MemoryModel(VaultModel):
    kind = "memory"


SETTINGS = settings(max_examples=100, stateful_step_count=30, deadline=None)
THOROUGH = settings(max_examples=1500, stateful_step_count=50, deadline=None)
TestSqliteModel = SETTINGS(SqliteModel).TestCase
TestFilesModel = SETTINGS(FilesModel).TestCase
TestMemoryModel = SETTINGS(MemoryModel).TestCase


@pytest.mark.slow
@pytest.mark.parametrize("machine", [SqliteModel, FilesModel, MemoryModel])
def test_models_thoroughly(machine: type[VaultModel]) -> None:
    run_state_machine_as_test(machine, settings=THOROUGH)
