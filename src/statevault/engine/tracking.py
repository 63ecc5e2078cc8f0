"""Tracked views: the changes made in `with run.transaction() as s:` become delta operations.

`track(state)` returns a view of the state and a `Recorder`. The view reads and writes
like the state itself (`s["messages"].append(m)`, `s["order"].status = "paid"`,
`del s["tmp"]`, `s["rows"][3:] = []`); each change is made to the state at once, so
later reads in the transaction see it, and is recorded as an operation of
`statevault.ops`. The contract: for a state `S` changed through its view,
`ops.apply(copy_of_S, recorder.ops)` equals the changed state, and after
`recorder.rollback()` the state is `S` again, object for object.

What comes back from a view:
- dicts, lists, sets, records (msgspec Structs, dataclasses, Pydantic models) and
  tuples holding any of them come back as views (`DictView`, `ListView`, `SetView`,
  `RecordView`, `TupleView`), made when read. They are `MutableMapping`,
  `MutableSequence`, `MutableSet` and `Sequence`, not `dict` or `list`: pass
  `unwrap(view)` where a real one is needed (`json.dumps`, keeping it after the
  transaction).
- scalars, strings, bytes, frozensets and tuples of immutable values come back as they
  are: nothing can change them in place.
- NumPy arrays come back as read-only NumPy views: every read and every NumPy function
  works and copies nothing, and an in-place write (`s["w"][0] = 5`, `s["w"] += 1`)
  raises NumPy's `ValueError: assignment destination is read-only` instead of changing
  the state behind the journal's back. Assign a new array: `s["w"] = s["w"] + 1`.
  (A wrapper raising our own error would not be an `ndarray`, and NumPy and the
  libraries built on it take arrays; recording element writes would copy the array.)
- a `bytearray` comes back as `bytes`, which it becomes on save anyway.

How changes are recorded:
- `s["step"] += 1` records `set(["step"], 2)`: Python runs it as a read, an add done by
  the int itself, and a write, and the view only sees the write. Recording `increment`
  would mean handing out int subclasses from every read (which would leak into user
  code and fail the codec's exact-type checks), or guessing from old and new value,
  which would turn a reset (`s["n"] = 0`) into a delta that merges wrongly. Replay is
  exact either way; to record a delta (which concurrent writers can add up), call
  `s.increment("step", 1)` on a dict or list view, or `recorder.apply(ops.increment(...))`.
- `lst += items` and `lst.extend(items)` record one `extend`; `insert` records `insert`
  (`append` at the end); `pop`, `remove` and `del lst[i]` record `delete`;
  `dict.update` and `|=` record `merge`.
- `sort`, `reverse`, `clear`, slice assignment and deletion, and every change to a set
  record `set` with the whole new list or set: there is no smaller description of a
  permutation, and sets are usually small.
- A value assigned into the view is copied (see `statevault.ops.copy_value`) into the
  state, and again into the operation. The state must stay a tree: without the copy,
  `s["b"] = s["a"]` would make one object reachable from two paths, and a later change
  through one path would show at both in memory but be replayed at one. The user's
  own object is left out of the state, so changing it later changes nothing: assign
  again to store the change. Copying costs as much as the value assigned, not the state.
- Values taken out (`pop`, `popitem`) are copies too: the undo log keeps the originals
  to put them back on rollback.

A view refuses to act where Python would act on something else: after its transaction
ends, and when an earlier change in the transaction replaced or moved the object it
shows (`row = s["rows"][3]; s["rows"].insert(0, x); row["done"] = True` raises
`TransactionError`, where a path-based view would silently mark another row).

Assigning a field of a frozen record replaces the record in its parent (as
`ops.apply` does), and the view follows the new record. A record's own methods and
properties run with the view as `self`, so their changes are recorded too; library
methods (Pydantic's `model_dump`) run on the record itself.
"""

from __future__ import annotations

import inspect
import operator
import sys
import types
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    MutableSequence,
    MutableSet,
    Sequence,
)
from collections.abc import Set as AbstractSet
from typing import Any, Final

