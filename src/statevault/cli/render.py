"""State values as people read them (rich text) and as programs read them (JSON).

The text form keeps every type visible: `(1, 2)` is a tuple and `[1, 2]` a list,
`{1, 2}` a set, datetimes show their offset, Decimals their exact digits. Bytes and
arrays are summarized (their length, dtype and shape), since their contents are
rarely readable. A record whose class this process cannot import comes back as an
`UnknownRecord` and is shown under its stored type name, with its fields.

Neither form imports NumPy: arrays are recognised by their type's module.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import pathlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from rich.text import Text

from statevault import UnknownRecord

STYLE_STR = "green"
STYLE_NUM = "cyan"
STYLE_CONST = "italic magenta"
STYLE_TYPE = "bold magenta"
STYLE_DIM = "dim"

_INDENT = 4
_BYTES_SHOWN = 16
JSON_ARRAY_ITEMS = 1000
"""Arrays up to this many elements carry their `data` in JSON; larger ones only dtype
and shape (the JSON would dwarf the array; `--path` can pick a slice's owner)."""


# -- text ---------------------------------------------------------------------------------
@dataclasses.dataclass(slots=True)
class _Leaf:
    text: Text

    @property
    def width(self) -> int:
        return len(self.text)


@dataclasses.dataclass(slots=True)
class _Group:
    """A container: `open`, items separated by commas, `close`; laid out flat if it fits."""

    open: Text
    items: list[tuple[Text | None, _Node]]
    close: Text
    hidden: int = 0
    width: int = 0

    def __post_init__(self) -> None:
        inner = sum((len(p) if p is not None else 0) + n.width for p, n in self.items)
        inner += 2 * max(len(self.items) - 1, 0)
        if self.hidden:
            inner += len(_more(self.hidden)) + (2 if self.items else 0)
        self.width = len(self.open) + inner + len(self.close)


_Node = _Leaf | _Group


def _more(hidden: int) -> str:
    return f"… {hidden:,} more"


def _leaf(text: str, style: str = "") -> _Leaf:
    return _Leaf(Text(text, style=style))


def _typed(name: str, inner: str, style: str = STYLE_NUM) -> _Leaf:
    """`name(inner)`, the constructor-like form used for non-JSON scalars."""
    text = Text(name, style=STYLE_TYPE)
    text.append("(")
    text.append(inner, style=style)
    text.append(")")
    return _Leaf(text)


def _maybe_sorted(items: Iterable[Any]) -> list[Any]:
    """Set members in sorted order when they compare, so equal sets print alike."""
    listed = list(items)
    try:
        return sorted(listed)
    except TypeError:
        return listed


def is_ndarray(value: Any) -> bool:
    t = type(value)
    return t.__name__ == "ndarray" and t.__module__.partition(".")[0] == "numpy"


def is_numpy_scalar(value: Any) -> bool:
    t = type(value)
    return t.__module__.partition(".")[0] == "numpy" and hasattr(value, "dtype")


def _bytes_leaf(value: bytes) -> _Leaf:
    text = Text("bytes", style=STYLE_TYPE)
    text.append("[")
    text.append(f"{len(value):,}", style=STYLE_NUM)
    text.append("]")
    if value:
        shown = repr(value[:_BYTES_SHOWN])
        text.append(" ")
        text.append(shown + ("…" if len(value) > _BYTES_SHOWN else ""), style=STYLE_STR)
    return _Leaf(text)


def _datetime_text(value: dt.datetime | dt.time) -> str:
    text = value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    tz = value.tzinfo
    if tz is None:
        return f"{text}, naive"
    key = getattr(tz, "key", None)  # a zoneinfo zone: its name says more than the offset
    if isinstance(key, str):
        return f"{text} {key}"
    return text


class _Builder:
    def __init__(self, *, max_items: int) -> None:
        self.max_items = max_items

    def node(self, value: Any) -> _Node:
        t = type(value)
        if value is None or t is bool:
            return _leaf(repr(value), STYLE_CONST)
        if t is int or t is float:
            return _leaf(repr(value), STYLE_NUM)
        if t is str:
            return _leaf(repr(value), STYLE_STR)
        if t is bytes:
            return _bytes_leaf(value)
        if t is dict:
            return self.mapping(Text("{"), value, Text("}"))
        if t is list:
            return self.sequence(Text("["), value, Text("]"))
        if t is tuple:
            return self.sequence(Text("("), value, Text(",)" if len(value) == 1 else ")"))
        if t is set:
            if not value:
                return _leaf("set()", STYLE_TYPE)
            return self.sequence(Text("{"), _maybe_sorted(value), Text("}"))
        if t is frozenset:
            if not value:
                return _leaf("frozenset()", STYLE_TYPE)
            opener = Text("frozenset", style=STYLE_TYPE) + Text("({")
            return self.sequence(opener, _maybe_sorted(value), Text("})"))
        if t is collections.OrderedDict:
            opener = Text("OrderedDict", style=STYLE_TYPE) + Text("({")
            return self.mapping(opener, value, Text("})"))
        if t is dt.datetime:
            return _typed("datetime", _datetime_text(value))
        if t is dt.date:
            return _typed("date", value.isoformat())
        if t is dt.time:
            return _typed("time", _datetime_text(value))
        if t is dt.timedelta:
            return _typed("timedelta", repr(value).partition("(")[2][:-1])
        if t is decimal.Decimal:
            return _typed("Decimal", repr(str(value)))
        if t is uuid.UUID:
            return _typed("UUID", repr(str(value)), STYLE_STR)
        if t is fractions.Fraction:
            return _typed("Fraction", f"{value.numerator}, {value.denominator}")
        if isinstance(value, pathlib.PurePath):
            return _typed(t.__name__, repr(str(value)), STYLE_STR)
        if t is UnknownRecord:
            return self.unknown(value)
        if is_ndarray(value):
            shape = ", ".join(str(n) for n in value.shape)
            return _typed("ndarray", f"dtype={value.dtype}, shape=({shape})", STYLE_NUM)
        if is_numpy_scalar(value):
            return _typed(str(value.dtype), repr(value.item()))
        if isinstance(value, enum.Enum):
            return _leaf(f"{t.__qualname__}.{value.name}", STYLE_TYPE)
        fields = record_fields(value)
        if fields is not None:
            return self.record(t.__qualname__, fields)
        return _leaf(repr(value))

    def _limit(self, items: list[Any]) -> tuple[list[Any], int]:
        if self.max_items and len(items) > self.max_items:
            return items[: self.max_items], len(items) - self.max_items
        return items, 0

    def sequence(self, opener: Text, items: Iterable[Any], closer: Text) -> _Group:
        shown, hidden = self._limit(list(items))
        return _Group(opener, [(None, self.node(item)) for item in shown], closer, hidden)

    def mapping(self, opener: Text, value: dict[Any, Any], closer: Text) -> _Group:
        shown, hidden = self._limit(list(value.items()))
        entries: list[tuple[Text | None, _Node]] = []
        for key, item in shown:
            prefix = flat(self.node(key))
            prefix.append(": ")
            entries.append((prefix, self.node(item)))
        return _Group(opener, entries, closer, hidden)

    def record(self, name: str, fields: dict[str, Any]) -> _Group:
        shown, hidden = self._limit(list(fields.items()))
        entries: list[tuple[Text | None, _Node]] = [
            (Text(f"{key}="), self.node(item)) for key, item in shown
        ]
        return _Group(Text(name, style=STYLE_TYPE) + Text("("), entries, Text(")"), hidden)

    def unknown(self, value: UnknownRecord) -> _Node:
        if value.kind == "enum":
            if "name" in value.fields:
                return _leaf(f"{value.type_name}.{value.fields['name']}", STYLE_TYPE)
            inner = flat(self.node(value.fields.get("value")))
            return _Leaf(Text(value.type_name, style=STYLE_TYPE) + Text("(") + inner + Text(")"))
        return self.record(value.type_name, value.fields)


def record_fields(value: Any) -> dict[str, Any] | None:
    """The fields of a dataclass, msgspec Struct or Pydantic model instance, else None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, msgspec.Struct):
        return {name: getattr(value, name) for name in value.__struct_fields__}
    model_fields = getattr(type(value), "model_fields", None)
    if isinstance(model_fields, dict):
        return {name: getattr(value, name) for name in model_fields}
    return None


def flat(node: _Node) -> Text:
    """The node on one line."""
    if isinstance(node, _Leaf):
        return node.text.copy()
    out = node.open.copy()
    for i, (prefix, child) in enumerate(node.items):
        if i:
            out.append(", ")
        if prefix is not None:
            out.append_text(prefix)
        out.append_text(flat(child))
    if node.hidden:
        out.append(", " if node.items else "")
        out.append(_more(node.hidden), style=STYLE_DIM)
    out.append_text(node.close)
    return out


def _layout(node: _Node, out: Text, *, indent: int, room: int, width: int) -> None:
    """Append `node` to `out`: flat if it fits in `room` columns, else one item a line."""
    if isinstance(node, _Leaf) or node.width <= room:
        out.append_text(flat(node))
        return
    inner = indent + _INDENT
    pad = "\n" + " " * inner
    out.append_text(node.open)
    for prefix, child in node.items:
        out.append(pad)
        used = inner + 1  # the comma after the item
        if prefix is not None:
            out.append_text(prefix)
            used += len(prefix)
        # A long key can leave little room; past the floor the item overflows instead
        # of being split into one character per line.
        child_room = max(_ROOM_FLOOR, width - used)
        _layout(child, out, indent=inner, room=child_room, width=width)
        out.append(",")
    if node.hidden:
        out.append(pad)
        out.append(_more(node.hidden), style=STYLE_DIM)
    out.append("\n" + " " * indent)
    out.append_text(node.close)


_ROOM_FLOOR = 20


def render(value: Any, *, width: int = 100, max_items: int = 0) -> Text:
    """`value` as rich text, fitted to `width` columns where it can be.

    Args:
        value: a state, or any part of one.
        width: the columns to fit in (long strings may still run over).
        max_items: show at most this many items of each container (0: all).

    Example:
        >>> render({"t": (1,), "s": {2}}).plain
        "{'t': (1,), 's': {2}}"
    """
    node = _Builder(max_items=max_items).node(value)
    out = Text()
    _layout(node, out, indent=0, room=width, width=width)
    return out


# -- JSON ---------------------------------------------------------------------------------
def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return msgspec.json.encode(key).decode()
    if isinstance(key, (int, float)):
        return repr(key)
    return flat(_Builder(max_items=0).node(key)).plain


def jsonable(value: Any) -> Any:
    """`value` with the parts msgspec's JSON encoder would get wrong made explicit.

    Records (including `UnknownRecord`) become `{"$type": name, ...fields}`, sets and
    frozensets sorted lists, arrays `{"dtype", "shape", "data"}`, and dict keys strings.
    Datetimes, Decimals, bytes, UUIDs and timedeltas are left for msgspec, which writes
    them as ISO 8601, strings, base64, strings and ISO 8601 durations.
    """
    t = type(value)
    if value is None or t in (str, int, float, bool):
        return value
    if t is dict or t is collections.OrderedDict:
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [jsonable(v) for v in value]
    if t is set or t is frozenset:
        return [jsonable(v) for v in _maybe_sorted(value)]
    if t is UnknownRecord:
        return {"$type": value.type_name, **{k: jsonable(v) for k, v in value.fields.items()}}
    if is_ndarray(value):
        out: dict[str, Any] = {"dtype": str(value.dtype), "shape": list(value.shape)}
        if value.size <= JSON_ARRAY_ITEMS:
            out["data"] = jsonable(value.tolist())
        return out
    if is_numpy_scalar(value):
        return jsonable(value.item())
    if isinstance(value, enum.Enum):
        return {"$type": t.__qualname__, "name": value.name}
    fields = record_fields(value)
    if fields is not None:
        return {"$type": t.__qualname__, **{k: jsonable(v) for k, v in fields.items()}}
    return value


def _enc_hook(value: Any) -> Any:
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, (fractions.Fraction, pathlib.PurePath)):
        return str(value)
    raise NotImplementedError(f"cannot write a {type(value).__qualname__} as JSON")


def to_json(value: Any, *, convert: Callable[[Any], Any] = jsonable) -> bytes:
    """Indented JSON of `value` (see `jsonable` for how each type is written)."""
    return msgspec.json.format(msgspec.json.encode(convert(value), enc_hook=_enc_hook), indent=2)
