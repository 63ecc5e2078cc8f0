"""State trees: exact round trips, and saves whose cost follows the change, not the state."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import statevault
from statevault.tree import write as tw

WORDS = ["alpha", "beta", "gamma", "delta", "order", "ship", "retry", "agent", "tool", "wait"]


def message(i: int, rnd: random.Random) -> dict[str, Any]:
    return {"i": i, "role": "agent", "text": " ".join(rnd.choice(WORDS) for _ in range(80))}


def chat(n: int, seed: int = 0) -> dict[str, Any]:
    rnd = random.Random(seed)
    return {"messages": [message(i, rnd) for i in range(n)], "step": n}


@pytest.fixture
def vault() -> Any:
    with statevault.open("memory://") as v:
        yield v


def test_large_state_becomes_many_objects_and_loads_back(vault: statevault.Vault) -> None:
    state = chat(3000)
    checkpoint = vault.run("r").save(state)
    assert vault.run("r").load() == state
    report = vault.verify()
    assert report.ok
    assert report.objects > 5, "a 1.5 MB list is cut into chunks"
    assert checkpoint.raw_bytes > 1_000_000


def test_append_writes_only_the_tail(vault: statevault.Vault) -> None:
    state = chat(4000)
    run = vault.run("r")
    first = run.save(state)
    state["messages"].append(message(4000, random.Random(9)))
    state["step"] += 1
    second = run.save(state)
    assert second.stored_bytes < first.stored_bytes / 20
    assert second.stored_bytes < 2 * tw.CHUNK_MAX
    assert run.load() == state
    assert run.load(at=1)["step"] == 4000


def test_insert_in_the_middle_rewrites_a_few_chunks(vault: statevault.Vault) -> None:
    state = chat(4000)
    run = vault.run("r")
    first = run.save(state)
    state["messages"].insert(2000, message(-1, random.Random(5)))
    second = run.save(state)
    # ~15 chunks; the insert rewrites its own chunk and at most a couple after it.
    assert second.stored_bytes < first.stored_bytes / 4, "boundaries fall back into step"
    assert run.load() == state


def test_equal_content_is_stored_once_across_runs(vault: statevault.Vault) -> None:
    state = chat(3000)
    vault.run("a").save(state)
    other = vault.run("b").save({"copy": state["messages"], "step": 1})
    assert other.stored_bytes < 2000, "only the new root is new"
    assert vault.run("b").load()["copy"] == state["messages"]


def test_resaving_the_same_state_writes_nothing_new(vault: statevault.Vault) -> None:
    state = chat(3000)
    run = vault.run("r")
    run.save(state)
    again = run.save(state)
    assert again.stored_bytes < 600  # the (inline) root only


def test_large_bytes_are_chunked_and_a_change_rewrites_one_chunk(vault: statevault.Vault) -> None:
    blob = bytearray(random.Random(3).randbytes(5 * tw.BYTES_CHUNK + 17))
    run = vault.run("r")
    first = run.save({"blob": bytes(blob)})
    blob[3 * tw.BYTES_CHUNK + 5] ^= 0xFF
    second = run.save({"blob": bytes(blob)})
    assert run.load() == {"blob": bytes(blob)}
    assert first.stored_bytes > 5 * tw.BYTES_CHUNK
    assert second.stored_bytes < 1.1 * tw.BYTES_CHUNK


def test_big_values_deep_in_the_state_become_nodes(vault: statevault.Vault) -> None:
    deep = {"a": {"b": {"c": {"d": [list(range(100)) for _ in range(200)]}}}}
    run = vault.run("r")
    run.save(deep)
    deep["a"]["b"]["c"]["d"][150].append(-1)
    second = run.save(deep)
    assert run.load() == deep
    assert second.stored_bytes < 100_000


def test_chunk_boundaries_depend_on_content_only() -> None:
    rnd = random.Random(1)
    items = [rnd.randbytes(rnd.randrange(100, 5000)) for _ in range(3000)]

    def cuts(seq: list[bytes]) -> list[int]:
        out, size = [], 0
        for i, item in enumerate(seq):
            size += len(item)
            if tw._cut_after(item, size):
                out.append(i)
                size = 0
        return out

    base = cuts(items)
    assert cuts(items + items[:10])[: len(base)] == base, "appending keeps earlier cuts"
    sizes = [b - a for a, b in zip([-1, *base], base, strict=False)]
    assert min(sizes) >= 1
    average = sum(len(x) for x in items) / len(base)
    assert tw.CHUNK_MIN < average < 3 * tw.CHUNK_TARGET


big_states = st.recursive(
    st.integers() | st.text(max_size=30) | st.binary(max_size=50) | st.tuples(st.integers()),
    lambda inner: (
        st.lists(inner, max_size=300) | st.dictionaries(st.text(max_size=8), inner, max_size=20)
    ),
    max_leaves=2000,
)


@settings(max_examples=60, deadline=None)
@given(big_states, st.integers(1, 4))
def test_any_state_roundtrips_through_small_trees(state: Any, scale: int) -> None:
    # Shrink the thresholds so that small generated states still produce every node kind.
    saved = (tw.OBJECT_MIN, tw.BIG_LEAF, tw.LIST_MIN_ITEMS, tw.CHUNK_MIN, tw.CHUNK_TARGET)
    tw.OBJECT_MIN, tw.BIG_LEAF, tw.LIST_MIN_ITEMS = 64 * scale, 256 * scale, 4
    tw.CHUNK_MIN, tw.CHUNK_TARGET = 32 * scale, 128 * scale
    try:
        with statevault.open("memory://") as vault:
            vault.run("r").save(state)
            assert vault.run("r").load() == state
            assert vault.verify().ok
    finally:
        tw.OBJECT_MIN, tw.BIG_LEAF, tw.LIST_MIN_ITEMS, tw.CHUNK_MIN, tw.CHUNK_TARGET = saved


def test_unstorable_value_deep_in_a_big_state_names_its_path(vault: statevault.Vault) -> None:
    state = chat(3000)
    state["messages"][2500]["callback"] = print
    with pytest.raises(statevault.SerializationError) as caught:
        vault.run("r").save(state)
    assert caught.value.path == "state['messages'][2500]['callback']"
    assert vault.runs() == []


def test_large_arrays_are_chunked_and_a_change_rewrites_one_chunk(vault: statevault.Vault) -> None:
    np = pytest.importorskip("numpy")
    weights = np.arange(3_000_000, dtype=np.float32).reshape(1000, 3000)
    table = np.ones(200_000, dtype=[("a", "<i4"), ("b", "<f8")])
    run = vault.run("r")
    first = run.save({"w": weights, "t": table, "f": np.asfortranarray(weights[:200])})
    changed = weights.copy()
    changed[500, 7] = -1
    second = run.save({"w": changed, "t": table, "f": np.asfortranarray(weights[:200])})
    loaded = run.load()
    assert (loaded["w"] == changed).all()
    assert loaded["w"].dtype == np.float32
    assert loaded["w"].flags.writeable
    assert loaded["t"].dtype == table.dtype
    assert (loaded["f"] == weights[:200]).all()
    assert second.stored_bytes < first.stored_bytes / 5
    assert second.stored_bytes < 1.5 * tw.BYTES_CHUNK
    assert vault.verify().ok