from statevault import ops
from statevault.errors import OpError, TransactionError
from statevault.ops import (
    AppendOp,
    DeleteOp,
    ExtendOp,
    InsertOp,
    MergeOp,
    Op,
    Root,
    SetOp,
    UndoLog,
    apply_one,
    copy_value,
    get_field,
    has_field,
    is_immutable,
    path_text,
    record_kind,
    walk,
)


def track(state: Any) -> tuple[Any, Recorder]:
    """A view of `state` that records every change made through it.

    Returns:
        The view (or `state` itself when nothing in it can change in place) and the
        recorder holding the operations and the way back.

    Example:
        >>> state = {"step": 1, "messages": []}
        >>> s, recorder = track(state)
        >>> s["messages"].append("hi")
        >>> s["step"] += 1
        >>> recorder.ops
        [AppendOp(path=('messages',), value='hi'), SetOp(path=('step',), value=2)]
        >>> state
        {'step': 2, 'messages': ['hi']}
    """
    recorder = Recorder(state)
    return recorder.view(), recorder


def unwrap(value: Any) -> Any:
    """A plain, deep copy of `value`, with every view in it replaced by a copy of its value.

    The copy is detached: changing it changes neither the state nor the transaction.
    """
    return copy_value(value)


class Recorder:
    """The operations a transaction's changes amount to, and the way back. Made by `track`.

    Attributes:
        ops: the recorded operations, oldest first (a new list each time).
        state: the state's root (a new object only if an operation replaced the root).
    """

    __slots__ = ("_open", "_ops", "_root", "_undo")

    def __init__(self, state: Any) -> None:
        self._root = Root(state)
        self._undo = UndoLog()
        self._ops: list[Op] = []
        self._open = True

    def __repr__(self) -> str:
        status = "open" if self._open else "closed"
        return f"<Recorder {status}, {len(self._ops)} operations>"

    @property
    def ops(self) -> list[Op]:
        return list(self._ops)

    @property
    def state(self) -> Any:
        return self._root.value

    @property
    def active(self) -> bool:
        """False once the transaction was closed or rolled back."""
        return self._open

    def view(self) -> Any:
        """A (new) view of the whole state."""
        self._check()
        return _wrap(self, (), self._root.value)

    def apply(self, *changes: Op) -> None:
        """Apply operations to the state as part of this transaction, and record them.

        The way to record what the view cannot express, such as an increment of a
        record's field: `recorder.apply(ops.increment("order.total", 5))`.

        Raises:
            OpError: an operation does not fit the state; none of `changes` was applied.
        """
        self._check()
        mark = self._undo.mark()
        # A copy, not a length: recording one of `changes` may drop earlier operations
        # it makes moot, and they must come back with the state if a later one fails.
        recorded = list(self._ops)
        try:
            for op in changes:
                self._run(_private_copy(op))
        except BaseException:
            self._undo.rollback(mark)
            self._ops[:] = recorded
            raise

    def rollback(self) -> None:
        """Put the state back as it was before the first change, and end the transaction.

        Raises:
            TransactionError: the transaction already ended.
        """
        self._check()
        self._undo.rollback()
        self._ops.clear()
        self._open = False

    def close(self) -> None:
        """End the transaction, keeping its changes: views stop working. Idempotent."""
        self._undo.forget()
        self._open = False

    # -- used by the views -------------------------------------------------------------
    def _check(self) -> None:
        if not self._open:
            raise TransactionError(
                "this transaction has ended (committed or rolled back), so its views no "
                "longer read or change the state; start a new transaction, or keep "
                "`unwrap(value)` copies of what you need after it"
            )

    def _run(self, op: Op) -> None:
        """Apply `op`, whose values nothing else holds, and record it."""
        undo = self._undo
        mark = undo.mark()
        try:
            apply_one(self._root, op, undo, copy_values=True)
        except BaseException:
            undo.rollback(mark)
            raise
        self._record(op)

    def _record(self, op: Op) -> None:
        # A `set` or `delete` at a path makes the operations just before it that only
        # changed what lies under that path dead: drop them, so a list appended to and
        # then cleared records one `set`. Kept: a `delete` or `insert` exactly at the
        # path (they move list items, so the path meant another item before them), and
        # a `set` exactly at a deleted path (it may have created the key being deleted).
        recorded = self._ops
        if type(op) is SetOp or type(op) is DeleteOp:
            path = op.path
            n = len(path)
            while recorded:
                last = recorded[-1]
                if last.path[:n] != path:
                    break
                if len(last.path) == n and (
                    type(last) in _MOVERS or (type(op) is DeleteOp and type(last) is SetOp)
                ):
                    break
                recorded.pop()
        recorded.append(op)


