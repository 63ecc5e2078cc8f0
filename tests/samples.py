"""Sample values and types shared by the tests: every kind of value statevault stores."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import math
import pathlib
import uuid
import zoneinfo
from typing import Any

import msgspec
import numpy as np
import pydantic

from statevault.codec.encoding import Codec
from statevault.codec.registry import TypeRegistry


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Perm(enum.Flag):
    R = 4
    W = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Item:
    sku: str
    qty: int
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: int
    computed: int = dataclasses.field(init=False, default=0)


class Order(msgspec.Struct):
    id: str
    items: list[Item]
    status: Color = Color.RED


class Customer(pydantic.BaseModel):
    name: str
    since: dt.date


SAMPLE_TYPES: tuple[type[Any], ...] = (Color, Perm, Level, Item, Frozen, Order, Customer)


def make_codec(unknown: str = "error") -> Codec:
    registry = TypeRegistry()
    for cls in SAMPLE_TYPES:
        registry.register(cls)
    return Codec(registry, unknown_types=unknown)  # type: ignore[arg-type]


CODEC = make_codec()


def assert_same(a: Any, b: Any, path: str = "state") -> None:
    """Equal values of identical types, recursively (1 is not 1.0, a tuple is not a list)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} came back as {type(b).__name__}"
    if isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), path
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, (dt.datetime, dt.time)):
        assert a == b and a.fold == b.fold, path
        assert a.utcoffset() == b.utcoffset() if isinstance(a, dt.datetime) else True, path
        assert str(a.tzinfo) == str(b.tzinfo), path
    elif isinstance(a, decimal.Decimal):
        assert str(a) == str(b), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), path
    else:
        assert a == b, path


def roundtrip(value: Any, codec: Codec = CODEC) -> Any:
    return codec.decode(codec.encode(value))


EXAMPLES: list[Any] = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64,
    2**200,
    -(2**100),
    1.5,
    float("inf"),
    float("nan"),
    -0.0,
    "",
    "héllo wörld 🚀",
    b"",
    b"\x00\xff" * 10,
    (),
    (1, (2, "x")),
    [1, [2, [3]]],
    {1, 2, 3},
    frozenset({"a", (1, 2)}),
    {"nested": {"dict": {"deep": [1, {"x": (1,)}]}}},
    {1: "int key", (1, "a"): "tuple key", None: "none key", 2.5: "float key", b"k": "bytes"},
    dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=-3), "BRT")),
    dt.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    dt.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    dt.date(1, 1, 1),
    dt.time(23, 59, 59, 1),
    dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("1.10"),
    decimal.Decimal("-0.000"),
    decimal.Decimal("1E+3"),
    decimal.Decimal("Infinity"),
    fractions.Fraction(-7, 3),
    complex(1.5, -2),
    pathlib.PurePosixPath("/etc/x"),
    pathlib.Path("relative/dir"),
    pathlib.PureWindowsPath("C:\\Users\\x"),
    collections.OrderedDict([("b", 1), ("a", 2)]),
    Color.GREEN,
    Perm.R | Perm.W,
    Level.HIGH,
    Item("sku-1", 2, ("a", "b")),
    Order("o-1", [Item("s", 1)], Color.GREEN),
    Customer(name="Ada", since=dt.date(2020, 1, 1)),
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.zeros((0, 3), dtype=np.int64),
    np.array([[1 + 2j]], dtype=np.complex128),
    np.array(["ab", "c"]),
    np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    np.arange(10)[::3],
    np.asfortranarray(np.arange(6).reshape(2, 3)),
    np.float64(2.5),
    np.int8(-3),
    np.bool_(True),
]
