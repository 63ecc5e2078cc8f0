"""Migrations on load: old states come back as the newest type; failures name the step."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import statevault


class OrderV1(msgspec.Struct):
    id: str
    total: float


class OrderV2(msgspec.Struct):
    id: str
    total_cents: int


class OrderV3(msgspec.Struct):
    id: str
    total_cents: int
    currency: str


def cents(state: dict[str, Any]) -> dict[str, Any]:
    state["total_cents"] = round(state.pop("total") * 100)
    return state


def add_currency(state: dict[str, Any]) -> dict[str, Any]:
    state["currency"] = "EUR"
    return state


def drop_currency(state: dict[str, Any]) -> dict[str, Any]:
    del state["currency"]
    return state


def save_v1(vault: statevault.Vault, run_id: str, total: float) -> None:
    vault.schema("order", OrderV1, version=1)
    vault.run(run_id, schema="order").save(OrderV1(run_id, total))


def test_an_old_state_loads_migrated_and_stays_stored_as_it_was(vault: statevault.Vault) -> None:
    vault.schema("order", OrderV1, version=1)
    vault.run("o", schema="order").save(OrderV1("o", 12.5))
    vault.schema("order", OrderV2, version=2)
    vault.schema("order", OrderV3, version=3)
    vault.migration("order", 1, 2)(cents)
    vault.migration("order", 2, 3)(add_currency)
    run = vault.run("o", schema="order")
    assert run.load() == OrderV3("o", 1250, "EUR")
    assert run.load(at=1) == OrderV3("o", 1250, "EUR")
    assert run.load(raw=True) == {"id": "o", "total": 12.5}  # untouched until the next save
    assert [c.seq for c in run.checkpoints()] == [1]
    run.save(run.load())
    head = run.head
    assert head is not None
    assert (head.schema, head.schema_version) == ("order", 3)
    assert vault.run("o").load() == {"id": "o", "total_cents": 1250, "currency": "EUR"}


def test_a_transaction_on_a_migrated_state_commits_the_whole_new_state(
    vault: statevault.Vault,
) -> None:
    save_v1(vault, "o", 1.0)
    vault.schema("order", OrderV2, version=2)
    vault.migration("order", 1, 2)(cents)
    run = vault.run("o", schema="order")
    with run.transaction() as order:
        order.total_cents += 1
    head = run.head
    assert head is not None
    # A delta would replay v2 operations on the v1 state: the state is written whole.
    assert (head.kind, head.schema_version) == ("state", 2)
    with run.transaction() as order:
        order.total_cents += 1
    head = run.head
    assert head is not None
    assert (head.kind, head.schema_version) == ("delta", 2)
    assert vault.run("o", schema="order").load() == OrderV2("o", 102)


def test_a_missing_step_is_named(vault: statevault.Vault) -> None:
    save_v1(vault, "o", 1.0)
    vault.schema("order", OrderV3, version=3)
    vault.migration("order", 1, 2)(cents)
    with pytest.raises(statevault.MigrationError) as caught:
        vault.run("o", schema="order").load()
    err = caught.value
    assert (err.run_id, err.seq, err.source, err.target, err.step) == ("o", 1, 1, 3, (2, 3))
    assert "no migration is registered" in str(err)
    assert "@vault.migration('order', 2, 3)" in str(err)


def test_a_raising_migration_is_named_and_the_state_stays_readable(
    vault: statevault.Vault,
) -> None:
    save_v1(vault, "o", 1.0)
    vault.schema("order", OrderV2, version=2)

    @vault.migration("order", 1, 2)
    def broken(state: dict[str, Any]) -> dict[str, Any]:
        return {"id": state["id"], "total_cents": state["missing"]}

    run = vault.run("o", schema="order")
    with pytest.raises(statevault.MigrationError) as caught:
        run.load()
    err = caught.value
    assert err.step == (1, 2)
    assert err.function is not None
    assert err.function.endswith("broken")
    assert "KeyError" in str(err)
    assert isinstance(err.__cause__, KeyError)
    assert run.load(raw=True) == {"id": "o", "total": 1.0}
    assert vault.run("o").load() == {"id": "o", "total": 1.0}


def test_an_invalid_result_is_named(vault: statevault.Vault) -> None:
    save_v1(vault, "o", 1.0)
    vault.schema("order", OrderV2, version=2)
    vault.migration("order", 1, 2)(lambda s: {"id": s["id"], "total_cents": s["total"] * 100})
    with pytest.raises(statevault.MigrationError) as caught:
        vault.run("o", schema="order").load()
    assert caught.value.step == (1, 2)
    assert "$.total_cents" in str(caught.value)
    assert "expected int" in str(caught.value)


def test_a_migration_returning_none_is_refused(vault: statevault.Vault) -> None:
    save_v1(vault, "o", 1.0)
    vault.schema("order", OrderV2, version=2)
    vault.migration("order", 1, 2)(lambda s: None)
    with pytest.raises(statevault.MigrationError, match="returned None"):
        vault.run("o", schema="order").load()


def test_a_newer_state_needs_a_way_back(vault_url: str, backend_kind: str) -> None:
    if backend_kind == "memory":
        pytest.skip("a memory vault cannot be opened a second time")
    with statevault.open(vault_url) as vault:
        vault.schema("order", OrderV3, version=3)
        vault.run("o", schema="order").save(OrderV3("o", 5, "USD"))
    with statevault.open(vault_url) as vault:  # older code: it knows version 2 only
        vault.schema("order", OrderV2, version=2)
        with pytest.raises(statevault.MigrationError) as caught:
            vault.run("o", schema="order").load()
        assert (caught.value.source, caught.value.target, caught.value.step) == (3, 2, (3, 2))
        assert "way back" in str(caught.value)
        vault.migration("order", 3, 2)(drop_currency)
        assert vault.run("o", schema="order").load() == OrderV2("o", 5)


def test_migrations_must_be_single_steps(vault: statevault.Vault) -> None:
    with pytest.raises(statevault.SchemaError, match="one version up or down"):
        vault.migration("order", 1, 3)(cents)
    vault.migration("order", 1, 2)(cents)
    vault.migration("order", 1, 2)(cents)  # the same function again is fine
    with pytest.raises(statevault.SchemaError, match="already registered"):
        vault.migration("order", 1, 2)(add_currency)


class Point1(msgspec.Struct):
    x: int


class Point2(msgspec.Struct):
    x: int
    y: int = 0


def add_y(state: dict[str, Any]) -> dict[str, Any]:
    state["y"] = -1
    return state


def test_module_level_registrations_apply_to_every_vault(
    vault: statevault.Vault, backend_kind: str
) -> None:
    name = f"module-level-point-{backend_kind}"  # module-level registrations outlive a test
    vault.schema(name, Point1, version=1)
    vault.run("p", schema=name).save(Point1(3))
    statevault.schema(name, Point2, version=2)
    statevault.migration(name, 1, 2)(add_y)
    assert vault.run("p", schema=name).load() == Point2(3, -1)


def test_the_first_invalid_step_is_named_when_types_in_between_are_known(
    vault: statevault.Vault,
) -> None:
    save_v1(vault, "o", 1.0)
    with vault.run("o", schema="order").transaction() as order:  # a delta to replay too
        order.total = 2.5
    vault.schema("order", OrderV2, version=2)
    vault.schema("order", OrderV3, version=3)

    @vault.migration("order", 1, 2)
    def sloppy(state: dict[str, Any]) -> dict[str, Any]:
        state["total_cents"] = state.pop("total") * 100  # a float: not valid in version 2
        return state

    @vault.migration("order", 2, 3)
    def currency(state: dict[str, Any]) -> dict[str, Any]:
        state["currency"] = "EUR"
        return state

    with pytest.raises(statevault.MigrationError) as caught:
        vault.run("o", schema="order").load()
    err = caught.value
    assert (err.seq, err.source, err.target, err.step) == (2, 1, 3, (1, 2))
    assert err.function is not None
    assert err.function.endswith("sloppy")
    assert "does not match version 2: at $.total_cents expected int" in str(err)
    assert "found float 250.0" in str(err)