_MOVERS: Final = (DeleteOp, InsertOp)


def _private_copy(op: Op) -> Op:
    """`op` with copies of its values, so the caller's objects stay out of the record."""
    if isinstance(op, (SetOp, AppendOp, InsertOp)):
        return type(op)(op.path, copy_value(op.value))
    if isinstance(op, ExtendOp):
        return ExtendOp(op.path, tuple(copy_value(v) for v in op.values))
    if isinstance(op, MergeOp):
        return MergeOp(op.path, {k: copy_value(v) for k, v in op.mapping.items()})
    return op


# -- views -----------------------------------------------------------------------------

_PLAIN: Final = frozenset({str, int, float, bool, type(None), bytes})


def _wrap(rec: Recorder, path: tuple[Any, ...], value: Any) -> Any:
    """What a read of `value` at `path` hands out: a view, or the value if immutable."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, dict):
        return DictView(rec, path, value)
    if isinstance(value, list):
        return ListView(rec, path, value)
    if isinstance(value, set):
        return SetView(rec, path, value)
    if isinstance(value, tuple):
        return value if is_immutable(value) else TupleView(rec, path, value)
    if isinstance(value, bytearray):
        return bytes(value)
    np = sys.modules.get("numpy")  # an array exists only if NumPy was imported
    if np is not None and isinstance(value, np.ndarray):
        readonly = value.view()
        readonly.flags.writeable = False
        return readonly
    if record_kind(value) is not None:
        return RecordView(rec, path, value)
    return value


def _raw(value: Any) -> Any:
    """The object behind a view (to compare with), or `value` itself."""
    return value._read() if isinstance(value, _View) else value


def _key(key: Any) -> Any:
    """A key or set member given as a view becomes a copy of its value."""
    return copy_value(key._read()) if isinstance(key, _View) else key


_GONE: Final = object()


class _View:  # noqa: PLW1641 - each view hashes as its object does (or is unhashable)
    """A window on one object of a transaction's state, found at `_sv_path`."""

    __slots__ = ("_sv_path", "_sv_rec", "_sv_target")
    _sv_rec: Recorder
    _sv_path: tuple[Any, ...]
    _sv_target: Any

    def __init__(self, rec: Recorder, path: tuple[Any, ...], target: Any) -> None:
        # object.__setattr__: RecordView turns attribute assignment into field writes.
        object.__setattr__(self, "_sv_rec", rec)
        object.__setattr__(self, "_sv_path", path)
        object.__setattr__(self, "_sv_target", target)

    def _read(self) -> Any:
        self._sv_rec._check()
        return self._sv_target

    def _live(self) -> Any:
        """The object, checked to still be in the state at the view's path (before a change).

        Reads need no check (a view of a replaced object reads it, as a Python
        reference would); a change does, or it would be recorded at a path that now
        leads to a different object.
        """
        rec = self._sv_rec
        rec._check()
        try:
            found = walk(rec._root.value, self._sv_path)[-1]
        except OpError:
            found = _GONE
        if found is not self._sv_target:
            where = path_text(self._sv_path) or "the state root"
            raise TransactionError(
                f"this view of {where} is out of date: an earlier change in this "
                f"transaction replaced or moved the {type(self._sv_target).__name__} it "
                f"shows. Nothing was changed; read it from the state again "
                f"(`s[...]`) and change that."
            )
        return found

    def _child(self, key: Any, value: Any) -> Any:
        return _wrap(self._sv_rec, (*self._sv_path, key), value)

    def _run(self, op: Op) -> None:
        self._sv_rec._run(op)

    def __repr__(self) -> str:
        if not self._sv_rec._open:  # a repr must not raise (debuggers, logs)
            where = path_text(self._sv_path) or "the state root"
            return f"<{type(self).__name__} of {where}: transaction ended>"
        return repr(self._sv_target)

    def __eq__(self, other: object) -> bool:
        return bool(self._read() == _raw(other))

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy_value(self._read())

    def __copy__(self) -> Any:
        return copy_value(self._read())

    def __reduce__(self) -> Any:
        raise TypeError(
            "a tracked view cannot be pickled; pickle `statevault.engine.tracking.unwrap(view)`"
        )


