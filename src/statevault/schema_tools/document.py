"""Reading JSON Schema documents: local references, structural equality, type names, values.

The schema tools read the documents statevault stores for each schema version:
`msgspec.json.schema(...)` output (a `$ref` to `$defs`) and Pydantic's
`model_json_schema()` (the root inline, nested models in `$defs`). Only the part of
JSON Schema those produce is understood; other keywords are carried along unread.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import operator
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from statevault.errors import SchemaDocumentError

Node = Mapping[str, Any] | bool
"""A JSON Schema node: an object, or `true` (anything) / `false` (nothing)."""

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$schema",
        "$id",
        "$defs",
        "definitions",
    }
)
"""Keywords that describe a schema without constraining its values."""

ROOT_KEY = "#"
"""The reference key of a document's root."""

_REF_PREFIXES = ("#/$defs/", "#/definitions/")

# Python spellings of the formats msgspec and Pydantic emit, for type names people read.
_FORMAT_NAMES = {
    "date-time": "datetime",
    "date": "date",
    "time": "time",
    "duration": "timedelta",
    "uuid": "UUID",
    "decimal": "Decimal",
}


class SchemaReader:
    """One JSON Schema document, resolving its local `$ref`s.

    Args:
        document: the parsed JSON Schema (a dict).
        label: what the document is, for error messages (`"order v2"`).
    """

    def __init__(self, document: Any, *, label: str = "schema") -> None:
        if not isinstance(document, Mapping):
            raise SchemaDocumentError(
                f"{label}: a JSON Schema document must be a JSON object, "
                f"got {type(document).__name__}"
            )
        self.root: Mapping[str, Any] = document
        self.label = label

    def resolve(self, node: Node) -> tuple[str | None, Node]:
        """Follow `$ref`s from `node`: the key of the last reference followed and the target.

        The key is `"#/$defs/Name"` (or `"#"` for the root) when a reference was
        followed, `None` when `node` is itself the target.

        Raises:
            SchemaDocumentError: a reference that points nowhere, or loops.
        """
        key: str | None = None
        seen: set[str] = set()
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen:
                raise SchemaDocumentError(f"{self.label}: $ref {ref!r} refers to itself")
            seen.add(ref)
            node = self._target(ref)
            key = ref
        return key, node

    def _target(self, ref: str) -> Node:
        if ref == ROOT_KEY:
            return self.root
        for prefix in _REF_PREFIXES:
            if ref.startswith(prefix):
                section = self.root.get(prefix[2:-1])
                name = ref[len(prefix) :].replace("~1", "/").replace("~0", "~")
                if isinstance(section, Mapping) and name in section:
                    target: Node = section[name]
                    return target
        raise SchemaDocumentError(
            f"{self.label}: $ref {ref!r} points to nothing in the document; only local "
            f"references into $defs are supported"
        )

    def name_of(self, key: str | None, node: Node) -> str:
        """The name a record or enum goes by: its `$defs` key, else its title, else `Root`."""
        if key is not None and key != ROOT_KEY:
            return key.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and isinstance(node.get("title"), str):
            return str(node["title"])
        return "Root"

    def definitions(self) -> Iterator[tuple[str, Node]]:
        """Every `$defs` (or `definitions`) entry as (reference key, node), in document order."""
        for section in ("$defs", "definitions"):
            entries = self.root.get(section)
            if isinstance(entries, Mapping):
                for name, node in entries.items():
                    escaped = str(name).replace("~", "~0").replace("/", "~1")
                    yield f"#/{section}/{escaped}", node

    def canonical(self, node: Node) -> Any:
        """A plain value equal for two nodes exactly when they accept the same values.

        References are inlined; annotations (titles, descriptions, defaults) and the
        order of properties, `required`, `enum` and unions do not count. A recursive
        reference becomes its distance up the current path, so a renamed recursive
        record still compares equal.
        """
        return self._canonical(node, [])

    def _canonical(self, node: Node, stack: list[str]) -> Any:
        if isinstance(node, bool):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in stack:
                return {"$backref": len(stack) - stack.index(ref)}
            _, target = self.resolve({"$ref": ref})
            return self._canonical(target, [*stack, ref])
        out: dict[str, Any] = {}
        for word, value in node.items():
            if word in ANNOTATIONS:
                continue
            if word in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
                members = [self._canonical(member, stack) for member in value]
                out[word] = sorted(members, key=_sort_key)
            elif word in ("properties", "patternProperties") and isinstance(value, Mapping):
                out[word] = {k: self._canonical(v, stack) for k, v in value.items()}
            elif word in ("items", "additionalProperties", "not", "contains") and isinstance(
                value, Mapping | bool
            ):
                out[word] = self._canonical(value, stack)
            elif word == "prefixItems" and isinstance(value, list):
                out[word] = [self._canonical(member, stack) for member in value]
            elif word in ("required", "enum", "type") and isinstance(value, list):
                out[word] = sorted(value, key=_sort_key)
            else:
                out[word] = value
        return out

    def same_type(self, node: Node, other_doc: SchemaReader, other: Node) -> bool:
        """Whether `node` here and `other` in `other_doc` accept the same values."""
        return bool(self.canonical(node) == other_doc.canonical(other))

    def type_name(self, node: Node) -> str:
        """A Python-like name for the type a node accepts: `list[Item]`, `str | None`."""
        return self._type_name(node, depth=0)

    def _type_name(self, node: Node, depth: int) -> str:
        if depth > 8:
            return "..."
        key, node = self.resolve(node)
        if isinstance(node, bool):
            return "Any" if node else "Never"
        if key is not None and (is_record(node) or "enum" in node):
            return self.name_of(key, node)
        if "const" in node:
            return f"Literal[{_py(node['const'])}]"
        if isinstance(node.get("enum"), list):
            return f"Literal[{', '.join(_py(v) for v in node['enum'])}]"
        members = union_members(node)
        if members is not None:
            return " | ".join(self._type_name(m, depth + 1) for m in members)
        kind = node.get("type")
        if kind == "string":
            if node.get("contentEncoding") == "base64":
                return "bytes"
            return _FORMAT_NAMES.get(str(node.get("format")), "str")
        if kind in ("integer", "number", "boolean", "null"):
            return {"integer": "int", "number": "float", "boolean": "bool", "null": "None"}[kind]
        if kind == "array":
            prefix = node.get("prefixItems")
            if isinstance(prefix, list):
                parts = [self._type_name(m, depth + 1) for m in prefix]
                rest = node.get("items", True)
                if rest is not False:
                    parts.append(f"*{self._type_name(rest, depth + 1)}")
                return f"tuple[{', '.join(parts)}]"
            item = self._type_name(node.get("items", True), depth + 1)
            return f"set[{item}]" if node.get("uniqueItems") else f"list[{item}]"
        if kind == "object" or "properties" in node:
            if is_record(node):
                return self.name_of(key, node)
            values = node.get("additionalProperties", True)
            return f"dict[str, {self._type_name(values, depth + 1)}]"
        return "Any"

    def fits(self, value: Any, node: Node) -> bool:
        """Whether a stored value (as a migration sees it) is valid under `node`.

        Checks types, enums and consts, records, arrays, tuples, maps, unions and the
        common bounds; keywords it does not know are taken as satisfied. Besides JSON
        values it accepts what statevault stores natively: bytes, datetimes, UUIDs,
        Decimals and tuples.
        """
        _, node = self.resolve(node)
        if isinstance(node, bool):
            return node
        if "const" in node and not _same_value(value, node["const"]):
            return False
        if isinstance(node.get("enum"), list) and not any(
            _same_value(value, option) for option in node["enum"]
        ):
            return False
        for word in ("anyOf", "oneOf"):
            if isinstance(node.get(word), list) and not any(
                self.fits(value, member) for member in node[word]
            ):
                return False
        if isinstance(node.get("allOf"), list) and not all(
            self.fits(value, member) for member in node["allOf"]
        ):
            return False
        kinds = node.get("type")
        if kinds is None:
            return True
        if isinstance(kinds, str):
            kinds = [kinds]
        return any(self._fits_type(value, str(kind), node) for kind in kinds)

    def _fits_type(self, value: Any, kind: str, node: Mapping[str, Any]) -> bool:
        if kind == "null":
            return value is None
        if kind == "boolean":
            return isinstance(value, bool)
        if kind in ("integer", "number"):
            if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
                return False
            if kind == "integer" and not isinstance(value, int):
                return False
            return _within_bounds(value, node)
        if kind == "string":
            return _fits_string(value, node)
        if kind == "array":
            return isinstance(value, list | tuple | set | frozenset) and self._fits_array(
                list(value), node
            )
        if kind == "object":
            return isinstance(value, Mapping) and self._fits_object(value, node)
        return True

    def _fits_array(self, items: list[Any], node: Mapping[str, Any]) -> bool:
        if not _within_count(len(items), node, "minItems", "maxItems"):
            return False
        prefix = node.get("prefixItems")
        head: list[Node] = list(prefix) if isinstance(prefix, list) else []
        rest: Node = node.get("items", True)
        for i, item in enumerate(items):
            if not self.fits(item, head[i] if i < len(head) else rest):
                return False
        return True

    def _fits_object(self, value: Mapping[Any, Any], node: Mapping[str, Any]) -> bool:
        properties = node.get("properties") or {}
        for name in node.get("required") or ():
            if name not in value:
                return False
        extra: Node = node.get("additionalProperties", True)
        for name, item in value.items():
            schema = properties.get(name, extra) if isinstance(name, str) else extra
            if not self.fits(item, schema):
                return False
        return True


