"""The demo's workflow: an order-fulfilment pipeline whose state grows every step.

Each step processes one batch: new orders arrive, earlier ones move on (packed,
shipped, delivered, sometimes back-ordered or cancelled), customers get messages,
stock and totals change. The state uses tuples, datetimes with an offset and
Decimals so that `statevault show` has exact types to display.

`advance` is a pure function of (seed, step, previous state): its randomness comes
from a generator seeded with both, and its clock is simulated (no wall-clock time
enters the state). That is what lets the demo compare a killed-and-resumed run with
an uninterrupted one byte for byte. Sets are avoided on purpose: a set is stored in
iteration order, which for strings changes with each process's hash seed, so two
equal states could differ in digest.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from decimal import Decimal
from typing import Any

RUN_ID = "demo-pipeline"
PIPELINE = "order-fulfilment"

_CENT = Decimal("0.01")
_TZ = dt.timezone(dt.timedelta(hours=1))

# Weekday and month names are our own, not strftime's %A/%B, which follow the locale.
# fmt: off
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret",
          "Niklaus", "Radia", "Tim", "Sophie", "Dennis", "Katherine", "John")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
         "Hamilton", "Wirth", "Perlman", "Berners-Lee", "Wilson", "Ritchie", "Johnson", "Backus")
_CITIES = ("Leeds", "Lyon", "Utrecht", "Ghent", "Porto", "Graz", "Aarhus", "Bologna", "Kraków",
           "Tartu", "Bilbao", "Brno")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
# fmt: on
_CATALOG: dict[str, tuple[str, Decimal]] = {
    "MUG-01": ("enamel camping mug", Decimal("12.50")),
    "LAMP-07": ("brass desk lamp", Decimal("64.00")),
    "BOOK-42": ("hardback field guide to mosses", Decimal("29.95")),
    "TEA-03": ("tin of smoked black tea", Decimal("8.75")),
    "KNIFE-2": ("folding pocket knife", Decimal("41.20")),
    "SOCK-11": ("pair of merino hiking socks", Decimal("17.90")),
    "MAP-05": ("waterproof trail map", Decimal("11.40")),
    "PEN-09": ("fountain pen with converter", Decimal("36.00")),
}
_CARRIERS = (("Parcelforce", "PF"), ("DPD", "DP"), ("PostNL", "NL"), ("GLS", "GL"))
_WAREHOUSES = ("Rotterdam", "Lille", "Duisburg")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_STATUSES = ("placed", "backordered", "packed", "shipped", "delivered", "cancelled")
_RESTOCK_EVERY = 6


def _rng(seed: int, step: int) -> random.Random:
    # A string seed is hashed with SHA-512, never with Python's per-process hash, so
    # every process draws the same numbers for the same (seed, step).
    return random.Random(f"statevault-demo:{seed}:{step}")  # noqa: S311 - a reproducible simulation


def work_seconds(seed: int, step: int) -> float:
    """How long step `step` pretends to work (50-150 ms), so a kill can land inside it."""
    return _rng(seed, -step).uniform(0.05, 0.15)


def initial_state(seed: int) -> dict[str, Any]:
    """The state before step 1."""
    start = dt.datetime(2024, 3, 4, 8, 0, tzinfo=_TZ) + dt.timedelta(days=seed % 300)
    return {
        "pipeline": PIPELINE,
        "version": 1,
        "seed": seed,
        "step": 0,
        "clock": start,
        "next_order": 10001,
        "inventory": dict.fromkeys(_CATALOG, 30),
        "orders": {},
        "outbox": [],
        "batches": [],
        "totals": {
            "orders": 0,
            "items": 0,
            "revenue": Decimal("0.00"),
            "refunded": Decimal("0.00"),
            "by_status": dict.fromkeys(_STATUSES, 0),
        },
    }


def advance(previous: dict[str, Any] | None, *, seed: int, step: int) -> dict[str, Any]:
    """The state after step `step`, computed from the state after step `step - 1`.

    Pure: `previous` is not modified, and the result depends only on the arguments.
    """
    state = copy.deepcopy(previous) if previous is not None else initial_state(seed)
    if state["step"] != step - 1:
        raise ValueError(f"step {step} needs the state after step {step - 1}, got {state['step']}")
    rng = _rng(seed, step)
    state["clock"] += dt.timedelta(minutes=rng.randint(9, 21), seconds=rng.randint(0, 59))
    now: dt.datetime = state["clock"]
    if step % _RESTOCK_EVERY == 0:
        for sku in state["inventory"]:
            state["inventory"][sku] += 20
    shipped = _move_orders(state, rng, now)
    new = rng.randint(3, 6)
    revenue = Decimal("0.00")
    for _ in range(new):
        revenue += _place_order(state, rng, now)
    if rng.random() < 0.15:
        _cancel_one(state, rng, now)
    totals = state["totals"]
    totals["revenue"] += revenue
    totals["by_status"] = dict.fromkeys(_STATUSES, 0)
    for order in state["orders"].values():
        totals["by_status"][order["status"]] += 1
    state["batches"].append((step, now, new, shipped, revenue))
    state["step"] = step
    return state


def summary(state: dict[str, Any]) -> dict[str, Any]:
    """A few numbers about a state, for the demo's timeline."""
    totals = state["totals"]
    return {
        "orders": totals["orders"],
        "shipped": totals["by_status"]["shipped"] + totals["by_status"]["delivered"],
        "revenue": str(totals["revenue"]),
        "messages": len(state["outbox"]),
    }


