"""Delta operations: what each does, how each fails, atomic batches, the stored form."""

from __future__ import annotations

import collections
import copy
import decimal
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deltas import (
    CODEC,
    STATES,
    VALUES,
    Box,
    FrozenBox,
    FrozenPBox,
    FrozenSBox,
    PBox,
    assert_tree,
    children,
    container_paths,
    get_at,
    is_record,
    roundtrip,
)
from samples import Frozen
from statevault import ops
from statevault.codec.encoding import UnknownRecord
from statevault.errors import CorruptionError, OpError, StateVaultError, UnsupportedFormatError

HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- building ----------------------------------------------------------------------------


def test_builders_take_text_or_key_lists() -> None:
    assert ops.set('jobs[3].meta["a.b"]', 1) == ops.SetOp(("jobs", 3, "meta", "a.b"), 1)
    assert ops.set([("k", 1), None, 2.5], 1).path == (("k", 1), None, 2.5)
    assert ops.set("", {}).path == ()
    assert ops.extend("rows", iter([1, 2])) == ops.ExtendOp(("rows",), (1, 2))
    assert ops.merge("cfg", collections.OrderedDict(a=1)).mapping == {"a": 1}
    assert ops.tag_of(ops.increment("n", decimal.Decimal("0.5"))) == "increment"


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: ops.delete(""), ValueError),
        (lambda: ops.delete([]), ValueError),
        (lambda: ops.insert("queue", 1), ValueError),
        (lambda: ops.insert([], 1), ValueError),
        (lambda: ops.increment("n", True), TypeError),
        (lambda: ops.increment("n", "1"), TypeError),
        (lambda: ops.extend("rows", "abc"), TypeError),
        (lambda: ops.extend("rows", {"a": 1}), TypeError),
        (lambda: ops.merge("cfg", [("a", 1)]), TypeError),
        (lambda: ops.set(["a", ["unhashable"]], 1), TypeError),
        (lambda: ops.set(7, 1), TypeError),
        (lambda: ops.set("a..b", 1), ValueError),
    ],
)
def test_builders_refuse_what_cannot_apply(
    build: Callable[[], Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        build()


def test_ops_are_frozen() -> None:
    op = ops.set("a", 1)
    with pytest.raises(AttributeError):
        op.value = 2  # type: ignore[misc]
    assert hash(op) == hash(ops.set(["a"], 1))


# -- what each operation does -----------------------------------------------------------


def test_set_new_and_existing_keys_indexes_fields_and_root() -> None:
    box = Box(1, 2)
    state = {"a": {"x": 1}, "l": [1, 2, 3], "box": box, 3: "int key", ("t", 1): 0}
    out = ops.apply(
        state,
        [
            ops.set("a.x", 10),
            ops.set("a.y", 11),
            ops.set("l[-1]", 30),
            ops.set(["box", "b"], [5]),
            ops.set([3], "three"),
            ops.set([("t", 1)], 1),
        ],
    )
    assert out is state
    assert state == {
        "a": {"x": 10, "y": 11},
        "l": [1, 2, 30],
        "box": Box(1, [5]),
        3: "three",
        ("t", 1): 1,
    }
    assert state["box"] is box  # a mutable record changes in place
    assert ops.apply(state, [ops.set([], [1])]) == [1]


def test_delete_keys_and_items() -> None:
    state = {"a": {"x": 1, "y": 2}, "l": [1, 2, 3, 4]}
    ops.apply(state, [ops.delete("a.x"), ops.delete("l.0"), ops.delete("l[-1]")])
    assert state == {"a": {"y": 2}, "l": [2, 3]}


def test_list_operations() -> None:
    state = {"l": [1]}
    ops.apply(
        state,
        [
            ops.append("l", 2),
            ops.extend("l", [3, 4]),
            ops.insert("l.0", 0),
            ops.insert("l[-1]", 3.5),
            ops.insert(["l", 6], 5),  # at the end: as append
        ],
    )
    assert state == {"l": [0, 1, 2, 3, 3.5, 4, 5]}


@pytest.mark.parametrize(
    ("start", "amount", "result"),
    [
        (1, 2, 3),
        (1, 0.5, 1.5),
        (1.5, 1, 2.5),
        (decimal.Decimal("1.1"), 1, decimal.Decimal("2.1")),
        (1, decimal.Decimal("0.5"), decimal.Decimal("1.5")),
        (2**64, 1, 2**64 + 1),
    ],
)
def test_increment_adds(start: Any, amount: Any, result: Any) -> None:
    state = ops.apply({"n": start}, [ops.increment("n", amount)])
    assert_tree(state, {"n": result})


def test_merge_is_a_shallow_update() -> None:
    state = {"cfg": {"a": 1, "deep": {"x": 1}}}
    ops.apply(state, [ops.merge("cfg", {"deep": {"y": 2}, "b": 2})])
    assert state == {"cfg": {"a": 1, "deep": {"y": 2}, "b": 2}}
    assert list(state["cfg"]) == ["a", "deep", "b"]


def test_tuples_are_rebuilt_in_their_parents() -> None:
    inner = ([1], 2)
    state = {"t": (0, inner, "z")}
    out = ops.apply(
        state,
        [
            ops.set("t.1.1", 20),
            ops.append("t.1.0", 2),  # the list inside stays and changes in place
            ops.increment("t.0", 5),
            ops.delete("t.2"),
        ],
    )
    assert out == {"t": (5, ([1, 2], 20))}
    assert type(out["t"]) is tuple and type(out["t"][1]) is tuple
    assert out["t"][1][0] is inner[0]
    assert ops.apply((1, 2), [ops.set("0", 9)]) == (9, 2)  # a root tuple is replaced


@pytest.mark.parametrize("cls", [FrozenBox, FrozenSBox, FrozenPBox])
def test_frozen_records_are_replaced_in_their_parents(cls: type[Any]) -> None:
    items: list[int] = []
    record = cls(a=1, b=items)
    state = {"r": [record]}
    ops.apply(state, [ops.set("r.0.a", 2), ops.append("r.0.b", 3)])
    assert state["r"][0] == cls(a=2, b=[3])
    assert state["r"][0] is not record and record.a == 1
    assert state["r"][0].b is items  # shallow: other fields are shared, not copied


def test_frozen_dataclass_keeps_fields_set_after_init() -> None:
    record = Frozen(1)
    object.__setattr__(record, "computed", 9)  # as the codec restores an init=False field
    out = ops.apply({"f": record}, [ops.set("f.a", 2)])
    assert out["f"].a == 2 and out["f"].computed == 9


def test_pydantic_field_frozen_alone_is_replaced() -> None:
    class Account(pydantic.BaseModel):
        owner: str = pydantic.Field(frozen=True)
        balance: int

    account = Account(owner="ada", balance=1)
    out = ops.apply({"acc": account}, [ops.set("acc.owner", "bob"), ops.increment("acc.balance")])
    assert out["acc"] == Account(owner="bob", balance=2) and account.owner == "ada"


def test_unknown_records_change_their_fields() -> None:
    record = UnknownRecord("gone:Order", "dataclass", {"status": "new"})
    ops.apply({"o": record}, [ops.set("o.status", "paid")])
    assert record.fields == {"status": "paid"}


def test_root_can_be_any_value() -> None:
    assert ops.apply(1, [ops.increment([], 2)]) == 3
    assert ops.apply([1], [ops.append([], 2), ops.delete([0])]) == [2]
    assert ops.apply(Box(1, 2), [ops.set("a", 5)]) == Box(5, 2)
    assert ops.apply(FrozenBox(1, 2), [ops.set("a", 5)]) == FrozenBox(5, 2)


def test_keys_are_exact_and_the_error_says_how_to_write_a_text_key() -> None:
    state = {"17": "text", 18: "int"}
    with pytest.raises(OpError, match=r'write the path with \["17"\]'):
        ops.apply(state, [ops.delete("17")])
    ops.apply(state, [ops.set('["17"]', "changed"), ops.set("18", "also")])
    assert state == {"17": "changed", 18: "also"}


def test_values_are_copied_in_so_ops_can_be_applied_again() -> None:
    batch = [ops.set("log", []), ops.append("log", {"n": [1]}), ops.append("log.0.n", 2)]
    before = ops.ops_to_value(copy.deepcopy(batch))
    first = ops.apply({}, batch)
    second = ops.apply({}, batch)
    assert first == second == {"log": [{"n": [1, 2]}]}
    assert ops.ops_to_value(batch) == before


def test_copy_values_false_puts_the_ops_own_objects_in() -> None:
    value = {"x": 1}
    state = ops.apply({}, [ops.set("v", value)], copy_values=False)
    assert state["v"] is value


def test_ops_from_any_iterable() -> None:
    assert ops.apply({"n": 1}, (op for op in [ops.increment("n")])) == {"n": 2}


# -- errors ----------------------------------------------------------------------------

ERROR_STATE: dict[Any, Any] = {
    "d": {"a": 1},
    "l": [1, 2],
    "t": (1, 2),
    "s": "text",
    "n": 1,
    "flag": True,
    "dec": decimal.Decimal(1),
    "box": Box(1, 2),
}


@pytest.mark.parametrize(
    ("op", "path", "fragments"),
    [
        (ops.set("missing.x", 1), "missing.x", ["the state root has no key 'missing'"]),
        (ops.set("l.5", 1), "l[5]", ["l has 2 items; there is no [5]", "append or insert"]),
        (ops.set("l.x", 1), "l.x", ["index it with an int"]),
        (ops.set("s.x", 1), "s.x", ["holds str 'text'"]),
        (ops.set("box.c", 1), "box.c", ["Box, which has no field 'c'"]),
        (ops.set("t.2", 1), "t[2]", ["t has 2 items"]),
        (ops.delete("d.b"), "d.b", ["d has no key 'b'"]),
        (ops.delete("l[-3]"), "l[-3]", ["there is no [-3]"]),
        (ops.delete("box.a"), "box.a", ["fields cannot be removed", "Set the field to None"]),
        (ops.append("d", 1), "d", ["append needs a list at d, but found dict"]),
        (ops.append("t", 1), "t", ["append needs a list at t, but found tuple"]),
        (ops.extend("s", [1]), "s", ["extend needs a list"]),
        (ops.insert("l.3", 1), "l[3]", ["l has 2 items; there is no [3]"]),
        (ops.insert("d.0", 1), "d[0]", ["insert needs a list at d"]),
        (ops.increment("s"), "s", ["increment needs an int, float or Decimal", "str 'text'"]),
        (ops.increment("flag"), "flag", ["found bool True"]),
        (ops.increment("d"), "d", ["found dict"]),
        (ops.increment("dec", 0.5), "dec", ["cannot add float 0.5", "Decimals and floats"]),
        (ops.increment("missing"), "missing", ["has no key 'missing'"]),
        (ops.merge("l", {"a": 1}), "l", ["merge needs a dict at l"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_error_names_op_path_and_what_was_found(
    op: ops.Op, path: str, fragments: list[str]
) -> None:
    state = copy.deepcopy(ERROR_STATE)
    with pytest.raises(OpError) as info:
        ops.apply(state, [ops.set("n", 2), op])
    error = info.value
    assert isinstance(error, StateVaultError) and isinstance(error, ValueError)
    assert error.op == ops.tag_of(op)
    assert error.path == path
    assert error.index == 1
    text = str(error)
    assert text.startswith("operation 2 of 2 failed, so none was applied: cannot ")
    assert f" at {path}: " in text
    for fragment in fragments:
        assert fragment in text
    assert_tree(state, ERROR_STATE)


def test_unhashable_merge_key_is_an_op_error() -> None:
    with pytest.raises(OpError, match="not hashable"):
        ops.apply({"d": {}}, [ops.MergeOp(("d",), {}), ops.SetOp(("d", ["x"]), 1)])


def test_not_an_op_is_a_type_error_and_rolls_back() -> None:
    state = {"n": 1}
    with pytest.raises(TypeError, match="not a statevault operation"):
        ops.apply(state, [ops.increment("n"), "set n 3"])  # type: ignore[list-item]
    assert state == {"n": 1}


def test_a_failing_record_validator_rolls_back_too() -> None:
    class Strict(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(validate_assignment=True)
        n: int

    record = Strict(n=1)
    state = {"r": record, "log": []}
    with pytest.raises(pydantic.ValidationError):
        ops.apply(state, [ops.append("log", 1), ops.set("r.n", "not a number")])
    assert state == {"r": Strict(n=1), "log": []}
    assert state["r"] is record


# -- atomic batches --------------------------------------------------------------------

BAD_OPS = [  # fail on every state STATES makes (its dict keys are at most 3 characters)
    ops.append(["no such key", 0], 1),
    ops.increment(["no such key"]),
    ops.delete(["no such key"]),
    ops.set(["no such key", "x"], 1),
]


def _fitting_op(data: st.DataObject, state: Any) -> ops.Op | None:
    """A random operation that fits `state` (drawn from what is in it)."""
    paths = container_paths(state)
    numbers = [
        (*path, key)
        for path in paths
        for key, child in children(get_at(state, path))
        if type(child) in (int, float) and not isinstance(get_at(state, path), set)
    ]
    choices: list[Callable[[], ops.Op | None]] = []
    if numbers:
        choices.append(
            lambda: ops.increment(
                list(data.draw(st.sampled_from(numbers))), data.draw(st.integers(-3, 3))
            )
        )
    path = data.draw(st.sampled_from(paths)) if paths else None
    if path is not None:
        target = get_at(state, path)
        keys = [key for key, _ in children(target)]
        where = list(path)
        if isinstance(target, dict):
            choices.append(
                lambda: ops.set([*where, data.draw(st.text(max_size=2))], data.draw(VALUES))
            )
            choices.append(
                lambda: ops.merge(
                    where, data.draw(st.dictionaries(st.integers(0, 3), VALUES, max_size=2))
                )
            )
        if isinstance(target, list):
            choices.append(lambda: ops.append(where, data.draw(VALUES)))
            choices.append(lambda: ops.extend(where, data.draw(st.lists(VALUES, max_size=2))))
            n = len(target)
            choices.append(
                lambda: ops.insert([*where, data.draw(st.integers(-n, n))], data.draw(VALUES))
            )
        if keys and not isinstance(target, set):
            key = data.draw(st.sampled_from(keys))
            choices.append(lambda: ops.set([*where, key], data.draw(VALUES)))
            if not is_record(target):
                choices.append(lambda: ops.delete([*where, key]))
    if not choices:
        return None
    return data.draw(st.sampled_from(choices))()


@HYPOTHESIS
@given(state=STATES, data=st.data())
def test_a_failing_op_leaves_the_state_exactly_as_it_was(state: Any, data: st.DataObject) -> None:
    original = copy.deepcopy(state)
    scratch = copy.deepcopy(state)
    batch: list[ops.Op] = []
    for _ in range(data.draw(st.integers(0, 8))):
        op = _fitting_op(data, scratch)
        if op is None:
            break
        scratch = ops.apply(scratch, [op])
        batch.append(op)
    assert_tree(ops.apply(copy.deepcopy(original), batch), scratch)

    bad = data.draw(st.sampled_from(BAD_OPS))
    where = data.draw(st.integers(0, len(batch)))
    with pytest.raises(OpError) as info:
        ops.apply(state, [*batch, bad, *batch[where:]])
    assert info.value.index == len(batch)
    assert_tree(state, original)


def test_rollback_restores_dict_order_and_the_objects_themselves() -> None:
    inner = [1]
    state = collections.OrderedDict([("a", 1), ("b", inner), ("c", 3)])
    plain = {"a": 1, "b": inner, "c": 3}
    for target in (state, plain):
        with pytest.raises(OpError):
            ops.apply(
                target,
                [
                    ops.delete("b"),
                    ops.delete("a"),
                    ops.set("b", 2),
                    ops.set("d", 4),
                    ops.delete("c"),
                    ops.append("missing", 1),
                ],
            )
        assert list(target.items()) == [("a", 1), ("b", inner), ("c", 3)]
        assert target["b"] is inner


# -- the stored form -------------------------------------------------------------------

OPS = st.one_of(
    st.builds(
        ops.SetOp, st.lists(st.text(max_size=2) | st.integers(-2, 9), max_size=3).map(tuple), VALUES
    ),
    st.builds(
        ops.DeleteOp,
        st.lists(st.text(max_size=2) | st.integers(0, 9), min_size=1, max_size=3).map(tuple),
    ),
    st.builds(ops.AppendOp, st.tuples(st.text(max_size=2)), VALUES),
    st.builds(
        ops.ExtendOp,
        st.tuples(st.tuples(st.integers(0, 2), st.none())),
        st.lists(VALUES, max_size=3).map(tuple),
    ),
    st.builds(ops.InsertOp, st.tuples(st.text(max_size=2), st.integers(-3, 3)), VALUES),
    st.builds(
        ops.IncrementOp,
        st.tuples(st.none()),
        st.integers() | st.floats(allow_nan=False) | st.decimals(allow_nan=False),
    ),
    st.builds(ops.MergeOp, st.tuples(), st.dictionaries(st.text(max_size=2), VALUES, max_size=3)),
)


@HYPOTHESIS
@given(batch=st.lists(OPS, max_size=6))
def test_stored_form_round_trips_through_the_codec(batch: list[ops.Op]) -> None:
    value = ops.ops_to_value(batch)
    assert value[0] == ops.OPS_FORMAT
    assert ops.ops_from_value(value) == batch
    back = ops.ops_from_value(roundtrip(value))
    assert back == batch
    for mine, theirs in zip(batch, back, strict=True):
        assert type(mine) is type(theirs)
        assert_tree(list(msgspec.structs.astuple(mine)), list(msgspec.structs.astuple(theirs)))


def test_stored_form_is_plain_and_readable() -> None:
    value = ops.ops_to_value(
        [
            ops.set("order.status", "paid"),
            ops.delete("jobs.3"),
            ops.extend("rows", [1]),
            ops.increment("n", 2),
            ops.merge("cfg", {"a": 1}),
            ops.insert("q.0", "x"),
            ops.append([("k", 1)], (1, 2)),
        ]
    )
    assert value == [
        1,
        ["set", ["order", "status"], "paid"],
        ["delete", ["jobs", 3]],
        ["extend", ["rows"], [1]],
        ["increment", ["n"], 2],
        ["merge", ["cfg"], {"a": 1}],
        ["insert", ["q", 0], "x"],
        ["append", [("k", 1)], (1, 2)],
    ]
    assert CODEC.decode(CODEC.encode(value)) == value


def test_msgspec_writes_an_op_in_the_same_shape() -> None:
    op = ops.set("a.0", "x")
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(op)) == ["set", ["a", 0], "x"]


def test_newer_format_is_refused() -> None:
    with pytest.raises(UnsupportedFormatError, match="formats up to 1"):
        ops.ops_from_value([2, ["delete", ["a"]]])


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        {"v": 1},
        [0],
        ["1"],
        [True],
        [1, "set"],
        [1, []],
        [1, [7, ["a"]]],
        [1, ["nope", ["a"]]],
        [1, ["set", ["a"]]],
        [1, ["set", "a", 1]],
        [1, ["delete", ["a"], 1]],
        [1, ["extend", ["a"], 1]],
        [1, ["merge", ["a"], [1]]],
        [1, ["increment", ["a"], "1"]],
        [1, ["insert", ["a"], 1]],
    ],
)
def test_malformed_stored_ops_are_corruption(value: Any) -> None:
    with pytest.raises(CorruptionError):
        ops.ops_from_value(value)


def test_ops_to_value_refuses_other_objects() -> None:
    with pytest.raises(TypeError):
        ops.ops_to_value([("set", ["a"], 1)])  # type: ignore[list-item]


# -- cost ------------------------------------------------------------------------------


def _best_of(runs: int, action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def test_one_append_to_a_million_item_list_costs_microseconds() -> None:
    state = {"log": list(range(1_000_000)), "meta": {"runs": dict.fromkeys(range(1000), 1)}}
    batch = [ops.append("log", {"n": 1}), ops.increment("meta.runs.999")]
    assert _best_of(5, lambda: ops.apply(state, batch)) < 0.005
    assert len(state["log"]) == 1_000_005

    failing = [ops.append("log", 1), ops.delete("meta.runs.0"), ops.delete("nope")]

    def fail() -> None:
        with pytest.raises(OpError):
            ops.apply(state, failing)

    assert _best_of(5, fail) < 0.005
    assert len(state["log"]) == 1_000_005 and next(iter(state["meta"]["runs"])) == 0


def test_copy_value_does_not_keep_sharing() -> None:
    shared = [1]
    copied = ops.copy_value({"a": shared, "b": shared, "t": (shared,), "box": Box(shared, 1)})
    assert copied == {"a": [1], "b": [1], "t": ([1],), "box": Box([1], 1)}
    assert copied["a"] is not copied["b"] and copied["a"] is not shared
    assert copied["t"][0] is not shared and copied["box"].a is not shared
    immutable = ("x", 1, frozenset({2}))
    assert ops.copy_value(immutable) == immutable
    assert ops.copy_value(PBox(a=[1], b=2)) == PBox(a=[1], b=2)


def test_path_text_shows_any_key() -> None:
    assert ops.path_text(["a", 1, "x.y", "17", ("k", 1), None]) == (
        'a[1]["x.y"]["17"][(\'k\', 1)][None]'
    )
    assert ops.path_text([]) == ""


def test_rollback_restores_a_pydantic_models_fields_set() -> None:
    class Options(pydantic.BaseModel):
        a: int = 0

    record = Options()
    with pytest.raises(OpError):
        ops.apply({"r": record}, [ops.set("r.a", 5), ops.delete("missing")])
    assert record.a == 0 and record.model_fields_set == set()


def test_paths_through_unknown_records_and_unhashable_keys() -> None:
    record = UnknownRecord("gone:Order", "dataclass", {"lines": [1]})
    state = {"o": record, "d": {}}
    ops.apply(state, [ops.append("o.lines", 2)])
    assert record.fields == {"lines": [1, 2]}
    with pytest.raises(OpError, match="not hashable"):
        ops.apply(state, [ops.SetOp(("d", ["x"], "y"), 1)])
    with pytest.raises(OpError, match="has no field 'other'"):
        ops.apply(state, [ops.set("o.other", 1)])


def test_apply_without_atomic_skips_the_undo_log() -> None:
    state = {"rows": [1], "n": 0}
    batch = [ops.append("rows", 2), ops.increment("missing")]
    with pytest.raises(ops.OpError):
        ops.apply(state, batch)
    assert state == {"rows": [1], "n": 0}, "atomic by default: rolled back"
    with pytest.raises(ops.OpError):
        ops.apply(state, batch, atomic=False)
    assert state == {"rows": [1, 2], "n": 0}, "the first operation stays"
    assert ops.apply(state, [ops.increment("n")], atomic=False) == {"rows": [1, 2], "n": 1}
