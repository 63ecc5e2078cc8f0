"""A vault and a plain-dict model driven side by side by Hypothesis, with reopen as a rule."""

from __future__ import annotations

import pathlib
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import statevault

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


class VaultModel(RuleBasedStateMachine):
    """Each run's history must equal the list of states saved to it, in order."""

    kind = "sqlite"

    @initialize()
    def open_vault(self) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="statevault-model-"))
        self.url = {
            "sqlite": str(self.dir / "v.db"),
            "files": f"files://{self.dir / 'v'}",
            "memory": "memory://",
        }[self.kind]
        self.vault = statevault.open(self.url)
        self.model: dict[str, list[Any]] = {}
        # Each deletion starts a new incarnation of a run id; a handle that saw one
        # incarnation's head must not append to the next (the ABA case).
        self.incarnation: dict[str, int] = {}
        self.stale: dict[str, tuple[statevault.Run, int, int]] = {}

    def teardown(self) -> None:
        if hasattr(self, "vault"):
            report = self.vault.verify()
            assert report.ok, [str(p) for p in report.problems]
            self.vault.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(run_id=RUN_IDS, state=STATES)
    def save(self, run_id: str, state: Any) -> None:
        run = self.vault.run(run_id)
        checkpoint = run.save(state)
        history = self.model.setdefault(run_id, [])
        history.append(state)
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
            self.stale[run_id] = (handle, current, seen + 1)
        else:
            with pytest.raises(statevault.ConflictError):
                handle.save(state)

    @rule(run_id=RUN_IDS)
    def delete(self, run_id: str) -> None:
        assert self.vault.delete_run(run_id) == bool(self.model.get(run_id))
        self.model.pop(run_id, None)
        self.incarnation[run_id] = self.incarnation.get(run_id, 0) + 1

    @precondition(lambda self: self.kind != "memory")
    @rule()
    def reopen(self) -> None:
        self.vault.close()
        self.vault = statevault.open(self.url)
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


_settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestSqliteModel = _settings(SqliteModel).TestCase
TestFilesModel = _settings(FilesModel).TestCase
TestMemoryModel = _settings(MemoryModel).TestCase
