"""Delta operations: small changes to a state, recorded instead of the whole state.

An operation names a path into the state and what to do there. Paths are lists of
keys (dict keys of any hashable type, list or tuple indexes, record field names), or
the text syntax of `statevault.paths` (`"results.rows.17"`, `'cfg["a.b"]'`).

- `set(path, value)`: put `value` there (a new dict key, an existing list index or
  record field; `[]` is the whole state);
- `delete(path)`: remove a dict key or list item;
- `append(path, value)`, `extend(path, values)`: as `list.append` and `list.extend`;
- `insert(path, value)`: as `list.insert`, at the index that ends the path;
- `increment(path, amount=1)`: add to an int, float or Decimal;
- `merge(path, mapping)`: as `dict.update` (shallow).

`apply(state, ops)` changes a state in place, all operations or none. The journal
stores `ops_to_value(ops)`, a plain state value (a list) that the codec encodes like
any other; `ops_from_value` rebuilds the operations.

Keys are matched exactly: `17` is not `"17"` (`paths.lookup` falls back from one to
the other when reading, but a write must mean one key, or replaying the journal could
touch a different key than the change did). Write a text key of digits as `a["17"]`.

Example:
    >>> from statevault import ops
    >>> state = {"step": 1, "messages": []}
    >>> ops.apply(state, [ops.increment("step"), ops.append("messages", "hi")])
    {'step': 2, 'messages': ['hi']}
"""

from __future__ import annotations

import builtins
import collections
import copy
import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import operator
import pathlib
import reprlib
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal, TypeAlias

import msgspec

from statevault.codec.encoding import UnknownRecord
from statevault.errors import CorruptionError, OpError, UnsupportedFormatError
from statevault.paths import format_path, parse

OPS_FORMAT: Final = 1
"""The version of `ops_to_value`'s list form; it leads every encoded batch."""

PathLike: TypeAlias = str | Sequence[Any]
"""A path as text (`"results.rows.17"`) or as a sequence of keys."""

Number: TypeAlias = int | float | decimal.Decimal


# -- the operations ------------------------------------------------------------------
# Frozen, tagged and array-like: msgspec writes `SetOp(("a", 1), v)` as
# `["set", ["a", 1], v]`, the same shape as `ops_to_value`. Paths are tuples, so an op
# recorded once cannot be changed by whoever built its path.


class SetOp(msgspec.Struct, tag="set", frozen=True, array_like=True):
    """Put `value` at `path`."""

    path: tuple[Any, ...]
    value: Any


class DeleteOp(msgspec.Struct, tag="delete", frozen=True, array_like=True):
    """Remove the dict key or list item at `path`."""

    path: tuple[Any, ...]


class AppendOp(msgspec.Struct, tag="append", frozen=True, array_like=True):
    """Append `value` to the list at `path`."""

    path: tuple[Any, ...]
    value: Any


class ExtendOp(msgspec.Struct, tag="extend", frozen=True, array_like=True):
    """Append each of `values` to the list at `path`."""

    path: tuple[Any, ...]
    values: tuple[Any, ...]


class InsertOp(msgspec.Struct, tag="insert", frozen=True, array_like=True):
    """Insert `value` into the list at `path[:-1]`, before index `path[-1]`."""

    path: tuple[Any, ...]
    value: Any


class IncrementOp(msgspec.Struct, tag="increment", frozen=True, array_like=True):
    """Add `amount` to the number at `path`."""

    path: tuple[Any, ...]
    amount: Number


class MergeOp(msgspec.Struct, tag="merge", frozen=True, array_like=True):
    """Update the dict at `path` with `mapping` (shallow, as `dict.update`)."""

    path: tuple[Any, ...]
    mapping: dict[Any, Any]


Op: TypeAlias = SetOp | DeleteOp | AppendOp | ExtendOp | InsertOp | IncrementOp | MergeOp

_OP_TYPES: Final[tuple[type[Any], ...]] = (
    SetOp,
    DeleteOp,
    AppendOp,
    ExtendOp,
    InsertOp,
    IncrementOp,
    MergeOp,
)
_NUMBER_TYPES: Final = (int, float, decimal.Decimal)


