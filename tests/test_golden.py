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
CHATS = sorted((DATA / "golden" / "chat").glob("v*"))


def check_chat(vault: statevault.Vault) -> None:
    """Run `chat` loads as written: every entry, whatever its kind or encoding."""
    expected = make_golden.chat_states()
    run = vault.run("chat", policy=make_golden.CHAT_POLICY)
    step = 0
    for checkpoint in reversed(run.checkpoints()):
        if checkpoint.kind == "delta":
            step += 1
        assert run.load(at=checkpoint.seq) == expected[step]
    assert step == make_golden.CHAT_STEPS
    assert run.load() == expected[-1]
    assert run.get("messages.3.i") == 4


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
        assert set(vault.runs()) - {"tree", "journal", "chat"} == {"big", "order-42"}
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
        if "chat" in vault.runs():
            check_chat(vault)
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


@pytest.mark.parametrize("golden", CHATS, ids=lambda p: p.name)
def test_golden_chat_loads_and_grows_in_its_format(
    golden: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """Run `chat` of a format that predates it in the main golden vaults: it loads, and
    grows in that format."""
    copy = tmp_path / golden.name
    if golden.is_dir():
        shutil.copytree(golden, copy)
        url = f"files://{copy}"
    else:
        shutil.copy(golden, copy)
        url = str(copy)
    version = int(golden.name[1:].split("-")[0].split(".")[0])
    with statevault.open(url) as vault:
        assert vault.format_version == version
        check_chat(vault)
        assert vault.verify().ok
        run = vault.run("chat", policy=make_golden.CHAT_POLICY)
        for i in range(1, 6):
            with run.transaction() as s:
                s["messages"].append({"i": -i})
                s["step"] += 1
    with statevault.open(url) as vault:
        assert vault.format_version == version
        state = vault.run("chat").load()
        assert state["messages"][-1] == {"i": -5}
        assert state["step"] == make_golden.CHAT_STEPS + 5
        report = vault.verify()
        assert report.ok, report.problems
