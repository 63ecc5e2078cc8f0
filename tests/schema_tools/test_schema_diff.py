"""diff_schemas: what changed between two schema versions, and what is safe."""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import Any, Literal, NotRequired, Optional, TypedDict

import msgspec
import pydantic
import pytest
from proposals import diff_types, schema_of

from statevault.errors import SchemaDocumentError, StateVaultError
from statevault.schema_tools import (
    ByTag,
    FieldAdded,
    FieldNowRequired,
    FieldRemoved,
    FieldRetyped,
    ForEachItem,
    ForEachPosition,
    ForEachValue,
    IntToFloat,
    LikelyRename,
    MigrateRecord,
    SetConstant,
    Unchanged,
    Undecided,
    UnlessNone,
    collect_field_values,
    diff_schemas,
)


def only_change(old: type[Any], new: type[Any], **kwargs: Any) -> Any:
    diff = diff_types(old, new, **kwargs)
    assert len(diff.records) == 1, diff
    (change,) = diff.records[0].changes
    return change


class Base(msgspec.Struct):
    id: str
    count: int


def test_identical_types_are_unchanged() -> None:
    class Same(msgspec.Struct):
        id: str
        count: int

    diff = diff_types(Base, Same)
    assert diff.unchanged
    assert diff.records == ()
    assert diff.automatic


def test_changed_default_or_title_is_not_a_change() -> None:
    class Defaulted(msgspec.Struct):
        id: str
        count: int
        note: str = "a"

    class Redefaulted(msgspec.Struct):
        id: str
        count: int
        note: str = "b"

    assert diff_types(Defaulted, Redefaulted).unchanged


def test_added_field_with_default() -> None:
    class Added(msgspec.Struct):
        id: str
        count: int
        status: str = "open"

    change = only_change(Base, Added)
    assert change == FieldAdded("status", "str", required=False, has_default=True, default="open")
    assert diff_types(Base, Added).automatic


def test_added_required_field_is_a_todo() -> None:
    class Added(msgspec.Struct):
        id: str
        count: int
        total_cents: int

    change = only_change(Base, Added, stored=[])
    assert change == FieldAdded("total_cents", "int", required=True, has_default=False)
    diff = diff_types(Base, Added)
    assert not diff.automatic
    assert diff.todos() == ["Added.total_cents: new required field with no default; set it"]


def test_added_field_with_default_factory_needs_no_step() -> None:
    @dataclasses.dataclass
    class Old:
        id: str

    @dataclasses.dataclass
    class New:
        id: str
        tags: list[str] = dataclasses.field(default_factory=list)

    change = only_change(Old, New)
    assert change == FieldAdded("tags", "list[str]", required=False, has_default=False)
    assert diff_types(Old, New).automatic


def test_removed_field() -> None:
    class Removed(msgspec.Struct):
        id: str

    assert only_change(Base, Removed) == FieldRemoved("count", "int")


def test_rename_with_similar_names_among_several_same_typed_fields() -> None:
    class Old(msgspec.Struct):
        customer_name: str
        street: str

    class New(msgspec.Struct):
        client_name: str
        city: str

    diff = diff_types(Old, New)
    changes = diff.records[0].changes
    renames = [c for c in changes if isinstance(c, LikelyRename)]
    assert [(r.old_field, r.new_field) for r in renames] == [("customer_name", "client_name")]
    assert FieldRemoved("street", "str") in changes
    assert FieldAdded("city", "str", required=True, has_default=False) in changes
    assert "New: confirm that 'customer_name' was renamed to 'client_name'" in diff.todos()


def test_sole_same_typed_pair_is_a_likely_rename_however_unlike() -> None:
    class Old(msgspec.Struct):
        id: str
        total: float

    class New(msgspec.Struct):
        id: str
        amount: float

    change = only_change(Old, New)
    assert isinstance(change, LikelyRename)
    assert (change.old_field, change.new_field) == ("total", "amount")
    assert change.similarity < 0.5


def test_fields_of_different_types_are_not_renames() -> None:
    class Old(msgspec.Struct):
        total: float

    class New(msgspec.Struct):
        total_cents: int

    changes = diff_types(Old, New).records[0].changes
    assert not any(isinstance(c, LikelyRename) for c in changes)