def tag_of(op: Op) -> str:
    """The operation's name: `"set"`, `"delete"`, ..."""
    tag: str = type(op).__struct_config__.tag  # type: ignore[assignment]
    return tag


# -- building operations ---------------------------------------------------------------
# These share their names with the operations (`set`, not `set_`) because users write
# `ops.set(...)`. Inside this module the builtin is therefore always `builtins.set`.
# An operation holds its value by reference and does not copy it: build it when the
# value is final, or pass a copy.


def set(path: PathLike, value: Any) -> SetOp:
    """Put `value` at `path`: a new or existing dict key, an existing list index or
    record field, or the whole state (`[]` or `""`).

    Example:
        >>> set("order.status", "paid")
        SetOp(path=('order', 'status'), value='paid')
    """
    return SetOp(to_keys(path), value)


def delete(path: PathLike) -> DeleteOp:
    """Remove the dict key or list item at `path`.

    Example:
        >>> delete("jobs.3")
        DeleteOp(path=('jobs', 3))
    """
    keys = to_keys(path)
    if not keys:
        raise ValueError("delete needs a path to a key or item; the whole state cannot be deleted")
    return DeleteOp(keys)


def append(path: PathLike, value: Any) -> AppendOp:
    """Append `value` to the list at `path`.

    Example:
        >>> append("messages", {"role": "user"})
        AppendOp(path=('messages',), value={'role': 'user'})
    """
    return AppendOp(to_keys(path), value)


def extend(path: PathLike, values: Iterable[Any]) -> ExtendOp:
    """Append each of `values` to the list at `path`.

    Example:
        >>> extend("rows", [1, 2])
        ExtendOp(path=('rows',), values=(1, 2))
    """
    if isinstance(values, (str, bytes, bytearray, Mapping)):
        raise TypeError(
            f"extend takes a list of values, not a {type(values).__name__}; to add one "
            f"value use append"
        )
    return ExtendOp(to_keys(path), tuple(values))


def insert(path: PathLike, value: Any) -> InsertOp:
    """Insert `value` into a list before the index that ends `path`.

    Example:
        >>> insert("queue.0", "urgent")
        InsertOp(path=('queue', 0), value='urgent')
    """
    keys = to_keys(path)
    if not keys or type(keys[-1]) is not int:
        raise ValueError(f"insert needs a path ending in a list index (`queue.0`); got {path!r}")
    return InsertOp(keys, value)


def increment(path: PathLike, amount: Number = 1) -> IncrementOp:
    """Add `amount` to the int, float or Decimal at `path`.

    Example:
        >>> increment("step")
        IncrementOp(path=('step',), amount=1)
    """
    if type(amount) not in _NUMBER_TYPES:
        raise TypeError(f"increment takes an int, float or Decimal amount; got {_describe(amount)}")
    return IncrementOp(to_keys(path), amount)


