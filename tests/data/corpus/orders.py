"""Five versions of a realistic `order` schema and the migrations between them.

The compatibility corpus (`make_corpus.py`) holds runs written with each version;
`tests/test_corpus.py` loads all of them as the newest. Never change a version that is
in the corpus: add a new one (OrderV6, a migration 5 -> 6) and new runs instead.

What changes between versions:
- v2: `customer` goes from a name (str) to a nested record; `currency` and `notes` added.
- v3: `total` (float) becomes `total_cents` (int): renamed and retyped; items likewise.
- v4: `notes` removed; `status` becomes an enum, "new" renamed to "open", "cancelled" added.
- v5: `shipping` (a nested address record, optional) and `tags` (a set) added; items
  gain `discount_cents`.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any, Literal

import msgspec

import statevault

NAME = "order"
NEWEST = 5

Qty = Annotated[int, msgspec.Meta(ge=1, le=10_000)]
Price = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
Total = Annotated[float, msgspec.Meta(ge=0, le=1_000_000_000)]
Cents = Annotated[int, msgspec.Meta(ge=0)]


# -- version 1 ------------------------------------------------------------------------
class ItemV1(msgspec.Struct):
    sku: str
    qty: Qty
    price: Price


class OrderV1(msgspec.Struct):
    id: str
    customer: str
    items: list[ItemV1]
    total: Total
    status: Literal["new", "paid", "shipped"]
    created: dt.datetime


# -- version 2 ------------------------------------------------------------------------
class CustomerV2(msgspec.Struct):
    name: str
    email: str | None = None


class OrderV2(msgspec.Struct):
    id: str
    customer: CustomerV2
    items: list[ItemV1]
    total: Total
    status: Literal["new", "paid", "shipped"]
    created: dt.datetime
    currency: str = "EUR"
    notes: list[str] = []


# -- version 3 ------------------------------------------------------------------------
class ItemV3(msgspec.Struct):
    sku: str
    qty: Qty
    price_cents: Cents


class OrderV3(msgspec.Struct):
    id: str
    customer: CustomerV2
    items: list[ItemV3]
    total_cents: Cents
    status: Literal["new", "paid", "shipped"]
    created: dt.datetime
    currency: str = "EUR"
    notes: list[str] = []


# -- version 4 ------------------------------------------------------------------------
class Status(enum.Enum):
    OPEN = "open"
    PAID = "paid"
    SHIPPED = "shipped"
    CANCELLED = "cancelled"


class OrderV4(msgspec.Struct):
    id: str
    customer: CustomerV2
    items: list[ItemV3]
    total_cents: Cents
    status: Status
    created: dt.datetime
    currency: str = "EUR"


# -- version 5 ------------------------------------------------------------------------
class Address(msgspec.Struct):
    street: str
    city: str
    country: str


class ItemV5(msgspec.Struct):
    sku: str
    qty: Qty
    price_cents: Cents
    discount_cents: Cents = 0


class OrderV5(msgspec.Struct):
    id: str
    customer: CustomerV2
    items: list[ItemV5]
    total_cents: Cents
    status: Status
    created: dt.datetime
    currency: str = "EUR"
    shipping: Address | None = None
    tags: set[str] = set()


TYPES: dict[int, type[Any]] = {1: OrderV1, 2: OrderV2, 3: OrderV3, 4: OrderV4, 5: OrderV5}


# -- migrations: plain forms in, plain forms out ------------------------------------------
def v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    state["customer"] = {"name": state["customer"], "email": None}
    state["currency"] = "EUR"
    state["notes"] = []
    return state


def v2_to_v3(state: dict[str, Any]) -> dict[str, Any]:
    state["total_cents"] = round(state.pop("total") * 100)
    for item in state["items"]:
        item["price_cents"] = round(item.pop("price") * 100)
    return state


def v3_to_v4(state: dict[str, Any]) -> dict[str, Any]:
    del state["notes"]
    if state["status"] == "new":
        state["status"] = "open"
    return state


def v4_to_v5(state: dict[str, Any]) -> dict[str, Any]:
    state["shipping"] = None
    state["tags"] = []
    for item in state["items"]:
        item["discount_cents"] = 0
    return state


def v5_to_v4(state: dict[str, Any]) -> dict[str, Any]:
    state.pop("shipping", None)
    state.pop("tags", None)
    for item in state["items"]:
        item.pop("discount_cents", None)
    return state


def v4_to_v3(state: dict[str, Any]) -> dict[str, Any]:
    if state["status"] == "cancelled":
        raise ValueError("version 3 has no cancelled orders")
    if state["status"] == "open":
        state["status"] = "new"
    state["notes"] = []
    return state


STEPS = {(1, 2): v1_to_v2, (2, 3): v2_to_v3, (3, 4): v3_to_v4, (4, 5): v4_to_v5}
WAYS_BACK = {(5, 4): v5_to_v4, (4, 3): v4_to_v3}


def register(vault: statevault.Vault, *, version: int = NEWEST) -> None:
    """Register what the code of `version` knows: its type and the steps up to it."""
    vault.schema(NAME, TYPES[version], version=version)
    for (source, target), function in {**STEPS, **WAYS_BACK}.items():
        if max(source, target) <= version:
            vault.migration(NAME, source, target)(function)
