"""Property tests: random pairs of schema versions, random states of the old one.

A random record type (scalars, Literals, optionals, lists, maps, nested records) is
changed at random: fields added, removed, renamed, retyped safely (int -> float,
T -> T | None, a Literal gaining values) and unsafely (narrowed, unrelated types),
nested records changed recursively. For every pair the proposed module compiles;
when the diff says it is automatic, it turns every sampled old state into a state
the new type accepts, keeping the values of fields that did not change.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from proposals import confirm_renames, function_of, schema_of

from statevault.schema_tools import collect_field_values, diff_schemas, propose_migration

_names = itertools.count()

SCALARS: list[Any] = [int, float, str, bool, Literal["a", "b"], Literal["a", "b", "c"]]
DEFAULTS: dict[Any, Any] = {int: 0, float: 0.5, str: "x", bool: False}


@dataclass(frozen=True)
class Pair:
    old: type[Any]
    new: type[Any]
    kept: frozenset[str]  # root fields whose values must come through unchanged


def record(fields: list[tuple[str, Any]], defaults: dict[str, Any] | None = None) -> type[Any]:
    defaults = defaults or {}
    spec: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        (name, tp, defaults[name]) if name in defaults else (name, tp) for name, tp in fields
    ]
    return msgspec.defstruct(f"R{next(_names)}", spec, kw_only=True, forbid_unknown_fields=True)


def is_record(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


@st.composite
def field_types(draw: st.DrawFn, depth: int = 0) -> Any:
    if depth >= 2:
        return draw(st.sampled_from(SCALARS))
    kind = draw(st.sampled_from(["scalar", "scalar", "optional", "list", "map", "record"]))
    if kind == "scalar":
        return draw(st.sampled_from(SCALARS))
    inner = draw(field_types(depth + 1))
    if kind == "optional":
        return inner | None
    if kind == "list":
        return list[inner]  # type: ignore[valid-type]
    if kind == "map":
        return dict[str, inner]  # type: ignore[valid-type]
    return draw(records(depth + 1))


@st.composite
def records(draw: st.DrawFn, depth: int = 0) -> type[Any]:
    count = draw(st.integers(1, 4))
    return record([(f"field{i}", draw(field_types(depth))) for i in range(count)])


def default_for(tp: Any) -> Any:
    if tp in DEFAULTS:
        return DEFAULTS[tp]
    if getattr(tp, "__origin__", None) is Literal:
        return tp.__args__[0]
    return None


@st.composite
def changed_type(draw: st.DrawFn, tp: Any) -> Any:
    """`tp` after a random change: kept, widened, narrowed, nested change or unrelated."""
    if is_record(tp):
        return draw(st.sampled_from([tp, draw(changed_record(tp)), str]))
    origin = getattr(tp, "__origin__", None)
    if origin is list:
        return list[draw(changed_type(tp.__args__[0]))]  # type: ignore[misc]
    if origin is dict:
        return dict[str, draw(changed_type(tp.__args__[1]))]  # type: ignore[misc]
    options: list[Any] = [tp, tp | None, bytes]
    if tp is int:
        options.append(float)
    if tp is str:
        options.append(Literal["a", "b"])
    if tp == Literal["a", "b"]:
        options += [Literal["a", "b", "c"], Literal["a"], str]
    return draw(st.sampled_from(options))


@st.composite
def changed_record(draw: st.DrawFn, old: type[Any]) -> type[Any]:
    fields: list[tuple[str, Any]] = []
    defaults: dict[str, Any] = {}
    for name, tp in zip(old.__struct_fields__, old.__annotations__.values(), strict=True):
        action = draw(st.sampled_from(["keep", "keep", "change", "remove", "rename"]))
        if action == "keep":
            fields.append((name, tp))
        elif action == "change":
            fields.append((name, draw(changed_type(tp))))
        elif action == "rename":
            fields.append((f"{name}_renamed", tp))
    for i in range(draw(st.integers(0, 2))):
        tp = draw(st.sampled_from(SCALARS))
        if draw(st.booleans()):
            defaults[f"added{i}"] = default_for(tp)
        fields.append((f"added{i}", tp))
    return record(fields, defaults)


@st.composite
def pairs(draw: st.DrawFn) -> Pair:
    old = draw(records())
    new = draw(changed_record(old))
    old_fields = dict(zip(old.__struct_fields__, old.__annotations__.values(), strict=True))
    new_fields = dict(zip(new.__struct_fields__, new.__annotations__.values(), strict=True))
    kept = frozenset(
        name for name, tp in new_fields.items() if old_fields.get(name) == tp and not is_record(tp)
    )
    return Pair(old, new, kept)


def values_of(tp: Any) -> st.SearchStrategy[Any]:
    """Plain values valid under `tp`, as a migration receives them."""
    if is_record(tp):
        return st.fixed_dictionaries(
            {
                name: values_of(field)
                for name, field in zip(
                    tp.__struct_fields__, tp.__annotations__.values(), strict=True
                )
            }
        )
    origin = getattr(tp, "__origin__", None)
    if tp is int:
        return st.integers(-(2**40), 2**40)
    if tp is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if tp is str:
        return st.sampled_from(["a", "b", "c", "text"])
    if tp is bool:
        return st.booleans()
    if origin is Literal:
        return st.sampled_from(tp.__args__)
    if origin is list:
        return st.lists(values_of(tp.__args__[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.sampled_from(["k1", "k2"]), values_of(tp.__args__[1]), max_size=2)
    args = getattr(tp, "__args__", ())
    if type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return st.none() | values_of(inner)
    raise AssertionError(f"no values for {tp!r}")


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_automatic_proposals_migrate_every_old_state_validly(data: st.DataObject) -> None:
    pair = data.draw(pairs())
    states = data.draw(st.lists(values_of(pair.old), min_size=1, max_size=4))
    for state in states:
        msgspec.convert(state, pair.old)  # the sample is valid under the old type
    old_schema, new_schema = schema_of(pair.old), schema_of(pair.new)
    diff = diff_schemas(
        old_schema, new_schema, stored_values=collect_field_values(old_schema, states)
    )
    source = propose_migration("random", 1, 2, diff)
    function = function_of(source)  # compiles, decorator line included
    event("automatic" if diff.automatic else "needs a person")
    if not diff.automatic:
        return
    for state in states:
        before = {name: state[name] for name in pair.kept}
        migrated = function(copy.deepcopy(state))
        msgspec.convert(migrated, pair.new)
        assert {name: migrated[name] for name in pair.kept} == before


@st.composite
def safely_changed_type(draw: st.DrawFn, tp: Any) -> Any:
    """`tp` after a change the diff must decide alone, nested records changed too."""
    if is_record(tp):
        return draw(safely_changed_record(tp))
    origin = getattr(tp, "__origin__", None)
    if origin is list:
        return list[draw(safely_changed_type(tp.__args__[0]))]  # type: ignore[misc]
    if origin is dict:
        return dict[str, draw(safely_changed_type(tp.__args__[1]))]  # type: ignore[misc]
    options: list[Any] = [tp, tp | None]
    if tp is int:
        options.append(float)
    if tp == Literal["a", "b"]:
        options += [Literal["a", "b", "c"], str]
    return draw(st.sampled_from(options))


@st.composite
def safely_changed_record(draw: st.DrawFn, old: type[Any]) -> type[Any]:
    fields: list[tuple[str, Any]] = []
    for name, tp in zip(old.__struct_fields__, old.__annotations__.values(), strict=True):
        action = draw(st.sampled_from(["keep", "change", "change", "remove"]))
        if action == "keep":
            fields.append((name, tp))
        elif action == "change":
            fields.append((name, draw(safely_changed_type(tp))))
    # Added fields take a type no generated field has, so none can pass for a rename.
    defaults = {f"added{i}": None for i in range(draw(st.integers(0, 2)))}
    fields += [(name, bytes | None) for name in defaults]
    return record(fields, defaults)


@st.composite
def records_with_nesting(draw: st.DrawFn) -> type[Any]:
    nested = draw(records(depth=1))
    wrap = draw(st.sampled_from(["plain", "list", "map", "optional"]))
    holder: Any = {
        "plain": nested,
        "list": list[nested],  # type: ignore[valid-type]
        "map": dict[str, nested],  # type: ignore[valid-type]
        "optional": nested | None,
    }[wrap]
    return record([("id", int), ("nested", holder)])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_safe_changes_at_any_depth_are_automatic_and_migrate(data: st.DataObject) -> None:
    old = data.draw(records_with_nesting() | records())
    new = data.draw(safely_changed_record(old))
    states = data.draw(st.lists(values_of(old), min_size=1, max_size=3))
    diff = diff_schemas(schema_of(old), schema_of(new))
    assert diff.automatic, diff.todos()
    function = function_of(propose_migration("random", 1, 2, diff))
    for state in states:
        msgspec.convert(function(copy.deepcopy(state)), new)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_confirmed_renames_keep_their_values(data: st.DataObject) -> None:
    old = data.draw(records())
    fields = zip(old.__struct_fields__, old.__annotations__.values(), strict=True)
    renamed = record([(f"{name}_renamed", tp) for name, tp in fields])
    state = data.draw(values_of(old))
    diff = diff_schemas(schema_of(old), schema_of(renamed))
    source = confirm_renames(propose_migration("random", 1, 2, diff))
    migrated = function_of(source)(dict(state))
    assert migrated == {f"{name}_renamed": value for name, value in state.items()}
