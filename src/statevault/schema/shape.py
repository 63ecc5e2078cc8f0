"""The shape of a JSON Schema, and its fingerprint.

The fingerprint identifies the *shape* a JSON Schema describes: BLAKE3 of a
canonical form without its prose (titles, descriptions, examples) and with the names
of its definitions replaced by their order of first use. Rewording a docstring or
renaming a class (`OrderV3` -> `Order`) keeps the fingerprint; adding, removing,
renaming or retyping a field, or changing a default, changes it.
"""

from __future__ import annotations

import json
from typing import Any

from statevault.codec.digest import digest

_PROSE = frozenset({"title", "description", "examples", "$comment"})
"""JSON Schema keywords that document a shape without changing it."""
_NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
"""Keywords whose value maps names (not keywords) to schemas."""
_DEF_PREFIXES = ("#/$defs/", "#/definitions/")


def fingerprint(json_schema: dict[str, Any]) -> str:
    """BLAKE3 (hex) of the shape a JSON Schema describes."""
    text = json.dumps(_canonical(json_schema), sort_keys=True, separators=(",", ":"))
    return digest(text.encode()).hex()


def _canonical(json_schema: dict[str, Any]) -> Any:
    """The shape of a JSON Schema: no prose, definitions named by order of first use."""
    definitions: dict[str, Any] = {}
    for keyword in ("$defs", "definitions"):
        found = json_schema.get(keyword)
        if isinstance(found, dict):
            definitions.update(found)
    renamed: dict[str, str] = {}
    order: list[str] = []

    def rename(ref: str) -> str:
        for prefix in _DEF_PREFIXES:
            if ref.startswith(prefix):
                name = ref[len(prefix) :]
                if name not in renamed:
                    renamed[name] = f"d{len(renamed)}"
                    order.append(name)
                return f"#/$defs/{renamed[name]}"
        return ref

    def walk(node: Any, *, names: bool = False) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if names:  # a map of names to schemas: keep every key, walk the schemas
            return {key: walk(node[key]) for key in sorted(node)}
        out: dict[str, Any] = {}
        for key in sorted(node):
            if key in _PROSE or key in ("$defs", "definitions"):
                continue
            value = node[key]
            if key == "$ref" and isinstance(value, str):
                out[key] = rename(value)
            elif key in _NAME_MAPS:
                out[key] = walk(value, names=True)
            elif key in ("required", "enum") and isinstance(value, list):
                items = [walk(item) for item in value]
                out[key] = sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
            else:
                out[key] = walk(value)
        return out

    root = walk(json_schema)
    shapes: dict[str, Any] = {}
    done = 0
    while done < len(order):  # definitions reached from definitions get the next names
        name = order[done]
        shapes[renamed[name]] = walk(definitions.get(name))
        done += 1
    if shapes:
        root["$defs"] = shapes
    return root