def is_record(node: Node) -> bool:
    """Whether a resolved node describes a record: an object with named properties."""
    return (
        isinstance(node, Mapping)
        and isinstance(node.get("properties"), Mapping)
        and node.get("type", "object") == "object"
    )


def union_members(node: Mapping[str, Any]) -> list[Node] | None:
    """The alternatives of a union node (`anyOf`, `oneOf`, a list of types), else None."""
    for word in ("anyOf", "oneOf"):
        members = node.get(word)
        if isinstance(members, list):
            return list(members)
    kinds = node.get("type")
    if isinstance(kinds, list):
        rest = {k: v for k, v in node.items() if k != "type"}
        return [{**rest, "type": kind} for kind in kinds]
    return None


def is_null(node: Node) -> bool:
    """Whether a (resolved) node accepts only `null`."""
    if not isinstance(node, Mapping):
        return False
    return node.get("type") == "null" or ("const" in node and node["const"] is None)


def python_literal(value: Any) -> str:
    """Python source for a JSON value (a default taken from a schema)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)


def _py(value: Any) -> str:
    return python_literal(value)


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _same_value(value: Any, option: Any) -> bool:
    # JSON has no bool/number overlap: `true` is not `1`, though Python says True == 1.
    if isinstance(value, bool) or isinstance(option, bool):
        return isinstance(value, bool) and isinstance(option, bool) and value == option
    if isinstance(value, list | tuple) and isinstance(option, list):
        return len(value) == len(option) and all(map(_same_value, value, option))
    return bool(value == option)


def _within_bounds(value: float | decimal.Decimal, node: Mapping[str, Any]) -> bool:
    for word, holds in _BOUNDS:
        bound = node.get(word)
        is_number = isinstance(bound, int | float) and not isinstance(bound, bool)
        if is_number and not holds(value, bound):
            return False
    return True


_BOUNDS: tuple[tuple[str, Callable[[Any, Any], bool]], ...] = (
    ("minimum", operator.ge),
    ("maximum", operator.le),
    ("exclusiveMinimum", operator.gt),
    ("exclusiveMaximum", operator.lt),
)


def _within_count(count: int, node: Mapping[str, Any], low: str, high: str) -> bool:
    least, most = node.get(low), node.get(high)
    if isinstance(least, int) and count < least:
        return False
    return not (isinstance(most, int) and count > most)


# What statevault stores natively for a string format, and how the text form parses.
_FORMATS: dict[str, tuple[type, Callable[[str], object]]] = {
    "date-time": (dt.datetime, dt.datetime.fromisoformat),
    "date": (dt.date, dt.date.fromisoformat),
    "time": (dt.time, dt.time.fromisoformat),
    "uuid": (uuid.UUID, uuid.UUID),
    "decimal": (decimal.Decimal, decimal.Decimal),
    "duration": (dt.timedelta, str),
}


def _fits_string(value: Any, node: Mapping[str, Any]) -> bool:
    native, parse = _FORMATS.get(str(node.get("format")), (None, None))
    if native is not None and isinstance(value, native):
        return True
    if node.get("contentEncoding") == "base64":
        if isinstance(value, bytes | bytearray):
            return True
        parse = _base64
    if not isinstance(value, str):
        return False
    if parse is not None:
        try:
            parse(value)
        except (ValueError, ArithmeticError):
            return False
    if not _within_count(len(value), node, "minLength", "maxLength"):
        return False
    pattern = node.get("pattern")
    return not (isinstance(pattern, str) and re.search(pattern, value) is None)


def _base64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
