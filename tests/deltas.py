"""Shared by the tests of delta operations and tracked views: records of every kind,
random nested states, and helpers that walk them without statevault's own code."""

from __future__ import annotations

import collections
import dataclasses
import decimal
from typing import Any

import msgspec
import pydantic
from hypothesis import strategies as st

from samples import assert_same
from statevault.codec.encoding import Codec
from statevault.codec.registry import TypeRegistry


@dataclasses.dataclass
class Box:
    a: Any
    b: Any


@dataclasses.dataclass(frozen=True)
class FrozenBox:
    a: Any
    b: Any


class SBox(msgspec.Struct):
    a: Any
    b: Any


class FrozenSBox(msgspec.Struct, frozen=True):
    a: Any
    b: Any


class PBox(pydantic.BaseModel):
    a: Any
    b: Any


class FrozenPBox(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True)
    a: Any
    b: Any


RECORDS: tuple[type[Any], ...] = (Box, FrozenBox, SBox, FrozenSBox, PBox, FrozenPBox)
FROZEN: tuple[type[Any], ...] = (FrozenBox, FrozenSBox, FrozenPBox)
FIELDS = ("a", "b")

_registry = TypeRegistry()
for _cls in RECORDS:
    _registry.register(_cls)
CODEC = Codec(_registry)

# -- random states -----------------------------------------------------------------------

KEYS = (
    st.text(max_size=2)
    | st.integers(-3, 5)
    | st.tuples(st.integers(0, 2), st.text(max_size=1))
    | st.none()
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-50, 50)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=4)
    | st.binary(max_size=3)
    | st.decimals(places=1, min_value=-10, max_value=10)
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(inner, max_size=4)
        | st.dictionaries(KEYS, inner, max_size=4)
        | st.dictionaries(KEYS, inner, max_size=3).map(collections.OrderedDict)
        | st.tuples(inner, inner)
        | st.sets(st.integers(0, 6), max_size=4)
        | st.builds(Box, inner, inner)
        | st.builds(FrozenBox, inner, inner)
        | st.builds(SBox, inner, inner)
        | st.builds(FrozenSBox, inner, inner)
        | st.builds(PBox, a=inner, b=inner)
        | st.builds(FrozenPBox, a=inner, b=inner)
    )


VALUES = st.recursive(SCALARS, _containers, max_leaves=6)
NESTED = st.recursive(SCALARS, _containers, max_leaves=18)
STATES = st.dictionaries(st.text(max_size=3), NESTED, max_size=5) | NESTED
"""Mostly dicts at the root, as workflow state is; sometimes any value."""

# -- walking states without statevault ---------------------------------------------------


def is_record(value: Any) -> bool:
    return isinstance(value, RECORDS)


def is_container(value: Any) -> bool:
    return isinstance(value, (dict, list, tuple, set)) or is_record(value)


def children(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    if is_record(value):
        return [(name, getattr(value, name)) for name in FIELDS]
    return []


def container_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every container in `value`, root first."""
    if not is_container(value):
        return []
    out = [path]
    for key, child in children(value):
        out += container_paths(child, (*path, key))
    return out


def get_at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = getattr(value, key) if is_record(value) else value[key]
    return value


def put_at(root: Any, path: tuple[Any, ...], new: Any) -> Any:
    """`root` with `new` at `path`, rebuilding tuples and frozen records on the way up."""
    if not path:
        return new
    key, rest = path[0], path[1:]
    child = get_at(root, (key,))
    changed = put_at(child, rest, new)
    if isinstance(root, (dict, list)):
        root[key] = changed
        return root
    if isinstance(root, tuple):
        return (*root[:key], changed, *root[key + 1 :])
    if isinstance(root, FrozenBox):
        return dataclasses.replace(root, **{key: changed})
    if isinstance(root, FrozenSBox):
        return msgspec.structs.replace(root, **{key: changed})
    if isinstance(root, FrozenPBox):
        return root.model_copy(update={key: changed})
    setattr(root, key, changed)
    return root


def assert_tree(a: Any, b: Any, path: str = "state") -> None:
    """Equal values of identical types all the way down, records and dict order included."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if is_record(a):
        for name in FIELDS:
            assert_tree(getattr(a, name), getattr(b, name), f"{path}.{name}")
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), f"{path}: keys {list(a)} vs {list(b)}"
        for (key, x), y in zip(a.items(), b.values(), strict=True):
            assert_tree(x, y, f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, decimal.Decimal):
        assert str(a) == str(b), path
    else:
        assert_same(a, b, path)


def roundtrip(value: Any) -> Any:
    """`value` through statevault's codec: what the journal would give back."""
    return CODEC.decode(CODEC.encode(value))
