"""`run.get(path)` reads only the objects on the path, and always answers exactly."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import statevault
from statevault import ops, paths
from statevault.tree import write as tw


def big_state(n: int = 5000) -> dict[str, Any]:
    rnd = random.Random(2)
    words = ["alpha", "beta", "gamma", "delta", "order", "ship", "agent", "tool"]
    return {
        "messages": [
            {"i": i, "text": " ".join(rnd.choice(words) for _ in range(60))} for i in range(n)
        ],
        "config": {"model": "m1", "limits": {"tokens": 4096}},
        "blob": rnd.randbytes(3 << 20),
        "table": {f"row{i}": list(range(i % 50)) for i in range(3000)},
        7: "int key",
    }


class CountingVault:
    """Counts the objects a vault's backend hands out."""

    def __init__(self, vault: statevault.Vault) -> None:
        self.fetched = 0
        backend = vault._backend
        original = backend.get_objects

        def counting(digests: Any) -> dict[bytes, bytes]:
            found = original(digests)
            self.fetched += len(found)
            return found

        backend.get_objects = counting  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def filled() -> Any:
    with statevault.open("memory://") as vault:
        state = big_state()
        vault.run("r").save(state)
        yield vault, state


@pytest.mark.parametrize(
    "path",
    [
        "messages.4321.text",
        "messages[-1].i",
        "config.limits.tokens",
        "config",
        "7",
        "table.row49",
        "messages.0",
        "blob",
        "",
    ],
)
def test_get_equals_lookup(filled: Any, path: str) -> None:
    vault, state = filled
    assert vault.run("r").get(path) == paths.lookup(state, path)


def test_get_reads_only_the_path(filled: Any) -> None:
    vault, _ = filled
    counter = CountingVault(vault)
    assert vault.run("r").get("messages.4321.i") == 4321
    assert counter.fetched <= 3
    counter.fetched = 0
    vault.run("r").load()
    assert counter.fetched > 10, "a load reads every chunk"


def test_missing_paths(filled: Any) -> None:
    vault, _ = filled
    run = vault.run("r")
    with pytest.raises(KeyError, match="5000 items"):
        run.get("messages.5000")
    with pytest.raises(KeyError):
        run.get("config.nope")
    with pytest.raises(KeyError, match="index it with a number"):
        run.get("messages.first")
    assert run.get("config.nope", default=None) is None


def test_get_sees_journal_entries(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save(big_state(3000))
    run.apply([ops.set("config.model", "m2")])
    run.apply([ops.append("messages", {"i": -1, "text": "new"})])
    assert run.get("config.model") == "m2"  # touched by a delta: replayed
    assert run.get("messages[-1]") == {"i": -1, "text": "new"}
    assert run.get("config.limits.tokens") == 4096
    assert run.get("table.row3") == [0, 1, 2]  # untouched: read lazily
    assert run.get("config.model", at=1) == "m1"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_get_agrees_with_load_everywhere(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 400))
    state = {"items": [{"k": i, "v": [i] * (i % 7)} for i in range(n)], "s": {"a": {"b": n}}}
    with statevault.open("memory://") as vault:
        saved = (tw.OBJECT_MIN, tw.LIST_MIN_ITEMS, tw.CHUNK_MIN, tw.CHUNK_TARGET)
        tw.OBJECT_MIN, tw.LIST_MIN_ITEMS, tw.CHUNK_MIN, tw.CHUNK_TARGET = 64, 4, 32, 128
        try:
            vault.run("r").save(state)
        finally:
            tw.OBJECT_MIN, tw.LIST_MIN_ITEMS, tw.CHUNK_MIN, tw.CHUNK_TARGET = saved
        index = data.draw(st.integers(-n - 2, n + 2))
        path = ["items", index, "v"]
        try:
            expected = paths.lookup(state, path)
        except KeyError:
            with pytest.raises(KeyError):
                vault.run("r").get(path)
        else:
            assert vault.run("r").get(path) == expected


def test_lazy_load_reads_parts_on_access(filled: Any) -> None:
    vault, state = filled
    counter = CountingVault(vault)
    view = vault.run("r").load(lazy=True)
    assert isinstance(view, statevault.LazyState)
    assert counter.fetched <= 1
    assert view["messages"][4321]["text"] == state["messages"][4321]["text"]
    assert counter.fetched <= 3
    assert len(view["messages"]) == 5000
    assert view["config"]["limits"].to_python() == {"tokens": 4096}
    assert view[7] == "int key"
    assert sorted(view.keys(), key=str) == sorted(state.keys(), key=str)
    assert view["config"] == state["config"]
    assert view.get("nope", 1) == 1
    with pytest.raises(TypeError):
        view["config"]["model"] = "x"  # type: ignore[index]
    assert "LazyState dict" in repr(view)


def test_lazy_load_after_journal_entries(vault: statevault.Vault) -> None:
    run = vault.run("r")
    run.save({"a": {"b": 1}, "log": [1]})
    run.apply([ops.append("log", 2)])
    view = run.load(lazy=True)
    assert view["log"].to_python() == [1, 2]
    assert view["a"]["b"] == 1
    assert vault.run("empty").load(lazy=True, default=None) is None
