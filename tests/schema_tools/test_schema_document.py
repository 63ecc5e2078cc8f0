"""SchemaReader: references, structural equality, type names, and value checks."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from proposals import schema_of

from statevault.schema_tools.document import SchemaReader


class Inner(msgspec.Struct):
    a: int


class Outer(msgspec.Struct):
    inner: Inner
    many: list[Inner]
    maybe: str | None
    pair: tuple[int, str]
    level: Literal["low", "high"]
    counts: dict[str, float]
    when: dt.date
    blob: bytes
    tags: frozenset[str]


def test_type_names_read_like_python() -> None:
    doc = SchemaReader(schema_of(Outer))
    _, outer = doc.resolve(doc.root)
    assert isinstance(outer, dict)
    names = {field: doc.type_name(node) for field, node in outer["properties"].items()}
    assert names == {
        "inner": "Inner",
        "many": "list[Inner]",
        "maybe": "str | None",
        "pair": "tuple[int, str]",
        "level": "Literal['high', 'low']",  # msgspec sorts the values
        "counts": "dict[str, float]",
        "when": "date",
        "blob": "bytes",
        "tags": "set[str]",
    }


def test_canonical_ignores_annotations_and_order_but_not_constraints() -> None:
    a = SchemaReader(
        {
            "title": "A",
            "type": "object",
            "properties": {"x": {"type": "integer", "description": "d"}, "y": {"enum": [1, 2]}},
            "required": ["x", "y"],
        }
    )
    b = SchemaReader(
        {
            "type": "object",
            "properties": {"y": {"enum": [2, 1], "default": 1}, "x": {"type": "integer"}},
            "required": ["y", "x"],
        }
    )
    c = SchemaReader(
        {
            "type": "object",
            "properties": {"x": {"type": "integer", "minimum": 0}, "y": {"enum": [1, 2]}},
            "required": ["x", "y"],
        }
    )
    assert a.same_type(a.root, b, b.root)
    assert not a.same_type(a.root, c, c.root)


def test_recursive_references_compare_by_shape_not_name() -> None:
    def tree(name: str, leaf: str) -> SchemaReader:
        return SchemaReader(
            {
                "$ref": f"#/$defs/{name}",
                "$defs": {
                    name: {
                        "type": "object",
                        "properties": {
                            "v": {"type": leaf},
                            "kids": {"type": "array", "items": {"$ref": f"#/$defs/{name}"}},
                        },
                    }
                },
            }
        )

    node, tree_doc, ints = tree("Node", "integer"), tree("Tree", "integer"), tree("Node", "string")
    assert node.same_type(node.root, tree_doc, tree_doc.root)
    assert not node.same_type(node.root, ints, ints.root)


@pytest.mark.parametrize(
    ("schema", "fits", "misfits"),
    [
        ({"type": "integer"}, [0, -5, 2**70], [True, 1.0, "1", None]),
        ({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, [0, 0.5], [1, -0.1, False]),
        ({"enum": [1, "a"]}, [1, "a"], [True, 2, "b"]),
        ({"const": False}, [False], [0, None]),
        (
            {"type": "string", "format": "date-time"},
            ["2024-01-01T10:00:00", dt.datetime(2024, 1, 1)],
            ["yesterday", dt.date(2024, 1, 1)],
        ),
        (
            {"type": "string", "format": "uuid"},
            [str(uuid.UUID(int=5)), uuid.UUID(int=5)],
            ["not-a-uuid", 5],
        ),
        (
            {"type": "string", "format": "decimal"},
            ["1.5", decimal.Decimal("2")],
            ["one", 1.5],
        ),
        ({"type": "string", "contentEncoding": "base64"}, [b"\x00", "AAE="], ["not base64!"]),
        ({"type": "string", "pattern": "^a", "maxLength": 3}, ["ab"], ["ba", "abcd"]),
        (
            {"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
            [[1], (2,)],
            [[1, 2], ["x"], {"a": 1}],
        ),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            [{}, {"a": 1}],
            [{"a": "x"}, [1]],
        ),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, ["x", None], [1]),
        ({"type": ["string", "null"]}, ["x", None], [1]),
    ],
)
def test_fits(schema: dict[str, Any], fits: list[Any], misfits: list[Any]) -> None:
    doc = SchemaReader(schema)
    assert [doc.fits(v, doc.root) for v in fits] == [True] * len(fits)
    assert [doc.fits(v, doc.root) for v in misfits] == [False] * len(misfits)


@settings(max_examples=100, deadline=None)
@given(st.from_type(Inner) | st.builds(Inner, a=st.integers()))
def test_values_msgspec_accepts_fit_their_schema(value: Inner) -> None:
    doc = SchemaReader(schema_of(Inner))
    assert doc.fits(msgspec.to_builtins(value), doc.root)


class Loose(msgspec.Struct):
    a: int = 0
    b: list[str] = []
    c: dict[str, float | None] = {}
    d: Literal["x", 1] | None = None
    e: tuple[bool, str] = (True, "")


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.sampled_from("x1"),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcdefx"), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(PLAIN)
def test_fits_agrees_with_msgspec(value: Any) -> None:
    """Whatever the value, `fits` says yes exactly when msgspec converts it."""
    doc = SchemaReader(schema_of(Loose))
    try:
        msgspec.convert(value, Loose)
        accepted = True
    except msgspec.ValidationError:
        accepted = False
    assert doc.fits(value, doc.root) == accepted
