"""`run.transaction()`: tracked changes committed as one journal entry, or none."""

from __future__ import annotations

import random

import pytest

import statevault
from statevault.errors import TransactionError


def test_transaction_commits_one_delta(vault: statevault.Vault) -> None:
    run = vault.run("chat")
    run.save({"messages": [], "step": 0, "meta": {"model": "m1"}})
    with run.transaction(meta={"note": "turn 1"}) as s:
        s["messages"].append({"role": "user", "text": "hello"})
        s["step"] += 1
        s["meta"]["model"] = "m2"
    head = run.head
    assert head is not None
    assert (head.kind, head.seq, head.meta) == ("delta", 2, {"note": "turn 1"})
    expected = {"messages": [{"role": "user", "text": "hello"}], "step": 1, "meta": {"model": "m2"}}
    assert vault.run("chat").load() == expected


def test_exception_rolls_back_and_commits_nothing(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"n": 1, "log": ["a"]})
    with pytest.raises(RuntimeError, match="boom"), run.transaction() as s:  # noqa: PT012
        s["n"] = 99
        s["log"].append("lost")
        raise RuntimeError("boom")
    assert [c.seq for c in run.checkpoints()] == [1]
    with run.transaction() as s:  # the handle's state was rolled back, not dropped
        assert s["n"] == 1
        assert list(s["log"]) == ["a"]
        s["n"] += 1
    assert vault.run("r").load() == {"n": 2, "log": ["a"]}


def test_empty_transaction_commits_nothing(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"n": 1})
    with run.transaction() as s:
        assert s["n"] == 1
    assert len(run.checkpoints()) == 1


def test_first_transaction_of_a_new_run_needs_a_default(vault: statevault.Vault) -> None:
    run = vault.run("new")
    with pytest.raises(statevault.RunNotFound), run.transaction() as s:
        s["x"] = 1
    with run.transaction(default={"log": []}) as s:
        s["log"].append(1)
    assert run.checkpoints()[0].kind == "state"
    with run.transaction(default={"log": []}) as s:
        s["log"].append(2)
    assert vault.run("new").load() == {"log": [1, 2]}


def test_concurrent_writer_makes_a_transaction_conflict(vault: statevault.Vault) -> None:
    a = vault.run("r")
    a.save({"n": 0})
    with a.transaction() as s:  # a now holds its state in its cache
        s["n"] += 1
    b = vault.run("r")
    with b.transaction() as s:
        s["n"] += 10
    # a's cached state is stale: its commit must not land on top of b's.
    with pytest.raises(statevault.ConflictError), a.transaction() as s:
        s["n"] += 100
    with a.transaction() as s:  # the conflict made a adopt the newer state: one retry
        assert s["n"] == 11
        s["n"] += 100
    assert vault.run("r").load()["n"] == 111


def test_a_handle_that_saw_an_empty_run_conflicts(vault: statevault.Vault) -> None:
    early = vault.run("r")
    vault.run("r").save({"n": 0})
    with pytest.raises(statevault.ConflictError), early.transaction(default={"n": 5}) as s:
        s["n"] = 6
    assert vault.run("r").load() == {"n": 0}


def test_views_end_with_the_transaction(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"log": []})
    with run.transaction() as s:
        log = s["log"]
        log.append(1)
    with pytest.raises(TransactionError):
        log.append(2)


def test_untrackable_change_is_refused(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"tags": {"a"}, "blob": bytearray(b"x")})
    with run.transaction() as s:
        s["tags"] = s["tags"] | {"b"}  # assignment is tracked
    assert vault.run("r").load()["tags"] == {"a", "b"}


def test_agent_chat_grows_by_its_change(vault: statevault.Vault) -> None:
    words = ["plan", "tool", "call", "result", "think", "answer", "user", "agent", "step"]
    rnd = random.Random(1)
    run = vault.run("chat", policy=statevault.CheckpointPolicy(records=50))
    run.save({"messages": [], "step": 0})
    for _ in range(300):
        with run.transaction() as s:
            s["messages"].append(
                {"role": "agent", "text": " ".join(rnd.choice(words) for _ in range(300))}
            )
            s["step"] += 1
    final = vault.run("chat").load()
    assert final["step"] == 300
    assert len(final["messages"]) == 300
    stored = sum(c.stored_bytes for c in run.checkpoints())
    raw_final = sum(len(m["text"]) for m in final["messages"])
    assert stored < raw_final, "history costs less than the final state's raw text"
    assert vault.verify().ok