def _message(state: dict[str, Any], now: dt.datetime, order: dict[str, Any], text: str) -> None:
    state["outbox"].append(
        {"at": now, "to": order["customer"][0], "order": order["id"], "text": text}
    )


def _place_order(state: dict[str, Any], rng: random.Random, now: dt.datetime) -> Decimal:
    order_id = f"SO-{state['next_order']}"
    state["next_order"] += 1
    customer = (f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", rng.choice(_CITIES))
    skus = rng.sample(sorted(_CATALOG), rng.randint(1, 3))
    lines = [(sku, rng.randint(1, 4), _CATALOG[sku][1]) for sku in skus]
    total = sum((qty * price for _, qty, price in lines), Decimal("0.00")).quantize(_CENT)
    short = [sku for sku, qty, _ in lines if state["inventory"][sku] < qty]
    status = "backordered" if short else "placed"
    if not short:
        for sku, qty, _ in lines:
            state["inventory"][sku] -= qty
    order = {
        "id": order_id,
        "customer": customer,
        "placed_at": now,
        "lines": lines,
        "total": total,
        "status": status,
        "history": [(status, now)],
    }
    state["orders"][order_id] = order
    state["totals"]["orders"] += 1
    state["totals"]["items"] += sum(qty for _, qty, _ in lines)
    first = customer[0].split()[0]
    items = sum(qty for _, qty, _ in lines)
    if short:
        product = _CATALOG[short[0]][0]
        _message(
            state,
            now,
            order,
            f"Sorry {first}, the {product} is out of stock; order "
            f"{order_id} will ship as soon as it is restocked.",
        )
    else:
        _message(
            state,
            now,
            order,
            f"Thanks, {first}! We received order {order_id} for {items} "
            f"item{'s' if items > 1 else ''}, {total} EUR in total. We will write again "
            f"when it ships.",
        )
    return total


def _move_orders(state: dict[str, Any], rng: random.Random, now: dt.datetime) -> int:
    """Move earlier orders along; returns how many shipped in this step."""
    shipped = 0
    for order in state["orders"].values():
        status = order["status"]
        roll = rng.random()
        if status == "backordered":
            if all(state["inventory"][sku] >= qty for sku, qty, _ in order["lines"]):
                for sku, qty, _ in order["lines"]:
                    state["inventory"][sku] -= qty
                _set_status(order, "placed", now)
                _message(
                    state,
                    now,
                    order,
                    f"Good news: everything in order {order['id']} is "
                    f"back in stock, and it is now being prepared.",
                )
        elif status == "placed" and roll < 0.7:
            weight = Decimal(rng.randint(3, 40)) / 10
            order["packed"] = (rng.choice(_WAREHOUSES), weight)
            _set_status(order, "packed", now)
            _message(
                state,
                now,
                order,
                f"Order {order['id']} was packed at our "
                f"{order['packed'][0]} warehouse ({weight} kg).",
            )
        elif status == "packed" and roll < 0.6:
            carrier, code = rng.choice(_CARRIERS)
            tracking = f"{code}{rng.randint(10**8, 10**9 - 1)}EU"
            eta = (now + dt.timedelta(days=rng.randint(1, 4))).date()
            order["shipment"] = {"carrier": carrier, "tracking": tracking, "eta": eta}
            _set_status(order, "shipped", now)
            shipped += 1
            _message(
                state,
                now,
                order,
                f"Order {order['id']} is on its way with {carrier} "
                f"(tracking {tracking}); expect it on {_WEEKDAYS[eta.weekday()]} "
                f"{eta.day} {_MONTHS[eta.month - 1]}.",
            )
        elif status == "shipped" and roll < 0.5:
            _set_status(order, "delivered", now)
            product = _CATALOG[order["lines"][0][0]][0]
            _message(
                state,
                now,
                order,
                f"Order {order['id']} was delivered in "
                f"{order['customer'][1]}. Enjoy your {product}!",
            )
    return shipped


def _cancel_one(state: dict[str, Any], rng: random.Random, now: dt.datetime) -> None:
    open_orders = [o for o in state["orders"].values() if o["status"] in ("placed", "backordered")]
    if not open_orders:
        return
    order = rng.choice(open_orders)
    if order["status"] == "placed":
        for sku, qty, _ in order["lines"]:
            state["inventory"][sku] += qty
    _set_status(order, "cancelled", now)
    state["totals"]["refunded"] += order["total"]
    _message(
        state,
        now,
        order,
        f"Order {order['id']} was cancelled at the customer's request; "
        f"{order['total']} EUR has been refunded.",
    )


def _set_status(order: dict[str, Any], status: str, now: dt.datetime) -> None:
    order["status"] = status
    order["history"].append((status, now))
