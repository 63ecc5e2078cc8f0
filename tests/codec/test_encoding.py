"""Values round-trip exactly: same value, same type, all the way down."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import subprocess
import sys
import threading
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samples import CODEC, EXAMPLES, Color, Frozen, Item, Level, Order, Perm, assert_same, roundtrip
from statevault.codec.encoding import Codec, UnknownRecord
from statevault.codec.registry import TypeRegistry
from statevault.errors import CorruptionError, SerializationError, UnknownTypeError


@pytest.mark.parametrize("value", EXAMPLES, ids=lambda v: type(v).__name__)
def test_examples_roundtrip_exactly(value: Any) -> None:
    assert_same(value, roundtrip(value))


def test_frozen_dataclass_with_init_false_field() -> None:
    value = Frozen(3)
    object.__setattr__(value, "computed", 9)
    back = roundtrip(value)
    assert back == value and back.computed == 9


def test_memoryview_and_bytearray_come_back_as_bytes() -> None:
    assert roundtrip({"m": memoryview(b"abc"), "b": bytearray(b"xy")}) == {"m": b"abc", "b": b"xy"}


def test_shared_references_are_stored_as_copies() -> None:
    shared = [1, 2]
    back = roundtrip({"a": shared, "b": shared})
    assert back == {"a": [1, 2], "b": [1, 2]}


# -- property-based ---------------------------------------------------------------

hashables = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.uuids()
    | st.dates(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)

timezones = (
    st.none()
    | st.just(dt.UTC)
    | st.timezones()
    | st.builds(
        dt.timezone,
        st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)),
    )
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=timezones)
    | st.dates()
    | st.times(timezones=st.none() | st.just(dt.UTC))
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.fractions()
    | st.complex_numbers(allow_nan=False)
    | st.sampled_from(list(Color) + list(Level))
)

values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=10) | st.integers() | hashables, inner, max_size=5)
        | st.sets(hashables, max_size=4)
        | st.builds(Item, st.text(max_size=5), st.integers(), st.tuples(st.text(max_size=3)))
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_any_value_roundtrips_exactly(value: Any) -> None:
    assert_same(value, roundtrip(value))


@settings(max_examples=200, deadline=None)
@given(values)
def test_encoding_is_deterministic(value: Any) -> None:
    assert CODEC.encode(value) == CODEC.encode(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_decodes_to_an_untyped_error(data: bytes) -> None:
    with contextlib.suppress(CorruptionError, SerializationError):
        CODEC.decode(data)


# -- what cannot be stored --------------------------------------------------------


class Unregistered:
    pass


@dataclasses.dataclass
class NotRegistered:
    x: int


@pytest.mark.parametrize(
    ("state", "path", "words"),
    [
        ({"jobs": [0, 1, 2, {"callback": print}]}, "state['jobs'][3]['callback']", "function"),
        ({"jobs": [{"fn": lambda: 1}]}, "state['jobs'][0]['fn']", "function"),
        ({"obj": Unregistered()}, "state['obj']", "register"),
        ({"dc": NotRegistered(1)}, "state['dc']", "statevault.register(NotRegistered)"),
        ({"lock": threading.Lock()}, "state['lock']", "lock"),
        ({"gen": (i for i in range(3))}, "state['gen']", "generator"),
        ({"cls": int}, "state['cls']", "class"),
        ({"arr": np.array([object()], dtype=object)}, "state['arr']", "dtype=object"),
        ({"s": "\udc80"}, "state['s']", "UTF-8"),
        ({"t": (1, [2, {"deep": print}])}, "state['t'][1][1]['deep']", "function"),
        ({"item": Item("x", 1, (print,))}, "state['item'].tags[0]", "function"),  # type: ignore[arg-type]
        ({"k": {(1, print): 1}}, "state['k'] key", "function"),
    ],
)
def test_unstorable_values_name_their_path(state: Any, path: str, words: str) -> None:
    with pytest.raises(SerializationError) as caught:
        CODEC.encode(state)
    message = str(caught.value)
    assert path in message, message
    assert words in message, message


def test_cycles_are_refused_with_a_path() -> None:
    state: dict[str, Any] = {"a": {"b": []}}
    state["a"]["b"].append(state)
    with pytest.raises(SerializationError) as caught:
        CODEC.encode(state)
    assert "cycle" in str(caught.value)
    assert "state['a']['b'][0]" in str(caught.value)


def test_subclasses_of_builtins_are_refused() -> None:
    class Tagged(str):
        pass

    with pytest.raises(SerializationError, match="subclass of str"):
        CODEC.encode({"x": Tagged("a")})


# -- loading never runs unregistered code -----------------------------------------


def test_unregistered_record_on_load_is_refused() -> None:
    data = CODEC.encode({"item": Item("s", 1)})
    bare = Codec(TypeRegistry())
    with pytest.raises(UnknownTypeError) as caught:
        bare.decode(data)
    assert caught.value.type_name.endswith(":Item")


def test_unknown_records_can_be_kept_and_saved_back_unchanged() -> None:
    data = CODEC.encode({"order": Order("o", [Item("s", 1)]), "c": Color.RED, "p": Perm.R | Perm.W})
    keeper = Codec(TypeRegistry(), unknown_types="keep")
    loaded = keeper.decode(data)
    assert isinstance(loaded["order"], UnknownRecord)
    assert loaded["order"].fields["id"] == "o"
    assert loaded["c"] == UnknownRecord(loaded["c"].type_name, "enum", {"name": "RED"})
    assert keeper.encode(loaded) == data


def test_registered_names_survive_moves() -> None:
    old = TypeRegistry()
    old.register(Item, name="shop.Item")

    @dataclasses.dataclass
    class MovedItem:
        sku: str
        qty: int
        tags: tuple[str, ...] = ()

    new = TypeRegistry()
    new.register(MovedItem, name="shop.Item")
    back = Codec(new).decode(Codec(old).encode(Item("a", 1)))
    assert back == MovedItem("a", 1)


def test_changed_record_shape_gives_a_clear_error() -> None:
    old = TypeRegistry()
    old.register(Item, name="shop.Item")

    @dataclasses.dataclass
    class Renamed:
        code: str

    new = TypeRegistry()
    new.register(Renamed, name="shop.Item")
    with pytest.raises(SerializationError, match="does not fit the registered class"):
        Codec(new).decode(Codec(old).encode(Item("a", 1)))


def test_register_refuses_other_classes_and_name_clashes() -> None:
    registry = TypeRegistry()
    with pytest.raises(TypeError, match="can register"):
        registry.register(Unregistered)
    registry.register(Item, name="x")
    with pytest.raises(TypeError, match="already registered"):
        registry.register(NotRegistered, name="x")
    assert registry.register(Item, name="x") is Item  # same class again is fine


def test_unknown_ext_code_is_corruption() -> None:
    with pytest.raises(CorruptionError, match="unknown extension"):
        CODEC.decode(msgpack.packb(msgpack.ExtType(99, b"")))


def test_sets_encode_the_same_in_every_process() -> None:
    script = (
        "from statevault.codec.encoding import Codec;"
        "from statevault.codec.registry import TypeRegistry;"
        "print(Codec(TypeRegistry()).encode({'s': {'alpha', 'beta', 'gamma', 'delta', 1, (2, 'x')},"
        " 'f': frozenset({'x', 'y', 'z'})}).hex())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={"PYTHONHASHSEED": str(seed), "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(1, 6)
    }
    assert len(outputs) == 1