def test_int_to_float_is_safe() -> None:
    class New(msgspec.Struct):
        id: str
        count: float

    change = only_change(Base, New)
    assert isinstance(change, FieldRetyped)
    assert (change.old_type, change.new_type, change.reason) == ("int", "float", "int -> float")
    assert change.conversion == IntToFloat()
    assert change.safe


def test_optional_widening_is_safe_and_needs_no_step() -> None:
    class New(msgspec.Struct):
        id: Optional[str]  # noqa: UP045 - the spelling users write is what is tested
        count: int | str

    diff = diff_types(Base, New)
    retyped = {c.field: c for c in diff.records[0].changes if isinstance(c, FieldRetyped)}
    assert retyped["id"].conversion == Unchanged()
    assert "now optional" in retyped["id"].reason
    assert retyped["count"].conversion == Unchanged()
    assert "widened" in retyped["count"].reason
    assert diff.automatic


class StatusStr(msgspec.Struct):
    status: str


class StatusLiteral(msgspec.Struct):
    status: Literal["open", "paid"]


def test_str_to_literal_is_safe_when_every_stored_value_fits() -> None:
    stored = [StatusStr("open"), StatusStr("paid"), StatusStr("open")]
    change = only_change(StatusStr, StatusLiteral, stored=stored)
    assert change.conversion == Unchanged()
    assert "all 2 stored values fit" in change.reason


def test_str_to_literal_is_undecided_when_a_stored_value_does_not_fit() -> None:
    stored = [StatusStr("open"), StatusStr("closed")]
    change = only_change(StatusStr, StatusLiteral, stored=stored)
    assert isinstance(change.conversion, Undecided)
    assert "1 of 2 stored values do not fit: 'closed'" in change.conversion.reason


def test_str_to_literal_is_undecided_without_stored_values() -> None:
    change = only_change(StatusStr, StatusLiteral)
    assert isinstance(change.conversion, Undecided)
    assert "stored values were not checked" in change.conversion.reason
    none_stored = only_change(StatusStr, StatusLiteral, stored=[])
    assert "stored values were not checked" in none_stored.conversion.reason


def test_literal_values_added_and_removed() -> None:
    class Wider(msgspec.Struct):
        status: Literal["open", "paid", "shipped"]

    class Narrower(msgspec.Struct):
        status: Literal["open"]

    gained = only_change(StatusLiteral, Wider)
    assert gained.conversion == Unchanged()
    assert gained.values_added == ("shipped",)
    lost = only_change(StatusLiteral, Narrower)
    assert isinstance(lost.conversion, Undecided)
    assert lost.values_removed == ("paid",)
    settled = only_change(StatusLiteral, Narrower, stored=[StatusLiteral("open")])
    assert settled.conversion == Unchanged()


class ColorV1(enum.Enum):
    RED = "red"
    GREEN = "green"