def merge(path: PathLike, mapping: Mapping[Any, Any]) -> MergeOp:
    """Update the dict at `path` with `mapping`: shallow, as `dict.update`.

    Example:
        >>> merge("config", {"retries": 3})
        MergeOp(path=('config',), mapping={'retries': 3})
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(f"merge takes a mapping; got {_describe(mapping)}")
    return MergeOp(to_keys(path), dict(mapping))


def to_keys(path: PathLike) -> tuple[Any, ...]:
    """A path as a tuple of keys: text is parsed, a sequence taken as its keys.

    Raises:
        TypeError: a key is not hashable, or `path` is neither text nor a sequence.
        statevault.paths.PathError: the text does not parse.
    """
    if isinstance(path, str):
        return tuple(parse(path))
    if not isinstance(path, (list, tuple)):
        raise TypeError(
            f"a path is text ('results.rows.17') or a list of keys; got {_describe(path)}"
        )
    keys = tuple(path)
    for key in keys:
        if not isinstance(key, Hashable):
            raise TypeError(f"path key {_describe(key)} is not hashable, so no dict can hold it")
    return keys


def path_text(keys: Sequence[Any]) -> str:
    """A path as text: `statevault.paths.format_path` for str and int keys, with any
    other key (a tuple, None, bytes...) shown in brackets as its repr."""
    out = ""
    for key in keys:
        plain = type(key) is str or type(key) is int
        part = format_path([key]) if plain else f"[{key!r}]"
        out += part if not out or part.startswith("[") else f".{part}"
    return out


_REPR = reprlib.Repr()
_REPR.maxlevel = 2
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40


def _describe(value: Any) -> str:
    """`errors.describe`, but bounded: an error about a list of a million items must not
    spend 60 ms writing all of them out to show the first few. Records are named, not
    shown, since their repr would show every field in full."""
    if record_kind(value) is not None:
        return f"{type(value).__qualname__} record"
    text = _REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__qualname__} {text}"


# -- copying values --------------------------------------------------------------------

_IMMUTABLE: Final[frozenset[type[Any]]] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        decimal.Decimal,
        fractions.Fraction,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        uuid.UUID,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.PosixPath,
        pathlib.WindowsPath,
        frozenset,
    }
)


def is_immutable(value: Any) -> bool:
    """True for values that nothing can change in place (scalars, and tuples and
    frozensets made only of them)."""
    t = type(value)
    if t in _IMMUTABLE or isinstance(value, enum.Enum):
        return True
    if t is tuple:
        return all(is_immutable(item) for item in value)
    return False


def copy_value(value: Any) -> Any:
    """A deep copy of a state value that shares no mutable object with `value`.

    Immutable values are returned as they are. Unlike `copy.deepcopy`, containers are
    copied without a memo, so an object that occurs twice comes back as two copies:
    state is a tree (the codec stores shared objects as copies too), and a copy that
    kept the sharing would let one change reach two places. Anything else (records,
    arrays, tracked views) goes through `copy.deepcopy`.
    """
    t = type(value)
    if t in _IMMUTABLE:
        return value
    if t is list:
        return [copy_value(item) for item in value]
    if t is dict:
        return {key: copy_value(item) for key, item in value.items()}
    if t is tuple:
        return tuple(copy_value(item) for item in value)
    if t is builtins.set:
        return builtins.set(value)
    if t is collections.OrderedDict:
        return collections.OrderedDict((key, copy_value(item)) for key, item in value.items())
    if isinstance(value, enum.Enum):
        return value
    return copy.deepcopy(value)


# -- records ---------------------------------------------------------------------------

RecordKind: TypeAlias = Literal["struct", "dataclass", "pydantic", "unknown"]


@dataclasses.dataclass(frozen=True, slots=True)
class _RecordClass:
    kind: RecordKind
    fields: frozenset[str]
    frozen: bool
    frozen_fields: frozenset[str]


_RECORD_CLASSES: dict[type[Any], _RecordClass | None] = {}
"""What `_inspect_class` found, per class (classes are few; a record is met often)."""


def _record_class(cls: type[Any]) -> _RecordClass | None:
    try:
        return _RECORD_CLASSES[cls]
    except KeyError:
        info = _RECORD_CLASSES[cls] = _inspect_class(cls)
        return info


def _inspect_class(cls: type[Any]) -> _RecordClass | None:
    if cls is UnknownRecord:
        return _RecordClass("unknown", frozenset(), frozen=False, frozen_fields=frozenset())
    if issubclass(cls, msgspec.Struct):
        config = cls.__struct_config__
        return _RecordClass("struct", frozenset(cls.__struct_fields__), config.frozen, frozenset())
    if dataclasses.is_dataclass(cls):
        names = frozenset(f.name for f in dataclasses.fields(cls))
        return _RecordClass("dataclass", names, cls.__dataclass_params__.frozen, frozenset())  # type: ignore[attr-defined]
    # Pydantic is optional: recognise a v2 model by its API instead of importing it.
    model_fields = getattr(cls, "model_fields", None)
    if isinstance(model_fields, dict) and hasattr(cls, "model_copy"):
        frozen_fields = frozenset(n for n, f in model_fields.items() if getattr(f, "frozen", None))
        frozen = bool(cls.model_config.get("frozen"))
        return _RecordClass("pydantic", frozenset(model_fields), frozen, frozen_fields)
    return None


def record_kind(value: Any) -> RecordKind | None:
    """The kind of record `value` is, or None: a msgspec Struct, a dataclass, a
    Pydantic model, or an `UnknownRecord` (whose fields live in its `fields` dict)."""
    if type(value) in _IMMUTABLE or isinstance(value, type):
        return None
    info = _record_class(type(value))
    return None if info is None else info.kind


def has_field(record: Any, name: Any) -> bool:
    """True if `record` (a record, see `record_kind`) has a field called `name`."""
    info = _record_class(type(record))
    if info is None or type(name) is not str:
        return False
    if info.kind == "unknown":
        return name in record.fields
    if name in info.fields:
        return True
    if info.kind == "pydantic":
        extra = record.__pydantic_extra__
        return bool(extra) and name in extra
    return False


def get_field(record: Any, name: str) -> Any:
    """The value of a field of a record (see `has_field`)."""
    if type(record) is UnknownRecord:
        return record.fields[name]
    return getattr(record, name)


def _replaced(record: Any, info: _RecordClass, name: str, value: Any) -> Any:
    """A copy of a frozen record with one field changed."""
    if info.kind == "struct":
        return msgspec.structs.replace(record, **{name: value})
    if info.kind == "pydantic":
        return record.model_copy(update={name: value})
    # Not dataclasses.replace: it calls __init__ again, which resets init=False fields
    # to their defaults and reruns __post_init__, so a field set after construction
    # (as the codec does on load) would be lost. A shallow copy keeps every field.
    new = copy.copy(record)
    object.__setattr__(new, name, value)
    return new


def _restore_pydantic(record: Any, name: str, value: Any, fields_set: builtins.set[str]) -> None:
    setattr(record, name, value)
    object.__setattr__(record, "__pydantic_fields_set__", fields_set)


# -- undo ------------------------------------------------------------------------------


class UndoLog:
    """What puts a state back as it was: one entry per change, undone newest first.

    Each entry is a function and its arguments. Entries restore the very objects that
    were there (not copies), so a rolled-back state is the original, object for
    object, and recording a change costs about as much as the change itself.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, undo: Callable[..., object], *args: Any) -> None:
        self._entries.append((undo, *args))

    def mark(self) -> int:
        """A point to roll back to with `rollback(mark)`."""
        return len(self._entries)

    def rollback(self, mark: int = 0) -> None:
        """Undo every change recorded since `mark` (by default, all of them)."""
        entries = self._entries
        while len(entries) > mark:
            undo, *args = entries.pop()
            undo(*args)

    def forget(self) -> None:
        """Drop every entry: the changes are kept for good."""
        self._entries.clear()