class DictView(_View, MutableMapping[Any, Any]):
    """A dict (or OrderedDict) of the state."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, key: Any) -> Any:
        key = _key(key)
        return self._child(key, self._read()[key])

    def __setitem__(self, key: Any, value: Any) -> None:
        key = _key(key)
        target = self._live()
        if isinstance(value, _View) and key in target and value._sv_target is target[key]:
            return  # the write-back of `s[k] += ...` or `s[k] |= ...`: already recorded
        self._run(SetOp((*self._sv_path, key), copy_value(value)))

    def __delitem__(self, key: Any) -> None:
        key = _key(key)
        if key not in self._live():
            raise KeyError(key)
        self._run(DeleteOp((*self._sv_path, key)))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __contains__(self, key: object) -> bool:
        return _key(key) in self._read()

    def __reversed__(self) -> Iterator[Any]:
        keys: Iterator[Any] = reversed(self._read())
        return keys

    def keys(self) -> Any:
        return self._read().keys()

    def get(self, key: Any, default: Any = None) -> Any:
        key = _key(key)
        target = self._read()
        return self._child(key, target[key]) if key in target else default

    def pop(self, key: Any, *default: Any) -> Any:
        """Remove `key` and return a copy of its value (the original stays for rollback)."""
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        key = _key(key)
        target = self._live()
        if key not in target:
            if default:
                return default[0]
            raise KeyError(key)
        value = copy_value(target[key])
        self._run(DeleteOp((*self._sv_path, key)))
        return value

    def popitem(self) -> tuple[Any, Any]:
        target = self._live()
        if not target:
            raise KeyError("popitem(): dictionary is empty")
        key = next(reversed(target))
        return key, self.pop(key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """The value at `key`, stored first if missing; a view, so `.append` on it records."""
        key = _key(key)
        if key not in self._read():
            self[key] = default
        return self[key]

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """As `dict.update`, recorded as one `merge`."""
        self._live()
        changes: dict[Any, Any] = {}
        if isinstance(other, Mapping):
            pairs: Iterable[Any] = ((k, other[k]) for k in other)
        elif hasattr(other, "keys"):  # as dict.update: anything with keys() is a mapping
            keys = other.keys()
            pairs = ((k, other[k]) for k in keys)
        else:
            pairs = other
        for k, v in pairs:
            changes[_key(k)] = copy_value(v)
        for k, v in kwargs.items():
            changes[k] = copy_value(v)
        if changes:
            self._run(MergeOp(self._sv_path, changes))

    def clear(self) -> None:
        target = self._live()
        if not target:
            return
        saved = target.copy()
        target.clear()
        self._sv_rec._undo.add(_refill_dict, target, saved)
        self._sv_rec._record(SetOp(self._sv_path, type(target)()))

    def increment(self, key: Any, amount: ops.Number = 1) -> None:
        """Add `amount` to the number at `key`, recorded as `increment` (see the module doc)."""
        self._live()
        self._run(ops.increment([*self._sv_path, _key(key)], amount))

    def copy(self) -> dict[Any, Any]:
        """A new dict of the same items: values that are containers stay views (shallow)."""
        target = self._read()
        made: dict[Any, Any] = type(target)((k, self._child(k, v)) for k, v in target.items())
        return made

    def __ior__(self, other: Any) -> DictView:
        self.update(other)
        return self

    def __or__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = self.copy()
        new.update(other)
        return new

    def __ror__(self, other: Any) -> Any:
        if not isinstance(other, Mapping):
            return NotImplemented
        new = dict(other)
        new.update(self.copy())
        return new


def _refill_dict(target: dict[Any, Any], saved: dict[Any, Any]) -> None:
    target.clear()
    target.update(saved)


def _refill_list(target: list[Any], saved: list[Any]) -> None:
    target[:] = saved


def _refill_set(target: set[Any], saved: set[Any]) -> None:
    target.clear()
    target.update(saved)


def _index(index: Any, length: int, message: str) -> int:
    i = operator.index(index)
    if i < 0:
        i += length
    if not 0 <= i < length:
        raise IndexError(message)
    return i


class _Ordered(_View):
    """Ordering comparisons of a sequence view: those of the sequence it shows."""

    def __lt__(self, other: Any) -> bool:
        return bool(self._read() < _raw(other))

    def __le__(self, other: Any) -> bool:
        return bool(self._read() <= _raw(other))

    def __gt__(self, other: Any) -> bool:
        return bool(self._read() > _raw(other))

    def __ge__(self, other: Any) -> bool:
        return bool(self._read() >= _raw(other))


class ListView(_Ordered, MutableSequence[Any]):
    """A list of the state. Indexes in recorded operations are never negative."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, index: Any) -> Any:
        target = self._read()
        if isinstance(index, slice):
            return [self._child(i, target[i]) for i in range(*index.indices(len(target)))]
        i = _index(index, len(target), "list index out of range")
        return self._child(i, target[i])

    def __setitem__(self, index: Any, value: Any) -> None:
        target = self._live()
        if isinstance(index, slice):
            items = [copy_value(v) for v in value]
            self._rewrite(target, lambda: target.__setitem__(index, items))
            return
        i = _index(index, len(target), "list assignment index out of range")
        if isinstance(value, _View) and value._sv_target is target[i]:
            return  # the write-back of `lst[i] += ...`: already recorded
        self._run(SetOp((*self._sv_path, i), copy_value(value)))

    def __delitem__(self, index: Any) -> None:
        target = self._live()
        if isinstance(index, slice):
            self._rewrite(target, lambda: target.__delitem__(index))
            return
        i = _index(index, len(target), "list assignment index out of range")
        self._run(DeleteOp((*self._sv_path, i)))

    def _rewrite(self, target: list[Any], change: Callable[[], object]) -> None:
        """Make `change` in place and record the whole new list (if it changed)."""
        saved = target[:]
        try:
            change()
        except BaseException:
            target[:] = saved
            raise
        if len(saved) == len(target) and all(map(operator.is_, saved, target)):
            return
        self._sv_rec._undo.add(_refill_list, target, saved)
        self._sv_rec._record(SetOp(self._sv_path, copy_value(target)))

    def __len__(self) -> int:
        return len(self._read())

    def __iter__(self) -> Iterator[Any]:
        target = self._read()
        i = 0
        while i < len(target):
            yield self._child(i, target[i])
            i += 1

    def __reversed__(self) -> Iterator[Any]:
        target = self._read()
        for i in range(len(target) - 1, -1, -1):
            yield self._child(i, target[i])

    def __contains__(self, value: object) -> bool:
        return _raw(value) in self._read()

    def index(self, value: Any, start: int = 0, stop: int = sys.maxsize) -> int:
        return int(self._read().index(_raw(value), start, stop))

    def count(self, value: Any) -> int:
        return int(self._read().count(_raw(value)))

    def insert(self, index: Any, value: Any) -> None:
        target = self._live()
        n = len(target)
        i = operator.index(index)
        i = min(max(i + n, 0) if i < 0 else i, n)  # as list.insert: out of range clamps
        item = copy_value(value)
        self._run(AppendOp(self._sv_path, item) if i == n else InsertOp((*self._sv_path, i), item))

    def append(self, value: Any) -> None:
        self._live()
        self._run(AppendOp(self._sv_path, copy_value(value)))

    def extend(self, values: Iterable[Any]) -> None:
        self._live()
        items = tuple(copy_value(v) for v in values)  # all read before any is added
        if items:
            self._run(ExtendOp(self._sv_path, items))

    def __iadd__(self, values: Iterable[Any]) -> ListView:  # type: ignore[misc]
        self.extend(values)
        return self

    def __imul__(self, count: Any) -> ListView:
        target = self._live()
        n = operator.index(count)
        if n <= 0:
            self.clear()
        elif n > 1:
            self.extend([item for _ in range(n - 1) for item in target])  # copies, not aliases
        return self

    def pop(self, index: Any = -1) -> Any:
        """Remove an item and return a copy of it (the original stays for rollback)."""
        target = self._live()
        if not target:
            raise IndexError("pop from empty list")
        i = _index(index, len(target), "pop index out of range")
        value = copy_value(target[i])
        self._run(DeleteOp((*self._sv_path, i)))
        return value

    def remove(self, value: Any) -> None:
        target = self._live()
        try:
            i = target.index(_raw(value))
        except ValueError:
            raise ValueError("list.remove(x): x not in list") from None
        self._run(DeleteOp((*self._sv_path, i)))

    def clear(self) -> None:
        target = self._live()
        if target:
            self._rewrite(target, target.clear)

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        """As `list.sort`; `key` is called with the items themselves, and must not change them."""
        target = self._live()
        self._rewrite(target, lambda: target.sort(key=key, reverse=reverse))

    def reverse(self) -> None:
        target = self._live()
        self._rewrite(target, target.reverse)

    def increment(self, index: Any, amount: ops.Number = 1) -> None:
        """Add `amount` to the number at `index`, recorded as `increment`."""
        target = self._live()
        i = _index(index, len(target), "list index out of range")
        self._run(ops.increment([*self._sv_path, i], amount))

    def copy(self) -> list[Any]:
        """A new list of the same items: items that are containers stay views (shallow)."""
        return list(self)

    def __add__(self, other: Any) -> Any:
        if not isinstance(other, (list, ListView)):
            return NotImplemented
        return [*self, *other]

    def __radd__(self, other: Any) -> Any:
        if not isinstance(other, list):
            return NotImplemented
        return [*other, *self]

    def __mul__(self, count: Any) -> list[Any]:
        return list(self) * operator.index(count)

    __rmul__ = __mul__