class ColorV2(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class ColorV3(enum.Enum):
    RED = "red"


def test_enum_changes() -> None:
    class Old(msgspec.Struct):
        color: ColorV1

    class Gained(msgspec.Struct):
        color: ColorV2

    class Lost(msgspec.Struct):
        color: ColorV3

    gained = only_change(Old, Gained)
    assert gained.conversion == Unchanged()
    assert (gained.old_type, gained.new_type) == ("ColorV1", "ColorV2")
    assert gained.values_added == ("blue",)
    lost = only_change(Old, Lost, stored=[Old(ColorV1.RED), Old(ColorV1.GREEN)])
    assert isinstance(lost.conversion, Undecided)
    assert "'green'" in lost.conversion.reason


def test_literal_to_str_is_safe() -> None:
    change = only_change(StatusLiteral, StatusStr)
    assert change.conversion == Unchanged()


def test_optional_to_required_type_is_narrowing() -> None:
    class Old(msgspec.Struct):
        note: str | None

    class New(msgspec.Struct):
        note: str

    assert isinstance(only_change(Old, New).conversion, Undecided)
    assert only_change(Old, New, stored=[Old("a")]).conversion == Unchanged()
    unsettled = only_change(Old, New, stored=[Old("a"), Old(None)])
    assert "None" in unsettled.conversion.reason


def test_unrelated_type_change_is_undecided_even_with_values() -> None:
    class Old(msgspec.Struct):
        when: str

    class New(msgspec.Struct):
        when: int

    change = only_change(Old, New, stored=[Old("2024-01-01")])
    assert isinstance(change.conversion, Undecided)
    assert "do not fit: '2024-01-01'" in change.conversion.reason


class ItemV1(msgspec.Struct):
    sku: str
    qty: int


class ItemV2(msgspec.Struct):
    sku: str
    qty: float
    color: str = "red"


def test_nested_records_in_lists_maps_optionals_and_tuples() -> None:
    class Old(msgspec.Struct):
        items: list[ItemV1]
        by_sku: dict[str, ItemV1]
        first: ItemV1 | None
        pair: tuple[ItemV1, int]

    class New(msgspec.Struct):
        items: list[ItemV2]
        by_sku: dict[str, ItemV2]
        first: ItemV2 | None
        pair: tuple[ItemV2, int]

    diff = diff_types(Old, New)
    assert [r.old_name for r in diff.records] == ["Old", "ItemV1"]
    conversions = {c.field: c.conversion for c in diff.records[0].changes}
    item = MigrateRecord(1)
    assert conversions == {
        "items": ForEachItem(item),
        "by_sku": ForEachValue(item),
        "first": UnlessNone(item),
        "pair": ForEachPosition((item, Unchanged()), Unchanged()),
    }
    nested = diff.records[1]
    assert nested.path == "state.items[]"
    assert nested.changes == (
        FieldRetyped("qty", "int", "float", IntToFloat(), "int -> float", optional_before=False),
        FieldAdded("color", "str", required=False, has_default=True, default="red"),
    )
    assert diff.automatic


class NodeV1(msgspec.Struct):
    name: str
    children: list[NodeV1] = []


class NodeV2(msgspec.Struct):
    name: str
    weight: float = 1.0
    children: list[NodeV2] = []


def test_recursive_records_diff_once() -> None:
    diff = diff_types(NodeV1, NodeV2)
    assert diff.root == MigrateRecord(0)
    assert len(diff.records) == 1
    changes = diff.records[0].changes
    assert FieldAdded("weight", "float", required=False, has_default=True, default=1.0) in changes
    children = next(c for c in changes if isinstance(c, FieldRetyped))
    assert children.conversion == ForEachItem(MigrateRecord(0))


class Tree(msgspec.Struct):
    name: str
    children: list[Tree] = []


def test_renamed_recursive_record_with_same_fields_is_unchanged() -> None:
    assert diff_types(NodeV1, Tree).unchanged


def test_tag_of_a_renamed_tagged_struct_is_set() -> None:
    class Order(msgspec.Struct, tag=True):
        id: str

    class OrderV2(msgspec.Struct, tag=True):
        id: str

    change = only_change(Order, OrderV2)
    assert change.conversion == SetConstant("OrderV2")
    assert diff_types(Order, OrderV2).automatic


def test_field_now_required_uses_the_old_default() -> None:
    class Old(msgspec.Struct):
        count: int = 0

    class New(msgspec.Struct):
        count: int

    assert only_change(Old, New) == FieldNowRequired("count", "int", True, 0)

    class OldTyped(TypedDict):
        count: NotRequired[int]

    class NewTyped(TypedDict):
        count: int

    diff = diff_types(OldTyped, NewTyped)
    assert diff.records[0].changes == (FieldNowRequired("count", "int", False),)
    assert not diff.automatic


class PydanticItem(pydantic.BaseModel):
    sku: str
    qty: int


def test_pydantic_and_dataclass_documents() -> None:
    class Old(pydantic.BaseModel):
        id: str
        qty: int
        items: list[PydanticItem]

    @dataclasses.dataclass
    class New:
        id: str
        qty: float
        items: list[ItemV2]
        status: str = "open"

    diff = diff_types(Old, New)
    assert [r.old_name for r in diff.records] == ["Old", "PydanticItem"]
    root = {type(c).__name__ + ":" + getattr(c, "field", "") for c in diff.records[0].changes}
    assert root == {"FieldRetyped:qty", "FieldRetyped:items", "FieldAdded:status"}
    assert diff.automatic


def test_collect_field_values_walks_nested_records_and_unions() -> None:
    class Holder(msgspec.Struct):
        items: list[ItemV1]
        first: ItemV1 | None
        tags: dict[str, int]

    states = [
        Holder([ItemV1("a", 1), ItemV1("b", 2)], None, {"x": 1}),
        Holder([ItemV1("a", 3)], ItemV1("c", 1), {}),
    ]
    found = collect_field_values(schema_of(Holder), [msgspec.to_builtins(s) for s in states])
    assert sorted(found["ItemV1.sku"]) == ["a", "b", "c"]
    assert sorted(found["ItemV1.qty"]) == [1, 2, 3]
    assert found["Holder.first"] == [None, {"sku": "c", "qty": 1}]
    assert found["Holder.tags"] == [{"x": 1}, {}]


def test_collect_field_values_keeps_at_most_limit_distinct_values() -> None:
    states = [{"id": str(i), "count": i % 7} for i in range(50)]
    found = collect_field_values(schema_of(Base), states, limit=5)
    assert len(found["Base.id"]) == 5
    assert found["Base.count"] == [0, 1, 2, 3, 4]


def test_inline_root_without_defs() -> None:
    old = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    new = {"type": "object", "properties": {"n": {"type": "number"}}, "required": ["n"]}
    diff = diff_schemas(old, new)
    assert diff.records[0].old_name == "Root"
    assert diff.records[0].changes[0].conversion == IntToFloat()


def test_non_record_roots() -> None:
    same = diff_schemas({"type": "integer"}, {"type": "integer"})
    assert same.unchanged
    widened = diff_schemas({"type": "integer"}, {"type": "number"})
    assert widened.root == IntToFloat()
    assert widened.automatic
    changed = diff_schemas({"type": "integer"}, {"type": "string"})
    assert isinstance(changed.root, Undecided)
    assert changed.todos() == ["the state's type: int -> str: no automatic conversion"]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"$ref": "#/$defs/Missing", "$defs": {}}, "'#/$defs/Missing' points to nothing"),
        ({"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}}, "refers to itself"),
        ({"$ref": "https://example.com/s.json"}, "only local references"),
    ],
)
def test_bad_documents_raise_a_typed_error(document: Any, message: str) -> None:
    with pytest.raises(SchemaDocumentError, match=re.escape(message)) as caught:
        diff_schemas(document, {"type": "object", "properties": {}})
    assert isinstance(caught.value, StateVaultError)
    assert isinstance(caught.value, ValueError)


