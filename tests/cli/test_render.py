"""How `statevault show` writes values: as text that keeps types, and as JSON."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import fractions
import json
import pathlib
import uuid
import zoneinfo
from typing import Any

import numpy as np
import pytest

from statevault import UnknownRecord
from statevault.cli.render import render, to_json


def text(value: Any, **kwargs: Any) -> str:
    return render(value, **kwargs).plain


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "None"),
        (True, "True"),
        (3, "3"),
        (2.5, "2.5"),
        ("a'b", '"a\'b"'),
        ([], "[]"),
        ((), "()"),
        ((1,), "(1,)"),
        ((1, [2]), "(1, [2])"),
        (set(), "set()"),
        ({"b", "a"}, "{'a', 'b'}"),
        ({1, "a"}, None),  # unorderable members: shown in their own order
        (frozenset(), "frozenset()"),
        (frozenset({2, 1}), "frozenset({1, 2})"),
        (collections.OrderedDict(a=1), "OrderedDict({'a': 1})"),
        ({1: "x", "1": "y"}, "{1: 'x', '1': 'y'}"),
        ({(1, 2): None}, "{(1, 2): None}"),
        (decimal.Decimal("1.10"), "Decimal('1.10')"),
        (fractions.Fraction(1, 3), "Fraction(1, 3)"),
        (dt.date(2024, 1, 2), "date(2024-01-02)"),
        (dt.time(9, 5), "time(09:05:00, naive)"),
        (dt.timedelta(days=1, seconds=5), "timedelta(days=1, seconds=5)"),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "datetime(2024-01-02 03:04:05, naive)"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), "datetime(2024-01-02 03:04:05+00:00)"),
        (uuid.UUID(int=1), "UUID('00000000-0000-0000-0000-000000000001')"),
        (pathlib.PurePosixPath("/a/b"), "PurePosixPath('/a/b')"),
        (b"", "bytes[0]"),
        (b"abc", "bytes[3] b'abc'"),
        (bytes(100), "bytes[100] b'" + "\\x00" * 16 + "'…"),
        (np.float32(1.5), "float32(1.5)"),
        (np.zeros((2, 0)), "ndarray(dtype=float64, shape=(2, 0))"),
        (UnknownRecord("app.Order", "dataclass", {"id": 1}), "app.Order(id=1)"),
        (UnknownRecord("app.Color", "enum", {"name": "RED"}), "app.Color.RED"),
        (UnknownRecord("app.Level", "enum", {"value": 2}), "app.Level(2)"),
    ],
)
def test_text(value: Any, shown: str | None) -> None:
    out = text(value)
    if shown is not None:
        assert out == shown
    else:
        assert out.startswith("{")


def test_zoneinfo_datetime_names_its_zone() -> None:
    when = dt.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    assert text(when) == "datetime(2024-07-01 12:00:00+02:00 Europe/Paris)"


def test_flat_when_it_fits_else_one_item_a_line() -> None:
    value = {"short": [1, 2, 3], "long": ["x" * 30, "y" * 30, "z" * 30]}
    assert text(value, width=200) == repr(value)
    lines = text(value, width=60).splitlines()
    assert lines[0] == "{"
    assert lines[1] == "    'short': [1, 2, 3],"
    assert lines[2] == "    'long': ["
    assert lines[3] == "        '" + "x" * 30 + "',"
    assert lines[-1] == "}"
    assert all(len(line) <= 60 for line in lines)


def test_max_items() -> None:
    assert text(list(range(10)), max_items=3) == "[0, 1, 2, … 7 more]"
    assert text({i: i for i in range(5)}, max_items=1) == "{0: 0, … 4 more}"
    assert text(list(range(10)), max_items=0) == repr(list(range(10)))


def test_json_types() -> None:
    value = {
        "when": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        "naive": dt.datetime(2024, 1, 2),
        "day": dt.date(2024, 1, 2),
        "money": decimal.Decimal("0.10"),
        "t": (1, (2, 3)),
        "s": {"b", "a"},
        "fs": frozenset({3, 1}),
        "raw": b"\x00\xff",
        "id": uuid.UUID(int=1),
        "frac": fractions.Fraction(1, 3),
        "z": complex(1, -2),
        "p": pathlib.PurePosixPath("/a"),
        "huge": 2**80,
        "arr": np.array([[1, 2]], dtype=np.uint8),
        "scalar": np.int64(7),
        "rec": UnknownRecord("app.Order", "struct", {"id": 1, "tags": ("a",)}),
        "enum": UnknownRecord("app.Color", "enum", {"name": "RED"}),
        1: "int key",
        (1, 2): "tuple key",
        None: "none key",
    }
    data = json.loads(to_json(value))
    assert data["when"] == "2024-01-02T03:04:05-05:00"
    assert data["naive"] == "2024-01-02T00:00:00"
    assert data["day"] == "2024-01-02"
    assert data["money"] == "0.10"
    assert data["t"] == [1, [2, 3]]
    assert data["s"] == ["a", "b"]
    assert data["fs"] == [1, 3]
    assert data["raw"] == "AP8="
    assert data["id"] == "00000000-0000-0000-0000-000000000001"
    assert data["frac"] == "1/3"
    assert data["z"] == [1.0, -2.0]
    assert data["p"] == "/a"
    assert data["huge"] == 2**80
    assert data["arr"] == {"dtype": "uint8", "shape": [1, 2], "data": [[1, 2]]}
    assert data["scalar"] == 7
    assert data["rec"] == {"$type": "app.Order", "id": 1, "tags": ["a"]}
    assert data["enum"] == {"$type": "app.Color", "name": "RED"}
    assert data["1"] == "int key"
    assert data["(1, 2)"] == "tuple key"
    assert data["null"] == "none key"


def test_json_large_array_has_no_data() -> None:
    data = json.loads(to_json(np.zeros((100, 100))))
    assert data == {"dtype": "float64", "shape": [100, 100]}