def _members(other: Any) -> Any:
    if isinstance(other, _View):
        return other._read()
    if isinstance(other, (set, frozenset)):
        return other
    return [_key(item) for item in other]


class SetView(_View, MutableSet[Any]):
    """A set of the state. Each change is recorded as a `set` of the whole new set."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> set[Any]:
        return set(it)

    def _rewrite(self, change: Callable[[set[Any]], object]) -> None:
        target = self._live()
        saved = set(target)
        try:
            change(target)
        except BaseException:
            _refill_set(target, saved)
            raise
        if target == saved:
            return
        self._sv_rec._undo.add(_refill_set, target, saved)
        self._sv_rec._record(SetOp(self._sv_path, set(target)))

    def __contains__(self, item: object) -> bool:
        return _key(item) in self._read()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def add(self, value: Any) -> None:
        item = _key(value)
        if item not in self._live():
            self._rewrite(lambda s: s.add(item))

    def discard(self, value: Any) -> None:
        item = _key(value)
        if item in self._live():
            self._rewrite(lambda s: s.discard(item))

    def remove(self, value: Any) -> None:
        item = _key(value)
        if item not in self._live():
            raise KeyError(value)
        self._rewrite(lambda s: s.discard(item))

    def pop(self) -> Any:
        target = self._live()
        if not target:
            raise KeyError("pop from an empty set")
        item = next(iter(target))
        self._rewrite(lambda s: s.discard(item))
        return item

    def clear(self) -> None:
        self._rewrite(set.clear)

    def update(self, *others: Iterable[Any]) -> None:
        members = [_members(o) for o in others]
        self._rewrite(lambda s: s.update(*members))

    def intersection_update(self, *others: Iterable[Any]) -> None:
        members = [_members(o) for o in others]
        self._rewrite(lambda s: s.intersection_update(*members))

    def difference_update(self, *others: Iterable[Any]) -> None:
        members = [_members(o) for o in others]
        self._rewrite(lambda s: s.difference_update(*members))

    def symmetric_difference_update(self, other: Iterable[Any]) -> None:
        members = _members(other)
        self._rewrite(lambda s: s.symmetric_difference_update(members))

    def __ior__(self, other: Any) -> SetView:
        if not isinstance(other, AbstractSet):
            return NotImplemented
        self.update(other)
        return self

    def __iand__(self, other: Any) -> SetView:
        if not isinstance(other, AbstractSet):
            return NotImplemented
        self.intersection_update(other)
        return self

    def __isub__(self, other: Any) -> SetView:
        if not isinstance(other, AbstractSet):
            return NotImplemented
        self.difference_update(other)
        return self

    def __ixor__(self, other: Any) -> SetView:
        if not isinstance(other, AbstractSet):
            return NotImplemented
        self.symmetric_difference_update(other)
        return self

    def __or__(self, other: Any) -> Any:
        return self._read() | _members(other) if isinstance(other, AbstractSet) else NotImplemented

    def __and__(self, other: Any) -> Any:
        return self._read() & _members(other) if isinstance(other, AbstractSet) else NotImplemented

    def __sub__(self, other: Any) -> Any:
        return self._read() - _members(other) if isinstance(other, AbstractSet) else NotImplemented

    def __xor__(self, other: Any) -> Any:
        return self._read() ^ _members(other) if isinstance(other, AbstractSet) else NotImplemented

    def __ror__(self, other: Any) -> Any:
        return _members(other) | self._read() if isinstance(other, AbstractSet) else NotImplemented

    def __rand__(self, other: Any) -> Any:
        return _members(other) & self._read() if isinstance(other, AbstractSet) else NotImplemented

    def __rsub__(self, other: Any) -> Any:
        return _members(other) - self._read() if isinstance(other, AbstractSet) else NotImplemented

    def __rxor__(self, other: Any) -> Any:
        return _members(other) ^ self._read() if isinstance(other, AbstractSet) else NotImplemented

    def __le__(self, other: Any) -> bool:
        return bool(self._read() <= _members(other))

    def __lt__(self, other: Any) -> bool:
        return bool(self._read() < _members(other))

    def __ge__(self, other: Any) -> bool:
        return bool(self._read() >= _members(other))

    def __gt__(self, other: Any) -> bool:
        return bool(self._read() > _members(other))

    def union(self, *others: Iterable[Any]) -> set[Any]:
        return set(self._read().union(*map(_members, others)))

    def intersection(self, *others: Iterable[Any]) -> set[Any]:
        return set(self._read().intersection(*map(_members, others)))

    def difference(self, *others: Iterable[Any]) -> set[Any]:
        return set(self._read().difference(*map(_members, others)))

    def symmetric_difference(self, other: Iterable[Any]) -> set[Any]:
        return set(self._read().symmetric_difference(_members(other)))

    def issubset(self, other: Iterable[Any]) -> bool:
        return bool(self._read().issubset(_members(other)))

    def issuperset(self, other: Iterable[Any]) -> bool:
        return bool(self._read().issuperset(_members(other)))

    def isdisjoint(self, other: Iterable[Any]) -> bool:
        return bool(self._read().isdisjoint(_members(other)))

    def copy(self) -> set[Any]:
        return set(self._read())


class TupleView(_Ordered, Sequence[Any]):
    """A tuple of the state that holds something changeable (a list, a dict, a record)."""

    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        target = self._read()
        if isinstance(index, slice):
            return tuple(self._child(i, target[i]) for i in range(*index.indices(len(target))))
        i = _index(index, len(target), "tuple index out of range")
        return self._child(i, target[i])

    def __len__(self) -> int:
        return len(self._read())

    def __iter__(self) -> Iterator[Any]:
        target = self._read()
        for i, item in enumerate(target):
            yield self._child(i, item)

    def __contains__(self, value: object) -> bool:
        return _raw(value) in self._read()

    def index(self, value: Any, start: int = 0, stop: int = sys.maxsize) -> int:
        return int(self._read().index(_raw(value), start, stop))

    def count(self, value: Any) -> int:
        return int(self._read().count(_raw(value)))

    def __hash__(self) -> int:
        return hash(self._read())

    def __add__(self, other: Any) -> Any:
        if not isinstance(other, (tuple, TupleView)):
            return NotImplemented
        return (*self, *other)

    def __radd__(self, other: Any) -> Any:
        if not isinstance(other, tuple):
            return NotImplemented
        return (*other, *self)

    def __mul__(self, count: Any) -> tuple[Any, ...]:
        return tuple(self) * operator.index(count)

    __rmul__ = __mul__


_MISSING: Final = object()
_LIBRARIES: Final = frozenset({"builtins", "dataclasses", "msgspec", "pydantic", "pydantic_core"})


def _user_code(func: Any) -> bool:
    """True for a function of the user's class, not one a record library provides."""
    module = getattr(func, "__module__", None) or "builtins"
    return module.partition(".")[0] not in _LIBRARIES


