"""The schema compatibility corpus: runs written by five versions load as the newest.

`tests/data/corpus/make_corpus.py` wrote the runs (see `orders.py` for the versions);
`expected.json` holds what each loads as, recorded when it was added.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import shutil
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import statevault

CORPUS = pathlib.Path(__file__).parent / "data" / "corpus"
sys.path.insert(0, str(CORPUS))
import orders  # noqa: E402

EXPECTED: dict[str, Any] = json.loads((CORPUS / "expected.json").read_text())


@pytest.fixture(params=["sqlite", "files"])
def corpus(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    """A copy of a corpus vault (tests never touch the originals)."""
    if request.param == "sqlite":
        shutil.copy(CORPUS / "orders.db", tmp_path / "orders.db")
        return str(tmp_path / "orders.db")
    shutil.copytree(CORPUS / "orders-files", tmp_path / "orders-files")
    return f"files://{tmp_path / 'orders-files'}"


def as_expected(value: Any) -> Any:
    return json.loads(json.dumps(msgspec.to_builtins(value, order="sorted")))


def test_every_run_loads_as_the_newest_version(corpus: str) -> None:
    with statevault.open(corpus) as vault:
        assert set(vault.runs()) == set(EXPECTED)  # every run has its recorded result
        orders.register(vault)
        for run_id, expected in EXPECTED.items():
            run = vault.run(run_id, schema=orders.NAME)
            loaded = run.load()
            assert isinstance(loaded, orders.OrderV5)
            assert as_expected(loaded) == expected, run_id
            # Written by the code of its version, and still stored as it was.
            version = int(run_id[1 : run_id.index("-")])
            first = run.checkpoint_at(1)
            assert (first.schema, first.schema_version) == (orders.NAME, version)
            assert run.head is not None
            assert run.head.schema_version == version
        assert vault.verify().ok


def test_older_code_reads_newer_runs_through_ways_back(corpus: str) -> None:
    with statevault.open(corpus) as vault:
        orders.register(vault, version=4)
        vault.migration(orders.NAME, 5, 4)(orders.v5_to_v4)  # shipped with version 5
        for run_id in ("v5-simple", "v5-history", "v5-edge"):
            loaded = vault.run(run_id, schema=orders.NAME).load()
            assert isinstance(loaded, orders.OrderV4)
            assert loaded.total_cents == EXPECTED[run_id]["total_cents"]


def test_bulk_migration_of_the_corpus(corpus: str) -> None:
    with statevault.open(corpus) as vault:
        orders.register(vault)
        report = vault.migrate(orders.NAME)
        assert report.ok, [o.reason for o in report.failed]
        assert len(report.migrated) == 12
        assert len(report.current) == 3
        for run_id, expected in EXPECTED.items():
            run = vault.run(run_id, schema=orders.NAME)
            assert run.head is not None
            assert run.head.schema_version == orders.NEWEST
            assert as_expected(run.load()) == expected
        undone = vault.undo_migration(orders.NAME)
        assert len(undone.migrated) == 12
        for outcome in undone.migrated:
            run = vault.run(outcome.run_id)
            assert run.load() == run.load(at=outcome.seq - 2)  # as before the migration


# -- every state valid under version 1 comes out valid under version 5 --------------------
text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
items_v1 = st.builds(
    orders.ItemV1,
    sku=text,
    qty=st.one_of(st.integers(1, 10_000), st.integers(-5, 20_000)),
    price=st.one_of(st.floats(), st.floats(min_value=0, max_value=1_000_000)),
)
orders_v1 = st.builds(
    orders.OrderV1,
    id=text,
    customer=text,
    items=st.lists(items_v1, max_size=5),
    total=st.one_of(st.floats(), st.floats(0, 1e9)),
    status=st.sampled_from(["new", "paid", "shipped"]),
    created=st.datetimes(timezones=st.just(dt.UTC)),
)
V1 = statevault.Schema(orders.NAME, orders.OrderV1, 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=orders_v1)
def test_states_valid_under_v1_come_out_valid_under_v5(order: orders.OrderV1) -> None:
    try:
        V1.check(order)
    except statevault.SchemaValidationError:
        assume(False)  # only states that version 1 accepts
    with statevault.open("memory://") as vault:
        orders.register(vault, version=1)
        vault.run("r", schema=orders.NAME).save(order)
        orders.register(vault)  # now the code of version 5
        loaded = vault.run("r", schema=orders.NAME).load()
    assert isinstance(loaded, orders.OrderV5)
    statevault.Schema(orders.NAME, orders.OrderV5, 5).check(loaded)
    assert loaded.total_cents == round(order.total * 100)
    assert [(i.sku, i.qty, i.price_cents) for i in loaded.items] == [
        (i.sku, i.qty, round(i.price * 100)) for i in order.items
    ]
    assert loaded.customer.name == order.customer
    status = "open" if order.status == "new" else order.status
    assert loaded.status.value == status
    assert loaded.created == order.created
