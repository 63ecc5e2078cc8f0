"""Schema-bound runs: typed saves and loads, validation before writing, journal entries."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from typing import Any, Literal, TypedDict

import msgspec
import pydantic
import pytest

import statevault
from statevault import ops


class Item(msgspec.Struct):
    sku: str
    qty: int


class Order(msgspec.Struct):
    id: str
    items: list[Item]
    total_cents: int
    status: Literal["open", "paid", "shipped"] = "open"
    placed: dt.datetime | None = None


@dataclasses.dataclass
class DcItem:
    sku: str
    qty: int


@dataclasses.dataclass
class DcOrder:
    id: str
    items: list[DcItem]
    total_cents: int
    tags: set[str] = dataclasses.field(default_factory=set)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class PdItem(pydantic.BaseModel):
    sku: str
    qty: int


class PdOrder(pydantic.BaseModel):
    id: str
    items: list[PdItem]
    total_cents: int
    color: Color = Color.RED
    ref: uuid.UUID | None = None


class TdItem(TypedDict):
    sku: str
    qty: int


class TdOrder(TypedDict):
    id: str
    items: list[TdItem]
    total_cents: int


PLACED = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)

KINDS: dict[str, tuple[type[Any], Any]] = {
    "struct": (Order, Order("o-1", [Item("MUG", 2)], 1250, "paid", PLACED)),
    "dataclass": (DcOrder, DcOrder("o-1", [DcItem("MUG", 2)], 1250, {"gift"})),
    "pydantic": (
        PdOrder,
        PdOrder(
            id="o-1",
            items=[PdItem(sku="MUG", qty=2)],
            total_cents=1250,
            color=Color.BLUE,
            ref=uuid.UUID(int=7),
        ),
    ),
    "typeddict": (TdOrder, TdOrder(id="o-1", items=[TdItem(sku="MUG", qty=2)], total_cents=1250)),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_saves_validated_and_loads_typed(vault: statevault.Vault, kind: str) -> None:
    cls, value = KINDS[kind]
    vault.schema("order", cls, version=1)
    run = vault.run("o-1", schema="order")
    checkpoint = run.save(value)
    assert (checkpoint.schema, checkpoint.schema_version) == ("order", 1)
    loaded = vault.run("o-1", schema="order").load()
    assert loaded == value
    assert type(loaded) is type(value)
    # The stored form is plain data: it loads without the type, by a handle without schema.
    plain = vault.run("o-1").load()
    assert isinstance(plain, dict)
    assert plain["items"] == [{"sku": "MUG", "qty": 2}]
    assert vault.run("o-1", schema="order").load(raw=True) == plain


def test_plain_data_of_the_right_shape_is_accepted(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    run = vault.run("o-2", schema="order")
    run.save({"id": "o-2", "items": [{"sku": "A", "qty": 1}], "total_cents": 5})
    assert run.load() == Order("o-2", [Item("A", 1)], 5)


def test_invalid_save_names_path_expected_and_found_and_writes_nothing(
    vault: statevault.Vault,
) -> None:
    vault.schema("order", Order, version=1)
    run = vault.run("o-3", schema="order")
    bad = Order("o-3", [Item("A", 1), Item("B", "two")], 5)  # type: ignore[arg-type]
    with pytest.raises(statevault.SchemaValidationError) as caught:
        run.save(bad)
    err = caught.value
    assert (err.path, err.expected, err.found) == ("$.items[1].qty", "int", "str 'two'")
    assert (err.schema, err.version, err.run_id) == ("order", 1, "o-3")
    assert "Nothing was written" in str(err)
    assert run.head is None
    assert vault.stored_schemas() == []  # nothing at all was written


def test_missing_field_and_wrong_literal_are_named(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    run = vault.run("o-4", schema="order")
    with pytest.raises(statevault.SchemaValidationError) as caught:
        run.save({"id": "o-4", "items": []})
    assert caught.value.path == "$.total_cents"
    assert caught.value.found == "nothing (the field is missing)"
    with pytest.raises(statevault.SchemaValidationError) as caught:
        run.save({"id": "o-4", "items": [], "total_cents": 1, "status": "lost"})
    assert caught.value.path == "$.status"
    assert "lost" in caught.value.found


def test_pydantic_errors_name_the_path(vault: statevault.Vault) -> None:
    vault.schema("order", PdOrder, version=1)
    run = vault.run("p", schema="order")
    with pytest.raises(statevault.SchemaValidationError) as caught:
        run.save({"id": "p", "items": [{"sku": "A", "qty": "many"}], "total_cents": 1})
    assert caught.value.path == "$.items[0].qty"
    assert caught.value.found == "str 'many'"
    assert "integer" in caught.value.expected


def test_a_stored_state_that_does_not_validate_is_reported_and_stays_readable(
    vault: statevault.Vault,
) -> None:
    vault.run("legacy").save({"id": "x", "items": "none", "total_cents": 3})
    vault.schema("order", Order, version=1)
    run = vault.run("legacy", schema="order")
    with pytest.raises(statevault.SchemaValidationError) as caught:
        run.load()
    assert (caught.value.run_id, caught.value.seq, caught.value.path) == ("legacy", 1, "$.items")
    assert "load(raw=True)" in str(caught.value)
    assert run.load(raw=True) == {"id": "x", "items": "none", "total_cents": 3}


def test_an_unversioned_state_of_the_right_shape_loads_typed(vault: statevault.Vault) -> None:
    vault.run("old").save({"id": "x", "items": [], "total_cents": 3})
    vault.schema("order", Order, version=1)
    assert vault.run("old", schema="order").load() == Order("x", [], 3)


def test_a_run_of_another_schema_is_refused(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    vault.schema("item", Item, version=1)
    vault.run("i", schema="item").save(Item("A", 1))
    with pytest.raises(statevault.SchemaError, match="schema 'item'"):
        vault.run("i", schema="order").load()


def test_an_unregistered_schema_name_is_refused(vault: statevault.Vault) -> None:
    with pytest.raises(statevault.SchemaError, match="no schema 'nope' is registered"):
        vault.run("x", schema="nope")


def test_types_that_cannot_be_schemas_are_refused(vault: statevault.Vault) -> None:
    with pytest.raises(statevault.SchemaError, match="msgspec Struct, dataclass"):
        vault.schema("bad", dict, version=1)
    with pytest.raises(statevault.SchemaError, match="int >= 1"):
        vault.schema("bad", Order, version=0)
    vault.schema("order", Order, version=1)
    vault.schema("order", Order, version=1)  # the same type again is fine
    with pytest.raises(statevault.SchemaError, match="already registered"):
        vault.schema("order", Item, version=1)


def test_decorator_form(vault: statevault.Vault) -> None:
    @vault.schema("point", version=1)
    class Point(msgspec.Struct):
        x: int
        y: int

    vault.run("p", schema="point").save(Point(1, 2))
    assert vault.run("p", schema="point").load() == Point(1, 2)


# -- transactions and apply ------------------------------------------------------------
def test_transaction_changes_the_typed_state_and_commits_a_delta(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    run = vault.run("t", schema="order")
    run.save(Order("t", [Item("A", 1)], 100))
    with run.transaction() as order:
        order.items.append(Item("B", 2))
        order.items[0].qty += 1
        order.status = "paid"
    head = run.head
    assert head is not None
    assert (head.kind, head.schema, head.schema_version) == ("delta", "order", 1)
    assert vault.run("t", schema="order").load() == Order(
        "t", [Item("A", 2), Item("B", 2)], 100, "paid"
    )


def test_an_invalid_transaction_rolls_back_and_writes_nothing(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    run = vault.run("t", schema="order")
    run.save(Order("t", [Item("A", 1)], 100))
    with pytest.raises(statevault.SchemaValidationError) as caught, run.transaction() as order:  # noqa: PT012
        order.items.append(Item("B", 2))
        order.status = "lost"
    assert caught.value.path == "$.status"
    assert [c.seq for c in run.checkpoints()] == [1]
    with run.transaction() as order:  # the handle's state was rolled back
        assert order.status == "open"
        assert len(order.items) == 1
        order.total_cents += 1
    assert vault.run("t", schema="order").load().total_cents == 101


def test_transaction_with_default_validates_it(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    run = vault.run("new", schema="order")
    with run.transaction(default={"id": "new", "items": [], "total_cents": 0}) as order:
        order.items.append(Item("A", 1))
    assert run.load() == Order("new", [Item("A", 1)], 0)
    assert run.head is not None
    assert run.head.kind == "state"


def test_apply_validates_the_result(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    run = vault.run("a", schema="order")
    run.save(Order("a", [], 0))
    run.apply([ops.append("items", {"sku": "A", "qty": 3}), ops.increment("total_cents", 7)])
    assert vault.run("a", schema="order").load() == Order("a", [Item("A", 3)], 7)
    with pytest.raises(statevault.SchemaValidationError):
        run.apply([ops.set("total_cents", "seven")])
    assert run.load() == Order("a", [Item("A", 3)], 7)
    assert [c.kind for c in run.checkpoints()] == ["delta", "state"]


def test_the_journal_replays_and_folds_in_plain_form(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    run = vault.run("f", schema="order", policy=statevault.CheckpointPolicy(records=3))
    run.save(Order("f", [], 0))
    for i in range(7):
        with run.transaction() as order:
            order.items.append(Item(f"s{i}", i))
            order.total_cents += i
    kinds = [c.kind for c in run.checkpoints()]
    assert "fold" in kinds
    expected = Order("f", [Item(f"s{i}", i) for i in range(7)], sum(range(7)))
    assert vault.run("f", schema="order").load() == expected
    for checkpoint in run.checkpoints():
        assert (checkpoint.schema, checkpoint.schema_version) == ("order", 1)


class Renamed(msgspec.Struct, rename="camel"):
    total_cents: int
    line_items: list[str] = []


def test_renamed_fields_commit_whole_states(vault: statevault.Vault) -> None:
    vault.schema("renamed", Renamed, version=1)
    run = vault.run("r", schema="renamed")
    run.save(Renamed(1))
    assert vault.run("r").load() == {"totalCents": 1, "lineItems": []}
    with run.transaction() as value:
        value.line_items.append("x")
        value.total_cents = 2
    head = run.head
    assert head is not None
    assert head.kind == "state"  # a delta at `line_items` would miss `lineItems`
    assert vault.run("r", schema="renamed").load() == Renamed(2, ["x"])


def test_values_the_codec_stores_natively_survive(vault: statevault.Vault) -> None:
    class Rich(msgspec.Struct):
        when: dt.datetime
        price: decimal.Decimal
        ref: uuid.UUID
        blob: bytes
        pair: tuple[int, str]
        tags: frozenset[str]
        color: Color

    vault.schema("rich", Rich, version=1)
    value = Rich(
        PLACED,
        decimal.Decimal("9.90"),
        uuid.UUID(int=3),
        b"\x00\x01",
        (1, "a"),
        frozenset({"x"}),
        Color.BLUE,
    )
    vault.run("r", schema="rich").save(value)
    assert vault.run("r", schema="rich").load() == value
    stored = vault.run("r").load()
    assert stored["price"] == decimal.Decimal("9.90")  # not a string: stored natively
    assert stored["color"] == "blue"


# -- stored schema documents -----------------------------------------------------------
def test_first_save_stores_the_json_schema_once(vault: statevault.Vault) -> None:
    vault.schema("order", Order, version=1)
    assert vault.stored_schemas() == []  # registering writes nothing
    run = vault.run("d", schema="order")
    run.save(Order("d", [], 0))
    run.save(Order("d", [], 1))
    (document,) = vault.stored_schemas()
    assert (document.name, document.version, document.kind) == ("order", 1, "struct")
    assert document.type_name.endswith(":Order")
    assert document.json_schema == msgspec.json.schema(Order)
    assert document.fingerprint == vault.schemas("order")[1].fingerprint
    assert vault.stored_schema("order") == document
    assert vault.stored_schema("order", 1) == document
    with pytest.raises(statevault.SchemaError, match="stores no schema 'order' version 2"):
        vault.stored_schema("order", 2)


def test_pydantic_documents_come_from_pydantic(vault: statevault.Vault) -> None:
    vault.schema("order", PdOrder, version=1)
    vault.run("p", schema="order").save(KINDS["pydantic"][1])
    assert vault.stored_schema("order").json_schema == PdOrder.model_json_schema()


def test_prose_and_class_names_do_not_change_the_fingerprint() -> None:
    class OrderV9(msgspec.Struct):
        """Reworded documentation."""

        id: str
        items: list[Item]
        total_cents: int
        status: Literal["open", "paid", "shipped"] = "open"
        placed: dt.datetime | None = None

    class OrderRetyped(msgspec.Struct):
        id: str
        items: list[Item]
        total_cents: float
        status: Literal["open", "paid", "shipped"] = "open"
        placed: dt.datetime | None = None

    same = statevault.Schema("order", OrderV9, 1).fingerprint
    assert same == statevault.Schema("order", Order, 1).fingerprint
    assert statevault.Schema("order", OrderRetyped, 1).fingerprint != same


class OrderRetyped(msgspec.Struct):
    id: str
    items: list[Item]
    total_cents: float
    status: Literal["open", "paid", "shipped"] = "open"
    placed: dt.datetime | None = None


def test_a_changed_type_under_a_stored_version_is_refused(
    vault_url: str, backend_kind: str
) -> None:
    if backend_kind == "memory":
        pytest.skip("a memory vault cannot be opened a second time")
    with statevault.open(vault_url) as vault:
        vault.schema("order", Order, version=1)
        vault.run("o", schema="order").save(Order("o", [], 1))
    with statevault.open(vault_url) as vault:
        with pytest.raises(statevault.SchemaError) as caught:
            vault.schema("order", OrderRetyped, version=1)
        message = str(caught.value)
        assert "register it as version 2" in message
        assert "@vault.migration('order', 1, 2)" in message
        assert (caught.value.schema, caught.value.version) == ("order", 1)
        # Under a new version it is fine.
        vault.schema("order", OrderRetyped, version=2)
    with statevault.open(vault_url) as vault:
        # A module-level registration is checked when a run is opened with it.
        statevault.schema("order-module-level-test", OrderRetyped, version=1)
        vault.schema("order-module-level-test-stored", Order, version=1)
        vault.run("m", schema="order-module-level-test-stored").save(Order("m", [], 1))
    with statevault.open(vault_url) as vault:
        statevault.schema("order-module-level-test-stored", OrderRetyped, version=1)
        with pytest.raises(statevault.SchemaError, match="differs from the one this vault stored"):
            vault.run("m", schema="order-module-level-test-stored")


def test_a_damaged_schema_document_is_found_by_verify_and_refused(tmp_path: Any) -> None:
    import sqlite3  # noqa: PLC0415

    path = str(tmp_path / "v.db")
    with statevault.open(path) as vault:
        vault.schema("order", Order, version=1)
        vault.run("o", schema="order").save(Order("o", [], 1))
        assert vault.verify().ok
    with sqlite3.connect(path) as db:
        (value,) = db.execute(
            "SELECT value FROM statevault_meta WHERE key = 'schema:order:1'"
        ).fetchone()
        damaged = bytearray(value)
        damaged[len(damaged) // 2] ^= 0x01
        db.execute(
            "UPDATE statevault_meta SET value = ? WHERE key = 'schema:order:1'", (bytes(damaged),)
        )
    with statevault.open(path) as vault:
        report = vault.verify()
        assert not report.ok
        (problem,) = report.problems
        assert problem.kind == "schema"
        assert "schema:order:1" in str(problem)
        with pytest.raises(statevault.CorruptionError, match="schema:order:1"):
            vault.stored_schemas()
        with pytest.raises(statevault.CorruptionError):
            vault.schema("order", Order, version=1)
        assert vault.run("o").load() == {
            "id": "o",
            "items": [],
            "total_cents": 1,
            "status": "open",
            "placed": None,
        }
        repair = vault.repair(dry_run=True)
        assert [p.kind for p in repair.unrepaired] == ["schema"]
