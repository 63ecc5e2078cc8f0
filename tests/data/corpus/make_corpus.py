"""Add runs to the schema compatibility corpus in tests/data/corpus/.

Run `python tests/data/corpus/make_corpus.py`: for every version of `orders.py` it
writes, with only that version's type registered (as that version's code would), the
runs `v<N>-simple`, `v<N>-history` (a save and two transactions) and `v<N>-edge`, into
a SQLite vault and a files vault. It then records in `expected.json` what each new run
loads as at the newest version. Runs and expectations that exist are never rewritten:
the corpus only grows. After adding a version to `orders.py`, run it again.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import sys
from typing import Any

import msgspec

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import orders  # noqa: E402

import statevault  # noqa: E402

VAULTS = {"sqlite": HERE / "orders.db", "files": HERE / "orders-files"}
EXPECTED = HERE / "expected.json"
CREATED = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)


def url(kind: str) -> str:
    return str(VAULTS[kind]) if kind == "sqlite" else f"files://{VAULTS[kind]}"


def item(version: int, sku: str, qty: int, price: float) -> Any:
    if version <= 2:
        return orders.ItemV1(sku, qty, price)
    if version <= 4:
        return orders.ItemV3(sku, qty, round(price * 100))
    return orders.ItemV5(sku, qty, round(price * 100), discount_cents=qty)


def order(version: int, run_id: str, customer: str, lines: list[tuple[str, int, float]]) -> Any:
    items = [item(version, *line) for line in lines]
    total = sum(qty * price for _, qty, price in lines)
    if version == 1:
        return orders.OrderV1(run_id, customer, items, total, "new", CREATED)
    who = orders.CustomerV2(customer, f"{customer.split(maxsplit=1)[0].lower()}@example.org")
    if version == 2:
        return orders.OrderV2(run_id, who, items, total, "new", CREATED, "EUR", ["gift wrap"])
    if version == 3:
        return orders.OrderV3(run_id, who, items, round(total * 100), "new", CREATED, "CHF")
    if version == 4:
        return orders.OrderV4(run_id, who, items, round(total * 100), orders.Status.OPEN, CREATED)
    return orders.OrderV5(
        run_id,
        who,
        items,
        round(total * 100),
        orders.Status.OPEN,
        CREATED,
        "EUR",
        orders.Address("1 Main St", "Basel", "CH"),
        {"rush"},
    )


def write_version(vault: statevault.Vault, version: int) -> list[str]:
    """The runs of one version that the vault lacks, written by that version's code."""
    orders.register(vault, version=version)
    added = []
    existing = set(vault.runs())
    runs = {
        f"v{version}-simple": ("Ada Lovelace", [("MUG-01", 2, 9.9), ("LAMP-07", 1, 34.5)]),
        f"v{version}-history": ("Grace Hopper", [("BOOK-3", 1, 12.0)]),
        f"v{version}-edge": ("Zoë Ünïcode 名前", []),
    }
    for run_id, (customer, lines) in runs.items():
        if run_id in existing:
            continue
        run = vault.run(run_id, schema=orders.NAME)
        run.save(order(version, run_id, customer, lines))
        if run_id.endswith("history"):
            with run.transaction() as state:
                state.items.append(item(version, "PEN-9", 3, 1.25))
            with run.transaction() as state:
                state.status = "paid" if version < 4 else orders.Status.PAID
        added.append(run_id)
    return added


def main() -> None:
    expected: dict[str, Any] = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    for kind in VAULTS:
        added: list[str] = []
        for version in sorted(orders.TYPES):
            with statevault.open(url(kind)) as vault:
                added += write_version(vault, version)
        with statevault.open(url(kind)) as vault:
            orders.register(vault)
            for run_id in added:
                if run_id in expected:
                    continue
                loaded = vault.run(run_id, schema=orders.NAME).load()
                expected[run_id] = msgspec.to_builtins(loaded, order="sorted")
        print(f"{kind}: added {len(added)} runs: {', '.join(added) or 'none'}")
    EXPECTED.write_text(json.dumps(expected, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