class Cat(msgspec.Struct, tag="cat"):
    name: str
    lives: int = 9


class Dog(msgspec.Struct, tag="dog"):
    name: str


class CatV2(msgspec.Struct, tag="cat"):
    name: str
    lives: float = 9.0


class Bird(msgspec.Struct, tag="bird"):
    name: str


def test_tagged_union_members_pair_by_tag() -> None:
    class Old(msgspec.Struct):
        pets: list[Cat | Dog]
        best: Cat | Dog | None = None

    class New(msgspec.Struct):
        pets: list[CatV2 | Dog | Bird]
        best: CatV2 | Dog | None = None

    diff = diff_types(Old, New)
    conversions = {c.field: c.conversion for c in diff.records[0].changes}
    cat = ByTag("type", (("cat", MigrateRecord(1)),))
    assert conversions == {"pets": ForEachItem(cat), "best": UnlessNone(cat)}
    assert diff.records[1].old_name == "Cat"
    assert diff.automatic


def test_tagged_union_losing_a_tag_is_undecided() -> None:
    class Old(msgspec.Struct):
        pets: list[Cat | Dog]

    class New(msgspec.Struct):
        pets: list[Cat | Bird]

    change = only_change(Old, New)
    assert isinstance(change.conversion, Undecided)
    assert "records tagged 'dog' have no type in the new union" in change.conversion.reason
