"""Folds re-encode only what changed, and produce exactly the tree a full write would."""

from __future__ import annotations

import copy
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import statevault
from statevault import ops
from statevault.codec.compression import Compression
from statevault.codec.encoding import Codec
from statevault.codec.registry import TypeRegistry
from statevault.tree.write import TreeWriter

CODEC = Codec(TypeRegistry())
ZSTD = Compression.parse("zstd")


def item(i: int, rnd: random.Random) -> dict[str, Any]:
    return {"i": i, "text": " ".join(rnd.choice(["a", "bb", "ccc", "dddd"]) for _ in range(120))}


def state_of(n: int, seed: int) -> dict[str, Any]:
    rnd = random.Random(seed)
    return {"messages": [item(i, rnd) for i in range(n)], "step": 0, "inner": {"rows": []}}


change = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 3)),
    st.tuples(st.just("extend"), st.integers(1, 40)),
    st.tuples(st.just("set_item"), st.integers(-5, 5000)),
    st.tuples(st.just("insert"), st.integers(0, 5000)),
    st.tuples(st.just("delete"), st.integers(0, 5000)),
    st.tuples(st.just("step"), st.integers(0, 9)),
    st.tuples(st.just("replace_list"), st.integers(0, 9)),
    st.tuples(st.just("inner"), st.integers(0, 9)),
)


def to_op(kind: str, n: int, state: dict[str, Any], rnd: random.Random) -> ops.Op | None:
    count = len(state["messages"])
    if kind == "append":
        return ops.append("messages", item(10_000 + n, rnd))
    if kind == "extend":
        return ops.extend("messages", [item(20_000 + j, rnd) for j in range(n)])
    if kind == "set_item" and count and -count <= n < count:
        return ops.set(["messages", n, "text"], "changed")
    if kind == "insert" and n <= count:
        return ops.insert(["messages", n], item(-n, rnd))
    if kind == "delete" and n < count:
        return ops.delete(["messages", n])
    if kind == "step":
        return ops.set("step", n)
    if kind == "replace_list":
        return ops.set("messages", [item(j, rnd) for j in range(n)])
    if kind == "inner":
        return ops.append("inner.rows", n)
    return None


@settings(max_examples=40, deadline=None)
@given(st.integers(100, 3000), st.lists(change, max_size=12), st.integers(0, 9))
def test_reuse_gives_the_same_tree(n: int, changes: list[tuple[str, int]], seed: int) -> None:
    rnd = random.Random(seed)
    state = state_of(n, seed)
    first = TreeWriter(CODEC, ZSTD).write(state)
    applied: list[ops.Op] = []
    for kind, value in changes:
        op = to_op(kind, value, state, rnd)
        if op is not None:
            state = ops.apply(state, [op])
            applied.append(op)
    reused = TreeWriter(CODEC, ZSTD, memo=first.memo, changes=applied).write(copy.deepcopy(state))
    fresh = TreeWriter(CODEC, ZSTD).write(state)
    assert reused.root.digest == fresh.root.digest
    assert reused.raw_bytes == fresh.raw_bytes
    assert reused.digests == fresh.digests


def test_append_only_fold_encodes_only_the_tail() -> None:
    state = state_of(20_000, 1)
    first = TreeWriter(CODEC, ZSTD).write(state)
    changes = [ops.append("messages", item(-1, random.Random(2))), ops.set("step", 1)]
    state = ops.apply(state, changes)
    writer = TreeWriter(CODEC, ZSTD, memo=first.memo, changes=changes)
    encoded: list[int] = []
    original = CODEC.pack_value

    def counting(value: Any) -> bytes:
        encoded.append(1)
        return original(value)

    CODEC.pack_value = counting  # type: ignore[method-assign]
    try:
        writer.write(state)
    finally:
        del CODEC.pack_value
    assert len(encoded) < 2_000, "only the last chunk's items were encoded again"


def test_transactions_fold_cheaply_through_the_api() -> None:
    with statevault.open("memory://") as vault:
        run = vault.run("chat", policy=statevault.CheckpointPolicy(records=10))
        run.save(state_of(5000, 3))
        for step in range(25):
            with run.transaction() as s:
                s["messages"].append({"i": -step, "text": "short"})
                s["step"] += 1
        folds = [c for c in run.checkpoints() if c.kind == "fold"]
        assert len(folds) == 2
        assert all(c.stored_bytes < 60_000 for c in folds)
        assert vault.run("chat").load()["step"] == 25
        assert vault.verify().ok
