"""Vaults written by every released format keep loading (tests/data/golden/)."""

from __future__ import annotations

import pathlib
import shutil
import sys

import pytest

import statevault
from statevault.backends.files import LAYOUT_VERSION

DATA = pathlib.Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import make_golden  # noqa: E402

GOLDEN = sorted((DATA / "golden").glob("v*"))


def test_golden_vaults_exist_for_the_current_format() -> None:
    names = {p.name for p in GOLDEN}
    assert f"v{statevault.FORMAT_VERSION}.db" in names
    assert f"v{statevault.FORMAT_VERSION}-files-layout{LAYOUT_VERSION}" in names


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda p: p.name)
def test_golden_vault_loads(golden: pathlib.Path, tmp_path: pathlib.Path) -> None:
    # A copy: opening must not need to write, but tests never touch the originals.
    copy = tmp_path / golden.name
    if golden.is_dir():
        shutil.copytree(golden, copy)
        url = f"files://{copy}"
    else:
        shutil.copy(golden, copy)
        url = str(copy)
    with statevault.open(url) as vault:
        make_golden.register(vault)
        assert set(vault.runs()) - {"tree", "journal"} == {"big", "order-42"}
        run = vault.run("order-42")
        expected = make_golden.states()
        assert [c.seq for c in run.checkpoints()] == [2, 1]
        for seq, state in enumerate(expected, start=1):
            assert run.load(at=seq) == state
            assert run.checkpoint_at(seq).meta == {"step": seq}
        assert vault.run("big").load() == make_golden.big_state()
        if "tree" in vault.runs():
            expected_tree = make_golden.tree_state()
            tree = vault.run("tree")
            assert tree.load(at=1) == expected_tree
            expected_tree["messages"].append({"i": 3000, "role": "agent", "text": "appended"})
            assert tree.load() == expected_tree
        if "journal" in vault.runs():
            journal = vault.run("journal")
            expected_history = make_golden.journal_history()
            stored = list(reversed(journal.checkpoints()))
            assert [c.kind for c in stored] == [kind for kind, _ in expected_history]
            for checkpoint, (_, state) in zip(stored, expected_history, strict=True):
                assert journal.load(at=checkpoint.seq) == state
            with journal.transaction() as state:
                state["log"].append("after upgrade")
            assert journal.load()["log"][-1] == "after upgrade"
        report = vault.verify()
        assert report.ok, report.problems
        # The golden vault accepts new checkpoints from the current code, written in its
        # own format so that the statevault that made it can still read it.
        version = int(golden.name[1:].split("-")[0].split(".")[0])
        assert vault.format_version == version
        assert run.save({"after": "upgrade", "rows": list(range(5000))}).seq == 3
    with statevault.open(url) as vault:
        assert vault.format_version == version
        assert vault.run("order-42").load() == {"after": "upgrade", "rows": list(range(5000))}
        assert vault.verify().ok