class RecordView(_View):
    """A record of the state (msgspec Struct, dataclass, Pydantic model): its fields
    read and write as attributes."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        # Reached only for names the view itself lacks: the record's fields and methods.
        if name.startswith("_sv_"):
            raise AttributeError(name)
        target = self._read()
        if has_field(target, name):
            return self._child(name, get_field(target, name))
        attr = inspect.getattr_static(type(target), name, _MISSING)
        # The record's own methods and properties run with the view as `self`, so the
        # changes they make are recorded rather than made behind the journal's back.
        # A library's methods (Pydantic's model_dump, model_copy) read, and run on a
        # copy: the shallow copy `model_copy()` returns must not share lists with the
        # state, or changing them would change the state unrecorded.
        if isinstance(attr, types.FunctionType):
            return types.MethodType(attr, self if _user_code(attr) else copy_value(target))
        if isinstance(attr, property) and attr.fget is not None and _user_code(attr.fget):
            return attr.fget(self)
        return getattr(target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        target = self._live()
        if not has_field(target, name):
            attr = inspect.getattr_static(type(target), name, _MISSING)
            if isinstance(attr, property) and attr.fset is not None and _user_code(attr.fset):
                attr.fset(self, value)
                return
            raise AttributeError(
                f"{type(target).__qualname__} has no field {name!r}; a record's fields are "
                f"fixed by its class"
            )
        if isinstance(value, _View) and value._sv_target is get_field(target, name):
            return  # the write-back of `rec.items += [...]`: already recorded
        rec = self._sv_rec
        rec._run(SetOp((*self._sv_path, name), copy_value(value)))
        # A frozen record was replaced in its parent: follow it to the new one.
        current = walk(rec._root.value, self._sv_path)[-1]
        if current is not target:
            object.__setattr__(self, "_sv_target", current)

    def __delattr__(self, name: str) -> None:
        target = self._live()
        raise AttributeError(
            f"cannot delete {name!r} of a {type(target).__qualname__}: a record keeps all "
            f"its fields; set it to None instead"
        )

    def __hash__(self) -> int:
        return hash(self._read())

    def __dir__(self) -> Iterable[str]:
        return dir(self._read())


__all__ = [
    "DictView",
    "ListView",
    "RecordView",
    "Recorder",
    "SetView",
    "TupleView",
    "track",
    "unwrap",
]
