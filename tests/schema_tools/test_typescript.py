"""to_typescript: exact output (snapshots) and validity (the TypeScript compiler agrees).

Snapshots live in `snapshots/`; after an intended change to the output, rewrite them
with `STATEVAULT_UPDATE_SNAPSHOTS=1 pytest tests/schema_tools/test_typescript.py` and
read the diff. The compiler test needs Node's `npx`; it fetches TypeScript 5 once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import json
import os
import pathlib
import shutil
import subprocess
import uuid
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec
import pydantic
import pytest
from proposals import schema_of

from statevault.errors import SchemaDocumentError
from statevault.schema_tools import to_typescript

SNAPSHOTS = pathlib.Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("STATEVAULT_UPDATE_SNAPSHOTS") == "1"
TSC = ["npx", "--yes", "--package", "typescript@5", "tsc"]


class Status(enum.Enum):
    OPEN = "open"
    PAID = "paid"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Item(msgspec.Struct):
    """A line of an order."""

    sku: str
    qty: Annotated[int, msgspec.Meta(ge=1)] = 1


class Cat(msgspec.Struct, tag=True):
    name: str


class Dog(msgspec.Struct, tag="dog"):
    name: str
    good: bool = True


class Order(msgspec.Struct):
    id: str
    items: list[Item]
    total: float
    status: Status = Status.OPEN
    priority: Priority = Priority.LOW
    stage: Literal["new", "packed", 3] = "new"
    note: str | None = None
    tags: dict[str, int] = {}
    pair: tuple[int, str] = (1, "a")
    history: tuple[float, ...] = ()
    seen: frozenset[str] = frozenset()
    paid_at: dt.datetime | None = None
    ref: uuid.UUID | None = None
    amount: decimal.Decimal = decimal.Decimal("0")
    blob: bytes = b""
    pets: list[Cat | Dog] = []


def order_samples() -> list[Order]:
    return [
        Order("o1", [Item("a", 2)], 9.5),
        Order(
            "o2",
            [],
            0.0,
            status=Status.PAID,
            priority=Priority.HIGH,
            stage=3,
            note="rush",
            tags={"x": 1},
            pair=(7, "b"),
            history=(1.5, 2.0),
            seen=frozenset({"a"}),
            paid_at=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
            ref=uuid.UUID(int=1),
            amount=decimal.Decimal("1.25"),
            blob=b"\x00\x01",
            pets=[Cat("tom"), Dog("rex", good=False)],
        ),
    ]


class Comment(pydantic.BaseModel):
    """A remark on a ticket, possibly answered."""

    text: str = pydantic.Field(description="What was said.")
    replies: list[Comment] = []


class Ticket(pydantic.BaseModel):
    """A support ticket."""

    title: str
    kind: Literal["bug"] = "bug"
    score: float | None = None
    comments: list[Comment] = []
    labels: set[str] = set()
    due: dt.date | None = None


def ticket_samples() -> list[Ticket]:
    return [
        Ticket(title="crash"),
        Ticket(
            title="slow",
            score=0.5,
            comments=[Comment(text="seen", replies=[Comment(text="fixed")])],
            labels={"perf"},
            due=dt.date(2024, 6, 1),
        ),
    ]


class Address(TypedDict):
    street: str
    city: NotRequired[str]


@dataclasses.dataclass
class Customer:
    name: str
    addresses: list[Address]
    vip: bool = False


def customer_samples() -> list[Customer]:
    return [Customer("Ada", [{"street": "Main St"}, {"street": "2nd", "city": "Oslo"}])]


# A hand-written document with the parts msgspec and Pydantic do not emit.
HAND_WRITTEN: dict[str, Any] = {
    "title": "Settings",
    "type": "object",
    "description": "Everything a user can set.\nKept per account.",
    "properties": {
        "mode": {"type": ["string", "null"]},
        "dash-key": {"type": "integer", "maximum": 10},
        "limits": {"type": "object", "additionalProperties": {"type": "number"}},
        "extra": {
            "type": "object",
            "properties": {"known": {"type": "string"}},
            "additionalProperties": {"type": "boolean"},
        },
        "closed": {"type": "object", "additionalProperties": False},
        "mixed": {"enum": ["a", 1, True, None, 2.5]},
        "open_tuple": {"type": "array", "prefixItems": [{"type": "string"}], "items": True},
        "both": {"allOf": [{"$ref": "#/$defs/type"}, {"$ref": "#/$defs/string"}]},
        "anything": {},
        "nothing": False,
        "self": {"$ref": "#"},
        "pattern": {"type": "string", "pattern": "^[a-z]+$", "minLength": 1},
        "list_of_unions": {
            "type": "array",
            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "strange*/comment": {"type": "string", "description": "ends a comment */ early"},
    },
    "required": ["mode", "dash-key"],
    "$defs": {
        "type": {"type": "object", "properties": {"a": {"type": "string"}}},
        "string": {"type": "object", "properties": {"b": {"type": "string"}}},
    },
}

HAND_SAMPLES: list[Any] = [
    {"mode": None, "dash-key": 3},
    {
        "mode": "dark",
        "dash-key": 10,
        "limits": {"cpu": 1.5},
        "extra": {"known": "k", "flag": True},
        "closed": {},
        "mixed": None,
        "open_tuple": ["x", 1, {"any": "thing"}],
        "both": {"a": "x", "b": "y"},
        "anything": [1, "two"],
        "self": {"mode": "light", "dash-key": 1},
        "pattern": "abc",
        "list_of_unions": ["a", 1],
        "strange*/comment": "ok",
    },
]

CASES: dict[str, tuple[dict[str, Any], str, list[Any]]] = {
    "order": (
        schema_of(Order),
        "order",
        [json.loads(msgspec.json.encode(o)) for o in order_samples()],
    ),
    "ticket": (
        schema_of(Ticket),
        "ticket",
        [json.loads(t.model_dump_json()) for t in ticket_samples()],
    ),
    "customer": (
        schema_of(Customer),
        "customer",
        [json.loads(msgspec.json.encode(c)) for c in customer_samples()],
    ),
    "settings": (HAND_WRITTEN, "settings", HAND_SAMPLES),
}

# Values the declarations must reject: (case, type, value, why).
REJECTED: list[tuple[str, str, Any]] = [
    ("order", "Order", {"id": "o", "items": [], "total": 1, "status": "closed"}),
    ("order", "Order", {"id": "o", "items": [{"sku": 1}], "total": 1}),
    ("order", "Order", {"id": "o", "items": [], "total": 1, "pair": [1, 2]}),
    (
        "order",
        "Order",
        {"id": "o", "items": [], "total": 1, "pets": [{"type": "cow", "name": "x"}]},
    ),
    ("order", "Order", {"items": [], "total": 1}),
    ("ticket", "Ticket", {"title": "t", "kind": "feature"}),
    ("ticket", "Ticket", {"title": "t", "comments": [{"replies": []}]}),
    ("customer", "Customer", {"name": "n", "addresses": [{"city": "x"}]}),
    ("settings", "Settings", {"mode": 1, "dash-key": 1}),
    ("settings", "Settings", {"mode": None, "dash-key": 1, "closed": {"a": 1}}),
    ("settings", "Settings", {"mode": None, "dash-key": 1, "nothing": 1}),
]


def generated(case: str) -> str:
    schema, name, _ = CASES[case]
    return to_typescript(schema, name, version=2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_matches_snapshot(case: str) -> None:
    output = generated(case)
    snapshot = SNAPSHOTS / f"{case}.ts"
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        snapshot.write_text(output)
    assert output == snapshot.read_text()


def test_root_alias_when_the_class_name_differs_from_the_schema_name() -> None:
    output = to_typescript(schema_of(Item), "line")
    assert "export type Line = Item;\n" in output
    assert "export interface Item {\n" in output
    assert output.index("export type Line") < output.index("export interface Item")


def test_root_declared_once_when_names_agree() -> None:
    output = to_typescript(schema_of(Item), "item")
    assert output.count("export interface Item {") == 1
    assert "export type" not in output


def test_bad_reference_is_a_typed_error() -> None:
    with pytest.raises(SchemaDocumentError, match="points to nothing"):
        to_typescript({"type": "object", "properties": {"a": {"$ref": "#/$defs/X"}}}, "s")


@functools.cache
def tsc_unavailable() -> str | None:
    """Why the TypeScript compiler cannot run here, or None when it can."""
    if shutil.which("npx") is None:
        return "npx (Node.js) is not installed"
    try:
        probe = subprocess.run(
            [*TSC, "--version"], capture_output=True, text=True, timeout=240, check=False
        )
    except subprocess.TimeoutExpired:
        return "fetching TypeScript with npx timed out (no network?)"
    if probe.returncode != 0 or not probe.stdout.startswith("Version 5"):
        return f"npx could not run TypeScript 5 (no network?): {probe.stderr.strip()[-300:]}"
    return None


def test_typescript_compiler_accepts_declarations_and_samples_and_rejects_misfits(
    tmp_path: pathlib.Path,
) -> None:
    reason = tsc_unavailable()
    if reason is not None:
        pytest.skip(reason)
    checks: list[str] = []
    for case, (_, _, samples) in sorted(CASES.items()):
        (tmp_path / f"{case}.ts").write_text(generated(case))
        root = generated(case).split("export ", 2)[1].split()[1]
        checks.append(f'import type {{ {root} as {case}_root }} from "./{case}";')
        checks += [
            f"export const {case}_{i}: {case}_root = {json.dumps(sample)};"
            for i, sample in enumerate(samples)
        ]
    for i, (case, type_name, value) in enumerate(REJECTED):
        assert type_name == generated(case).split("export ", 2)[1].split()[1]
        checks += [
            "// @ts-expect-error: the declarations must reject this value",
            f"export const rejected_{i}: {case}_root = {json.dumps(value)};",
        ]
    (tmp_path / "check.ts").write_text("\n".join(checks) + "\n")
    compiled = subprocess.run(
        [
            *TSC,
            "--noEmit",
            "--strict",
            "--target",
            "es2022",
            "--module",
            "es2022",
            "--moduleResolution",
            "bundler",
            *sorted(p.name for p in tmp_path.glob("*.ts")),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