class _NoUndo(UndoLog):
    """An undo log that records nothing: for changes whose state is dropped on error."""

    __slots__ = ()

    def add(self, undo: Callable[..., object], *args: Any) -> None:
        pass


class Root:
    """Holds the state's root, which an operation on the empty path may replace."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _set_root(root: Root, value: Any, undo: UndoLog) -> None:
    undo.add(setattr, root, "value", root.value)
    root.value = value


def _truncate(items: list[Any], length: int) -> None:
    del items[length:]


def _reinsert(d: dict[Any, Any], key: Any, value: Any, after: list[Any]) -> None:
    d[key] = value
    for later in after:  # move the keys that followed `key` behind it again
        d[later] = d.pop(later)


# -- applying --------------------------------------------------------------------------


def apply(
    state: Any, ops: Iterable[Op], /, *, copy_values: bool = True, atomic: bool = True
) -> Any:
    """Apply `ops` in order to `state`, all of them or none.

    Containers are changed in place; the state's root is replaced only by an operation
    on the empty path (or by a change inside a root tuple or frozen record), so use
    the returned value. Cost grows with the operations, not with the state: undoing a
    failed batch uses an undo log, never a copy of the state.

    Args:
        state: the state to change.
        ops: the operations, as built by `set`, `append`, ... or `ops_from_value`.
        copy_values: put copies of the operations' values into the state, so the
            operations stay unchanged by later changes to the state and can be applied
            again. Pass False for operations used once, such as freshly decoded ones.
        atomic: on error, put the state back as it was. False skips the undo log, and
            a failed batch leaves the state half changed: only for a state the caller
            throws away on error (a journal replay on a freshly loaded state).

    Returns:
        The state's root after the operations (the same object unless replaced).

    Raises:
        OpError: an operation does not fit the state (a missing path, a wrong type);
            the state is as it was before the first operation (unless `atomic` is
            False). Any other error raised while applying (a record's validator, say)
            also leaves it so.

    Example:
        >>> apply({"rows": [1]}, [append("rows", 2), set("done", True)])
        {'rows': [1, 2], 'done': True}
    """
    batch = ops if isinstance(ops, list) else list(ops)
    root = Root(state)
    undo = UndoLog() if atomic else _NoUndo()
    for index, op in enumerate(batch):
        try:
            apply_one(root, op, undo, copy_values=copy_values)
        except OpError as exc:
            undo.rollback()
            raise exc.in_batch(index, len(batch)) from None
        except BaseException:
            undo.rollback()
            raise
    return root.value


def apply_one(root: Root, op: Op, undo: UndoLog, *, copy_values: bool = True) -> None:
    """Apply one operation to the state in `root`, recording how to undo it in `undo`.

    On error, changes this operation already made stay in `undo` (roll back to a mark
    taken before the call to remove them).
    """
    applier = _APPLIERS.get(type(op))
    if applier is None:
        raise TypeError(f"not a statevault operation: {_describe(op)}")
    applier(root, op, undo, copy_values)


def _apply_set(root: Root, op: SetOp, undo: UndoLog, copy_values: bool) -> None:
    keys = op.path
    n = len(keys)
    value = copy_value(op.value) if copy_values else op.value
    chain = walk(root.value, keys, "set", n - 1) if n else []
    _put(root, chain, keys, n, value, undo=undo, op="set")


def _apply_delete(root: Root, op: DeleteOp, undo: UndoLog, copy_values: bool) -> None:
    _remove(root, walk(root.value, op.path, "delete"), op.path, undo, "delete")


def _apply_append(root: Root, op: AppendOp, undo: UndoLog, copy_values: bool) -> None:
    target = _list_at(root, op.path, "append")
    target.append(copy_value(op.value) if copy_values else op.value)
    undo.add(list.pop, target)


def _apply_extend(root: Root, op: ExtendOp, undo: UndoLog, copy_values: bool) -> None:
    target = _list_at(root, op.path, "extend")
    length = len(target)
    target.extend([copy_value(v) for v in op.values] if copy_values else op.values)
    undo.add(_truncate, target, length)


def _apply_insert(root: Root, op: InsertOp, undo: UndoLog, copy_values: bool) -> None:
    keys = op.path
    target = walk(root.value, keys, "insert", len(keys) - 1)[-1]
    if type(target) is not list:
        raise _wrong_type("insert", keys[:-1], target, "a list", full=keys)
    index = _index(target, keys[-1], "insert", keys, len(keys) - 1, insert=True)
    target.insert(index, copy_value(op.value) if copy_values else op.value)
    undo.add(list.pop, target, index)


def _apply_increment(root: Root, op: IncrementOp, undo: UndoLog, copy_values: bool) -> None:
    keys = op.path
    chain = walk(root.value, keys, "increment")
    old = chain[-1]
    if type(old) not in _NUMBER_TYPES:
        raise _wrong_type("increment", keys, old, "an int, float or Decimal")
    try:
        new = old + op.amount
    except TypeError:
        raise OpError(
            "increment",
            path_text(keys),
            f"cannot add {_describe(op.amount)} to {_describe(old)}",
            found=_describe(old),
            hint="Decimals and floats do not mix; increment a Decimal by an int or Decimal",
        ) from None
    _put(root, chain, keys, len(keys), new, undo=undo, op="increment")


def _apply_merge(root: Root, op: MergeOp, undo: UndoLog, copy_values: bool) -> None:
    keys = op.path
    target = walk(root.value, keys, "merge")[-1]
    if not isinstance(target, dict):
        raise _wrong_type("merge", keys, target, "a dict")
    for key, value in op.mapping.items():
        item = copy_value(value) if copy_values else value
        _dict_set(target, key, item, undo, op="merge", keys=keys)


def _list_at(root: Root, keys: tuple[Any, ...], op: str) -> list[Any]:
    target = walk(root.value, keys, op)[-1]
    if type(target) is not list:
        raise _wrong_type(op, keys, target, "a list")
    return target


_APPLIERS: Final[dict[type[Any], Callable[[Root, Any, UndoLog, bool], None]]] = {
    SetOp: _apply_set,
    DeleteOp: _apply_delete,
    AppendOp: _apply_append,
    ExtendOp: _apply_extend,
    InsertOp: _apply_insert,
    IncrementOp: _apply_increment,
    MergeOp: _apply_merge,
}


def walk(root: Any, keys: Sequence[Any], op: str = "read", depth: int | None = None) -> list[Any]:
    """The objects along `keys[:depth]` from `root`: `[root, root[k0], root[k0][k1], ...]`.

    Raises:
        OpError: a key on the way does not exist.
    """
    chain = [root]
    current = root
    for i in range(len(keys) if depth is None else depth):
        current = _child(current, keys[i], op, keys, i)
        chain.append(current)
    return chain


def _child(container: Any, key: Any, op: str, keys: Sequence[Any], depth: int) -> Any:
    if isinstance(container, dict):
        try:
            return container[key]
        except KeyError:
            hint = None
            if type(key) is int and str(key) in container:
                hint = f'It has the text key "{key}": write the path with ["{key}"]'
            raise OpError(
                op,
                path_text(keys),
                f"{_where(keys, depth)} has no key {key!r}",
                found=_describe(container),
                hint=hint,
            ) from None
        except TypeError:
            raise OpError(op, path_text(keys), f"key {_describe(key)} is not hashable") from None
    if isinstance(container, (list, tuple)):
        return container[_index(container, key, op, keys, depth)]
    if record_kind(container) is not None:
        if has_field(container, key):
            return get_field(container, key)
        raise OpError(
            op,
            path_text(keys),
            f"{_where(keys, depth)} is a {type(container).__qualname__}, which has no field "
            f"{key!r}",
            found=_describe(container),
        )
    raise OpError(
        op,
        path_text(keys),
        f"{_where(keys, depth)} holds {_describe(container)}, which has no key {key!r}",
        found=_describe(container),
    )


def _index(
    seq: Sequence[Any],
    key: Any,
    op: str,
    keys: Sequence[Any],
    depth: int,
    *,
    insert: bool = False,
) -> int:
    """`key` as an index into `seq` (negative counts from the end), checked."""
    if type(key) is not int:
        kind = "tuple" if isinstance(seq, tuple) else "list"
        raise OpError(
            op,
            path_text(keys),
            f"{_where(keys, depth)} is a {kind}; index it with an int, not {_describe(key)}",
            found=_describe(seq),
        )
    n = len(seq)
    index = key + n if key < 0 else key
    if not 0 <= index < n + insert:
        hint = "Use append or insert to add items" if op == "set" else None
        raise OpError(
            op,
            path_text(keys),
            f"{_where(keys, depth)} has {n} items; there is no [{key}]",
            found=_describe(seq),
            hint=hint,
        )
    return index


def _where(keys: Sequence[Any], depth: int) -> str:
    """The part of a path walked so far, for an error message."""
    return path_text(keys[:depth]) or "the state root"


def _wrong_type(
    op: str, keys: Sequence[Any], found: Any, expected: str, *, full: Sequence[Any] | None = None
) -> OpError:
    where = path_text(keys) or "the state root"
    return OpError(
        op,
        path_text(keys if full is None else full),
        f"{op} needs {expected} at {where}, but found {_describe(found)}",
        found=_describe(found),
    )


def _dict_set(
    d: dict[Any, Any], key: Any, value: Any, undo: UndoLog, *, op: str, keys: Sequence[Any]
) -> None:
    # operator.setitem, not dict.__setitem__: the latter would bypass an OrderedDict's
    # own bookkeeping.
    try:
        present = key in d
    except TypeError:
        raise OpError(op, path_text(keys), f"key {_describe(key)} is not hashable") from None
    if present:
        undo.add(operator.setitem, d, key, d[key])
    else:
        undo.add(operator.delitem, d, key)
    d[key] = value


def _dict_pop(d: dict[Any, Any], key: Any, undo: UndoLog) -> None:
    # A key put back goes last, but rollback must restore the dict's order too (it is
    # part of the value: it decides the encoded bytes and so the digest). When the key
    # is the last one, as for one just added, that is free; otherwise the undo entry
    # keeps the keys that followed it (one pass over the keys, at C speed).
    last = next(reversed(d))
    if last is key or last == key:
        undo.add(operator.setitem, d, last, d.pop(last))
        return
    order = list(d)
    i = order.index(key)
    stored = order[i]
    undo.add(_reinsert, d, stored, d.pop(stored), order[i + 1 :])


def _put(
    root: Root,
    chain: list[Any],
    keys: Sequence[Any],
    n: int,
    value: Any,
    *,
    undo: UndoLog,
    op: str,
) -> None:
    """Make `value` the value at `keys[:n]`, where `chain[i]` is the object at `keys[:i]`.

    Lists, dicts and mutable records change in place. A tuple or frozen record cannot,
    so a changed copy is made and put in its own parent, and so on up.
    """
    while n:
        container = chain[n - 1]
        key = keys[n - 1]
        if isinstance(container, dict):
            _dict_set(container, key, value, undo, op=op, keys=keys)
            return
        if isinstance(container, list):
            i = _index(container, key, op, keys, n - 1)
            undo.add(operator.setitem, container, i, container[i])
            container[i] = value
            return
        if isinstance(container, tuple):
            i = _index(container, key, op, keys, n - 1)
            items = (*container[:i], value, *container[i + 1 :])
            make = getattr(type(container), "_make", type(container))  # named tuples
            value = make(items)
            n -= 1
            continue
        info = _record_class(type(container)) if record_kind(container) else None
        if info is None or not has_field(container, key):
            _child(container, key, op, keys, n - 1)  # raises the right error
            raise AssertionError("unreachable")  # pragma: no cover
        if info.kind == "unknown":
            _dict_set(container.fields, key, value, undo, op=op, keys=keys)
            return
        if not info.frozen and key not in info.frozen_fields:
            old = getattr(container, key)
            if info.kind == "pydantic":
                fields_set = builtins.set(container.__pydantic_fields_set__)
                setattr(container, key, value)
                undo.add(_restore_pydantic, container, key, old, fields_set)
            else:
                setattr(container, key, value)
                undo.add(setattr, container, key, old)
            return
        value = _replaced(container, info, key, value)
        n -= 1
    _set_root(root, value, undo)


def _remove(root: Root, chain: list[Any], keys: Sequence[Any], undo: UndoLog, op: str) -> None:
    n = len(keys)
    container = chain[n - 1]
    key = keys[n - 1]
    if isinstance(container, dict):
        _dict_pop(container, key, undo)
    elif isinstance(container, list):
        i = _index(container, key, op, keys, n - 1)
        undo.add(list.insert, container, i, container.pop(i))
    elif isinstance(container, tuple):
        i = _index(container, key, op, keys, n - 1)
        items = container[:i] + container[i + 1 :]
        make = getattr(type(container), "_make", type(container))
        _put(root, chain, keys, n - 1, make(items), undo=undo, op=op)
    else:
        where = path_text(keys[:-1]) or "the state root"
        raise OpError(
            op,
            path_text(keys),
            f"{where} is a {type(container).__qualname__} record, whose fields cannot be removed",
            found=_describe(container),
            hint="Set the field to None instead",
        )


# -- the stored form -------------------------------------------------------------------


def ops_to_value(ops: Iterable[Op]) -> list[Any]:
    """Operations as a plain state value, for the codec to encode.

    The form is `[OPS_FORMAT, [tag, [key, ...], payload...], ...]`, for example
    `[1, ["set", ["order", "status"], "paid"], ["delete", ["jobs", 3]]]`. Values are
    referenced, not copied: encode the result before changing them.

    Example:
        >>> ops_to_value([increment("step"), delete("tmp")])
        [1, ['increment', ['step'], 1], ['delete', ['tmp']]]
    """
    out: list[Any] = [OPS_FORMAT]
    for op in ops:
        t = type(op)
        if t not in _OP_TYPES:
            raise TypeError(f"not a statevault operation: {_describe(op)}")
        path = list(op.path)
        if t is DeleteOp:
            out.append(["delete", path])
        elif t is ExtendOp:
            out.append(["extend", path, list(op.values)])  # type: ignore[union-attr]
        else:  # one payload field after the path
            out.append([tag_of(op), path, getattr(op, t.__struct_fields__[1])])
    return out


_BUILDERS: Final[dict[str, tuple[type[Any], int]]] = {
    "set": (SetOp, 3),
    "delete": (DeleteOp, 2),
    "append": (AppendOp, 3),
    "extend": (ExtendOp, 3),
    "insert": (InsertOp, 3),
    "increment": (IncrementOp, 3),
    "merge": (MergeOp, 3),
}


def ops_from_value(value: Any) -> list[Op]:
    """The operations in a value made by `ops_to_value` (after a codec round trip).

    Raises:
        UnsupportedFormatError: the value was written by a newer statevault.
        CorruptionError: the value is not a list of operations.
    """
    if type(value) is not list or not value:
        raise CorruptionError(f"stored operations are not a list: {_describe(value)}")
    version = value[0]
    if type(version) is not int or version < 1:
        raise CorruptionError(f"stored operations start with {_describe(version)}, not a version")
    if version > OPS_FORMAT:
        raise UnsupportedFormatError(found=version, supported=OPS_FORMAT, what="journal record")
    out: list[Op] = []
    for position, item in enumerate(value[1:], start=1):
        if type(item) is not list or not item or type(item[0]) is not str:
            raise CorruptionError(f"stored operation {position} is malformed: {_describe(item)}")
        built = _BUILDERS.get(item[0])
        if built is None:
            raise CorruptionError(f"stored operation {position} has unknown type {item[0]!r}")
        cls, arity = built
        if len(item) != arity or type(item[1]) is not list:
            raise CorruptionError(f"stored operation {position} is malformed: {_describe(item)}")
        keys = tuple(item[1])
        if cls is DeleteOp:
            out.append(DeleteOp(keys))
            continue
        payload = item[2]
        if cls is ExtendOp:
            if type(payload) is not list:
                raise CorruptionError(f"stored extend {position} has no list of values")
            payload = tuple(payload)
        elif cls is MergeOp and not isinstance(payload, dict):
            raise CorruptionError(f"stored merge {position} has no mapping")
        elif cls is IncrementOp and type(payload) not in _NUMBER_TYPES:
            raise CorruptionError(f"stored increment {position} has no number")
        elif cls is InsertOp and (not keys or type(keys[-1]) is not int):
            raise CorruptionError(f"stored insert {position} has no index")
        out.append(cls(keys, payload))
    return out


__all__ = [
    "OPS_FORMAT",
    "AppendOp",
    "DeleteOp",
    "ExtendOp",
    "IncrementOp",
    "InsertOp",
    "MergeOp",
    "Op",
    "OpError",
    "PathLike",
    "SetOp",
    "append",
    "apply",
    "delete",
    "extend",
    "increment",
    "insert",
    "merge",
    "ops_from_value",
    "ops_to_value",
    "set",
]
