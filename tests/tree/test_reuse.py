"""Folds re-encode only what changed, and produce exactly the tree a full write would."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import statevault
from statevault import ops
from statevault.codec.compression import Compression
from statevault.codec.encoding import Codec
from statevault.codec.registry import TypeRegistry
from statevault.tree import TreeReader, WrittenTree
from statevault.tree.write import CHUNK_MIN, TreeWriter

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


def load(tree: WrittenTree, earlier: list[WrittenTree]) -> Any:
    """The state a written tree stands for, read back from its objects (and earlier ones)."""
    store = {p.digest: p.data for t in [tree, *earlier] for p in [t.root, *t.objects]}
    return TreeReader(lambda keys: {k: store[k] for k in keys if k in store}, CODEC).load(
        tree.root.digest, tree.root.data
    )


def appends_only(applied: list[ops.Op], count: int) -> bool:
    """Whether every change lies past the first `count` messages (then the fold keeps
    the last chunk, and its cuts differ from a fresh write's)."""
    for op in applied:
        if op.path == ("messages",):
            if not isinstance(op, ops.AppendOp | ops.ExtendOp):
                return False
        elif op.path[:1] == ("messages",) and not (
            isinstance(op.path[1], int) and op.path[1] >= count
        ):
            return False
    return True


@settings(max_examples=40, deadline=None)
@given(st.integers(100, 3000), st.lists(change, max_size=12), st.integers(0, 9))
def test_reuse_gives_the_same_state(n: int, changes: list[tuple[str, int]], seed: int) -> None:
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
    assert load(reused, [first]) == state
    memo = first.memo.get(("messages",))
    if memo is not None and appends_only(applied, memo.count) and memo.chunks[-1][2] >= CHUNK_MIN:
        # Kept whole: every chunk of the first write is in the fold, in order.
        kept = [key for key, _, _ in memo.chunks]
        assert reused.memo[("messages",)].chunks[: len(kept)] == memo.chunks
        assert set(kept) <= reused.digests
    else:
        # Otherwise the fold cuts exactly where a fresh write does.
        assert reused.root.digest == fresh.root.digest
        assert reused.raw_bytes == fresh.raw_bytes
        assert reused.digests == fresh.digests


def test_append_only_folds_write_each_item_once() -> None:
    state = state_of(3000, 4)
    written = [TreeWriter(CODEC, ZSTD).write(state)]
    rnd = random.Random(5)
    for fold in range(6):
        changes: list[ops.Op] = [
            ops.extend("messages", [item(50_000 + 100 * fold + j, rnd) for j in range(100)]),
            ops.set("step", fold),
        ]
        state = ops.apply(state, changes)
        written.append(TreeWriter(CODEC, ZSTD, memo=written[-1].memo, changes=changes).write(state))
        assert load(written[-1], written[:-1]) == state
    # Each fold's new chunks hold about its 100 new items (~60 KB raw), not the open tail
    # of the list before it: nothing a previous write stored is written again.
    for before, after in itertools.pairwise(written):
        new = {p.digest for p in after.objects} - {p.digest for p in before.objects}
        raw = sum(p.raw_size for p in after.objects if p.digest in new)
        assert raw < 80_000, raw
        chunks = before.memo[("messages",)].chunks
        if chunks[-1][2] >= CHUNK_MIN:  # a smaller last chunk is reopened
            assert {key for key, _, _ in chunks} <= after.digests
        else:
            assert {key for key, _, _ in chunks[:-1]} <= after.digests


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
