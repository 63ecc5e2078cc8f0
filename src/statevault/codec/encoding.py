"""Values <-> MessagePack bytes, with every type coming back as the type it was.

JSON-like values use plain MessagePack. Everything else is a MessagePack extension
whose payload is itself MessagePack (the table below). Encoding uses msgpack's
`strict_types` mode, the one encoder that hands tuples, sets, big ints and subclasses
of builtins to our hook instead of flattening them into lists and strings; decoding
uses msgspec, the fastest decoder available here (~2x msgpack's).

Extension codes (never renumber: stored data uses them):

    1 tuple   2 set   3 frozenset   4 datetime   5 date   6 time   7 timedelta
    8 UUID    9 Decimal   10 int beyond 64 bits   11 (reserved)   12 complex
    13 Fraction   14 pure path   15 registered record   16 registered enum
    17 NumPy array or scalar   18 OrderedDict   20-22 state-tree references

`bytearray` and `memoryview` are written by msgpack as binary before any hook sees
them, so they come back as `bytes` (documented in docs/values.md).

Decoding never imports a module or runs code that is not a registered class: a
record or enum names its class, and only the registry can turn the name into one.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import fractions
import functools
import gc
import pathlib
import threading
import uuid
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import msgpack
import msgspec

from statevault.codec.registry import RegisteredType, TypeRegistry
from statevault.errors import CorruptionError, SerializationError, UnknownTypeError, describe

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_DATETIME = 4
EXT_DATE = 5
EXT_TIME = 6
EXT_TIMEDELTA = 7
EXT_UUID = 8
EXT_DECIMAL = 9
EXT_BIGINT = 10
EXT_COMPLEX = 12
EXT_FRACTION = 13
EXT_PATH = 14
EXT_RECORD = 15
EXT_ENUM = 16
EXT_NDARRAY = 17
EXT_ORDEREDDICT = 18
# 20-29: state trees (statevault.tree); the codec itself never writes or reads them.
EXT_REF = 20
EXT_CHUNKED_LIST = 21
EXT_CHUNKED_BYTES = 22

UnknownTypes = Literal["error", "keep"]

_KEEP_PACKER_BELOW = 1 << 20
"""A thread's cached packer is dropped after packing more than this: it keeps the
capacity its buffer grew to, which would pin that much memory for good."""

_GC_PAUSE_FROM = 1 << 20
"""Decoding builds many container objects, and the cyclic GC rescans them as they are
made: for 100 MB of state that made decoding 2.6x slower here. Above 1 MiB the
collector is paused while decoding, and the new tree is then moved straight into the
oldest generation (`gc.freeze()` + `gc.unfreeze()`), sparing the one young-generation
pass over it that would otherwise follow (~90 ms per 100 MB). A fresh tree holds no
garbage; objects it displaces from younger generations are found by the next full
collection. This can be removed on Python versions with incremental GC (3.14+)."""

_plain = msgspec.msgpack.Encoder()
"""For extension payloads made only of small ints, floats, strings and None: 4x faster
than a fresh msgpack Packer per value, and byte-identical to its output for these."""

_HEADERS = msgpack.Packer()
"""Writes only map and array headers (no state, so one serves every thread)."""

_PATH_KINDS: dict[type[Any], int] = {
    pathlib.PurePosixPath: 0,
    pathlib.PosixPath: 1,
    pathlib.PureWindowsPath: 2,
    pathlib.WindowsPath: 2,
}
_PATH_TYPES: dict[int, Callable[[str], Any]] = {
    0: pathlib.PurePosixPath,
    1: pathlib.Path,
    2: pathlib.PureWindowsPath,
}


@dataclasses.dataclass(frozen=True, slots=True)
class UnknownRecord:
    """A stored record or enum whose class is not registered in this process.

    Returned only when a vault is opened with `unknown_types="keep"`, so tools can
    show state without the code that wrote it. Saving it stores it unchanged.

    Attributes:
        type_name: the name the class was stored under.
        kind: "struct", "dataclass", "pydantic" or "enum".
        fields: the record's fields, or for an enum {"name": ...} or {"value": ...}.
    """

    type_name: str
    kind: str
    fields: dict[str, Any]


class _Unsupported(Exception):
    """Raised by the encoder hook; the slow path then finds where the value sits."""

    def __init__(self, value: Any, reason: str) -> None:
        super().__init__(reason)
        self.value = value
        self.reason = reason


ENCODE_ERRORS = (
    _Unsupported,
    ValueError,
    TypeError,
    OverflowError,
    UnicodeEncodeError,
    msgspec.EncodeError,
)
"""What packing raises for a value it cannot store; each leads to the slow walk that
names the value's path."""


def _tz_encode(tz: dt.tzinfo | None, sample: dt.datetime | None) -> Any:
    """None (naive), int offset in µs, [offset, name] for a named fixed offset, or a zone key."""
    if tz is None:
        return None
    if tz is dt.UTC:
        return 0
    if type(tz) is dt.timezone:
        return _fixed_tz_code(tz)
    if isinstance(tz, zoneinfo.ZoneInfo) and tz.key:
        return tz.key
    offset = tz.utcoffset(sample)
    if offset is None:
        return None
    # Other tzinfo classes (pytz, dateutil) keep the instant and its offset; they come
    # back as a fixed-offset datetime.timezone.
    return offset // dt.timedelta(microseconds=1)


@functools.lru_cache(maxsize=256)
def _fixed_tz_code(tz: dt.timezone) -> Any:
    offset = tz.utcoffset(None)
    micros = offset // dt.timedelta(microseconds=1)
    name = tz.tzname(None)
    if name != dt.timezone(offset).tzname(None):
        return [micros, name]
    return micros


def _tz_decode(value: Any) -> dt.tzinfo | None:
    if value is None:
        return None
    if isinstance(value, list):
        return _tz_named(value[0], value[1])
    return _tz_cached(value)


@functools.lru_cache(maxsize=256)
def _tz_named(micros: int, name: str) -> dt.tzinfo:
    return dt.timezone(dt.timedelta(microseconds=micros), name)


@functools.lru_cache(maxsize=256)
def _tz_cached(value: int | str) -> dt.tzinfo:
    """Time zones are immutable, so one object per offset or key serves every value."""
    if isinstance(value, str):
        try:
            return zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise SerializationError(
                f"stored datetime uses time zone {value!r}, which this machine's time zone "
                f"database lacks; install it (`pip install tzdata`)"
            ) from exc
    if value == 0:
        return dt.UTC
    return dt.timezone(dt.timedelta(microseconds=value))


class Codec:
    """Encodes and decodes state values.

    Args:
        registry: the classes allowed in stored state.
        unknown_types: on load, a record or enum of an unregistered class raises
            `UnknownTypeError` ("error") or loads as an `UnknownRecord` ("keep").

    Example:
        >>> codec = Codec(TypeRegistry())
        >>> codec.decode(codec.encode({"t": (1, 2), "s": {3}}))
        {'t': (1, 2), 's': {3}}
    """

    def __init__(self, registry: TypeRegistry, *, unknown_types: UnknownTypes = "error") -> None:
        if unknown_types not in ("error", "keep"):
            raise ValueError(f"unknown_types must be 'error' or 'keep'; got {unknown_types!r}")
        self.registry = registry
        self.unknown_types = unknown_types
        self._local = threading.local()
        self._decoder = msgspec.msgpack.Decoder(ext_hook=self._ext_hook)
        self._ext_decoders: dict[int, Callable[[Any], Any]] = {
            EXT_TUPLE: tuple,
            EXT_SET: set,
            EXT_FROZENSET: frozenset,
            EXT_DATETIME: self._decode_datetime,
            EXT_DATE: lambda v: dt.date(*v),
            EXT_TIME: lambda v: dt.time(v[0], v[1], v[2], v[3], _tz_decode(v[5]), fold=v[4]),
            EXT_TIMEDELTA: lambda v: dt.timedelta(v[0], v[1], v[2]),
            EXT_DECIMAL: decimal.Decimal,
            EXT_BIGINT: int,
            EXT_COMPLEX: lambda v: complex(v[0], v[1]),
            EXT_FRACTION: lambda v: fractions.Fraction(v[0], v[1]),
            EXT_PATH: lambda v: _PATH_TYPES[v[0]](v[1]),
            EXT_RECORD: self._decode_record,
            EXT_ENUM: self._decode_enum,
            EXT_NDARRAY: decode_ndarray,
            EXT_ORDEREDDICT: collections.OrderedDict,
        }

    # -- encoding -----------------------------------------------------------------
    def _packer(self) -> msgpack.Packer:
        # A packer is not reentrant and extension payloads are packed from inside the
        # hook, so each (nested) call gets its own; building one costs about a µs.
        return msgpack.Packer(
            default=self._default, strict_types=True, use_bin_type=True, datetime=False
        )

    def _pack(self, value: Any) -> bytes:
        data: bytes = self._packer().pack(value)
        return data

    def pack_value(self, value: Any) -> bytes:
        """MessagePack bytes of `value`, raising one of `ENCODE_ERRORS` on failure.

        For encoders that assemble a state from parts: on failure they call `explain`
        with the whole state, which names the path of the value that failed.
        """
        # One packer per thread serves these top-level calls (building one costs about
        # a µs, paid per leaf); calls nested inside the hook still get their own.
        packer: msgpack.Packer | None = getattr(self._local, "packer", None)
        if packer is None:
            packer = self._local.packer = self._packer()
        try:
            data: bytes = packer.pack(value)
        except BaseException:
            self._local.packer = None  # a failed pack may leave the buffer half written
            raise
        if len(data) > _KEEP_PACKER_BELOW:
            self._local.packer = None  # its buffer grew to this size and would stay so
        return data

    def explain(self, state: Any, error: BaseException) -> SerializationError:
        """The `SerializationError` for a state that failed to encode, naming the path."""
        return self._explain(state, error)

    def encode(self, value: Any) -> bytes:
        """MessagePack bytes of `value`.

        Raises:
            SerializationError: the value holds something that cannot be stored; the
                message names its path (`state["jobs"][3]["callback"]`) and what to do.
        """
        try:
            return self._pack(value)
        except ENCODE_ERRORS as exc:
            raise self._explain(value, exc) from None

    def _default(self, o: Any) -> Any:
        t = type(o)
        if t is tuple:
            return msgpack.ExtType(EXT_TUPLE, self._pack(list(o)))
        if t is dt.datetime:
            fields = [o.year, o.month, o.day, o.hour, o.minute, o.second, o.microsecond, o.fold]
            fields.append(_tz_encode(o.tzinfo, o))
            return msgpack.ExtType(EXT_DATETIME, _plain.encode(fields))
        if t is set:
            return msgpack.ExtType(EXT_SET, self._pack_members(o))
        if t is frozenset:
            return msgpack.ExtType(EXT_FROZENSET, self._pack_members(o))
        if t is dt.date:
            return msgpack.ExtType(EXT_DATE, _plain.encode([o.year, o.month, o.day]))
        if t is uuid.UUID:
            return msgpack.ExtType(EXT_UUID, o.bytes)
        if t is decimal.Decimal:
            return msgpack.ExtType(EXT_DECIMAL, _plain.encode(str(o)))
        if t is int:  # only ints beyond 64 bits reach the hook
            return msgpack.ExtType(EXT_BIGINT, _plain.encode(str(o)))
        if t is dt.time:
            fields = [o.hour, o.minute, o.second, o.microsecond, o.fold, _tz_encode(o.tzinfo, None)]
            return msgpack.ExtType(EXT_TIME, _plain.encode(fields))
        if t is dt.timedelta:
            return msgpack.ExtType(
                EXT_TIMEDELTA, _plain.encode([o.days, o.seconds, o.microseconds])
            )
        if t is complex:
            return msgpack.ExtType(EXT_COMPLEX, _plain.encode([o.real, o.imag]))
        if t is fractions.Fraction:
            return msgpack.ExtType(EXT_FRACTION, self._pack([o.numerator, o.denominator]))
        if t is collections.OrderedDict:
            return msgpack.ExtType(EXT_ORDEREDDICT, self._pack(dict(o)))
        if t in _PATH_KINDS:
            return msgpack.ExtType(EXT_PATH, _plain.encode([_PATH_KINDS[t], str(o)]))
        if t is UnknownRecord:
            return self._encode_unknown(o)
        if t.__module__ == "numpy" or t.__module__.startswith("numpy."):
            return msgpack.ExtType(EXT_NDARRAY, self._pack(_ndarray_fields(o)))
        entry = self.registry.by_class(t)
        if entry is not None:
            return self._encode_registered(o, entry)
        raise _Unsupported(o, _why_unsupported(o))

    def _pack_members(self, members: set[Any] | frozenset[Any]) -> bytes:
        # A set's iteration order depends on the process's hash seed, so members are
        # written sorted by their encoded bytes: equal states get equal digests in every
        # process, whatever the members' types.
        encoded = sorted(self._pack(member) for member in members)
        header: bytes = _HEADERS.pack_array_header(len(encoded))
        return header + b"".join(encoded)

    def _encode_registered(self, o: Any, entry: RegisteredType) -> msgpack.ExtType:
        if entry.kind == "enum":
            member_names = type(o).__members__
            if o._name_ is not None and member_names.get(o._name_) is o:
                return msgpack.ExtType(EXT_ENUM, self._pack([entry.name, "n", o._name_]))
            return msgpack.ExtType(EXT_ENUM, self._pack([entry.name, "v", o._value_]))
        fields = _record_fields(o, entry)
        return msgpack.ExtType(EXT_RECORD, self._pack([entry.name, entry.kind, fields]))

    def _encode_unknown(self, o: UnknownRecord) -> msgpack.ExtType:
        if o.kind == "enum":
            how, what = next(iter(o.fields.items()))
            return msgpack.ExtType(EXT_ENUM, self._pack([o.type_name, how[0], what]))
        return msgpack.ExtType(EXT_RECORD, self._pack([o.type_name, o.kind, o.fields]))

    # -- decoding -----------------------------------------------------------------
    def decode(self, data: bytes | memoryview) -> Any:
        """The value encoded in `data`.

        Raises:
            UnknownTypeError: a record of an unregistered class (with `unknown_types="error"`).
            CorruptionError: the bytes are not a valid encoding.
        """
        with gc_paused(len(data) >= _GC_PAUSE_FROM):
            return decode_checked(self._decoder, data)

    def decode_many(self, parts: Sequence[bytes | memoryview]) -> list[Any]:
        """The values encoded in each of `parts`, under one GC pause (a journal replay).

        Raises:
            As `decode`, for the first part that fails.
        """
        decoder = self._decoder
        with gc_paused(True):
            return [decode_checked(decoder, part) for part in parts]

    def decode_ext(self, code: int, data: memoryview) -> Any:
        """Decode one extension value (for decoders that handle more codes first)."""
        return self._ext_hook(code, data)

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code == EXT_UUID:
            return uuid.UUID(bytes=bytes(data))
        decode = self._ext_decoders.get(code)
        if decode is None:
            raise CorruptionError(f"unknown extension type {code} in stored value")
        return decode(self._decoder.decode(data))

    @staticmethod
    def _decode_datetime(v: list[Any]) -> dt.datetime:
        return dt.datetime(v[0], v[1], v[2], v[3], v[4], v[5], v[6], _tz_decode(v[8]), fold=v[7])

    def _lookup(self, name: str, kind: str) -> RegisteredType | None:
        entry = self.registry.by_name(name)
        if entry is None and self.unknown_types == "error":
            raise UnknownTypeError(name)
        if entry is not None and (entry.kind == "enum") != (kind == "enum"):
            raise SerializationError(
                f"stored {kind} {name!r} is registered here as a {entry.kind} ({entry.cls!r})"
            )
        return entry

    def _decode_record(self, v: list[Any]) -> Any:
        name, kind, fields = v
        entry = self._lookup(name, kind)
        if entry is None:
            return UnknownRecord(name, kind, fields)
        cls = entry.cls
        try:
            if entry.kind == "pydantic":
                return cls.model_validate(fields)
            if entry.kind == "dataclass":
                return _build_dataclass(cls, fields)
            return cls(**fields)
        except Exception as exc:
            raise SerializationError(
                f"stored {name!r} does not fit the registered class {cls.__qualname__} "
                f"({type(exc).__name__}: {exc}). If the class changed since this state was "
                f"saved, register the old shape under this name or migrate the state."
            ) from exc

    def _decode_enum(self, v: list[Any]) -> Any:
        name, how, what = v
        entry = self._lookup(name, "enum")
        if entry is None:
            return UnknownRecord(name, "enum", {"name" if how == "n" else "value": what})
        try:
            return entry.cls[what] if how == "n" else entry.cls(what)
        except (KeyError, ValueError) as exc:
            raise SerializationError(
                f"stored enum {name!r} member {what!r} no longer exists in {entry.cls.__qualname__}"
            ) from exc

    # -- errors -------------------------------------------------------------------
    def _explain(self, value: Any, exc: BaseException) -> SerializationError:
        """Walk the value (slowly; only after a failure) to say where the problem is."""
        for path, item, reason in _walk_problems(value, self):
            return SerializationError(
                f"cannot store {describe(item)} at {path}: {reason}", path=path
            )
        return SerializationError(f"cannot store this state: {exc}")

    def check_leaf(self, o: Any) -> str | None:
        """Why `o` (not a container) cannot be stored, or None if it can."""
        try:
            self._pack(o)
        except _Unsupported as exc:
            return exc.reason
        except OverflowError:
            return "integer out of range"
        except UnicodeEncodeError as exc:
            return f"the string cannot be encoded as UTF-8 ({exc.reason}: lone surrogate?)"
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            return str(exc)
        return None


def _walk_problems(root: Any, codec: Codec) -> Iterator[tuple[str, Any, str]]:
    """Yield (path, value, reason) for values that cannot be stored, depth first."""
    stack: list[tuple[str, Any, frozenset[int]]] = [("state", root, frozenset())]
    while stack:
        path, value, ancestors = stack.pop()
        t = type(value)
        children: list[tuple[str, Any]] = []
        if t in (dict, collections.OrderedDict):
            for key, item in value.items():
                children.append((f"{path}[{key!r}]", item))
                if type(key) not in (str, int, float, bool, bytes, type(None)):
                    children.append((f"{path} key {key!r}", key))
        elif t in (list, tuple):
            children = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        elif t in (set, frozenset):
            children = [(f"{path} item {item!r}", item) for item in value]
        elif codec.registry.by_class(t) is not None and codec.registry.by_class(t).kind != "enum":  # type: ignore[union-attr]
            entry = codec.registry.by_class(t)
            assert entry is not None
            children = [(f"{path}.{k}", v) for k, v in _record_fields(value, entry).items()]
        else:
            reason = codec.check_leaf(value)
            if reason is not None:
                yield path, value, reason
            continue
        if id(value) in ancestors:
            yield (
                path,
                value,
                (
                    "the state refers to itself (a cycle); state must be a tree: store an id and "
                    "look the object up instead"
                ),
            )
            continue
        inner = ancestors | {id(value)}
        if len(inner) > 500:
            yield path, value, "nested more than 500 levels deep"
            continue
        stack.extend((p, v, inner) for p, v in reversed(children))


def _why_unsupported(o: Any) -> str:
    t = type(o)
    if callable(o) and not isinstance(o, type):
        return (
            "functions and callables are code, not state; store the data they need, or a "
            "name that your code maps to the function"
        )
    if isinstance(o, type):
        return "classes are code, not state; store a name that your code maps to the class"
    if hasattr(o, "__next__") or hasattr(o, "gi_frame"):
        return "generators and iterators cannot be stored; store the items (`list(it)`)"
    if "lock" in t.__name__.lower() or "thread" in t.__name__.lower():
        return "locks, threads and other runtime objects cannot be stored"
    if isinstance(o, (dict, list, str, int, float, bytes, tuple, set, frozenset)):
        return (
            f"{t.__qualname__} is a subclass of {t.__mro__[1].__name__}; store a plain "
            f"{t.__mro__[1].__name__}, or register the class (`statevault.register`) if it is "
            f"an enum, dataclass, msgspec Struct or Pydantic model"
        )
    kind = "record" if dataclasses.is_dataclass(o) or isinstance(o, msgspec.Struct) else "class"
    return (
        f"{t.__module__}.{t.__qualname__} is not registered; if it is a dataclass, msgspec "
        f"Struct, Pydantic model or enum, call `statevault.register({t.__qualname__})` (or "
        f"`vault.register(...)`) before saving and before loading. Other {kind}es cannot be "
        f"stored: convert the object to plain data."
    )


def _record_fields(o: Any, entry: RegisteredType) -> dict[str, Any]:
    """The fields of a record, shallow (nested values are encoded by the packer)."""
    if entry.kind == "struct":
        return {name: getattr(o, name) for name in o.__struct_fields__}
    if entry.kind == "dataclass":
        return {f.name: getattr(o, f.name) for f in dataclasses.fields(o)}
    fields = {name: getattr(o, name) for name in type(o).model_fields}
    extra = getattr(o, "__pydantic_extra__", None)
    if extra:
        fields.update(extra)
    return fields


def _build_dataclass(cls: type[Any], fields: dict[str, Any]) -> Any:
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    obj = cls(**{k: v for k, v in fields.items() if k in init})
    for key, value in fields.items():
        if key not in init:
            object.__setattr__(obj, key, value)
    return obj


def _ndarray_fields(o: Any) -> list[Any]:
    import numpy as np  # noqa: PLC0415 - only reached for NumPy values; NumPy is optional

    if isinstance(o, np.generic):
        arr = np.asarray(o)
        scalar = True
    elif isinstance(o, np.ndarray) and type(o) is np.ndarray:
        arr = o
        scalar = False
    else:
        raise _Unsupported(o, f"{type(o).__qualname__} is not a NumPy array or scalar")
    if arr.dtype.hasobject:
        raise _Unsupported(
            o,
            "NumPy arrays of Python objects (dtype=object) hold arbitrary objects and cannot "
            "be stored as raw buffers; store them as lists",
        )
    descr = np.lib.format.dtype_to_descr(arr.dtype)
    data = np.ascontiguousarray(arr).tobytes()
    return [descr, None if scalar else list(arr.shape), data]


def ndarray_buffer(o: Any) -> tuple[Any, list[int], memoryview] | None:
    """(dtype descr, shape, raw C-order bytes without a copy) of a plain NumPy array.

    None for anything else (scalars, object arrays, subclasses): those are packed whole.
    """
    import numpy as np  # noqa: PLC0415 - only reached for NumPy values; NumPy is optional

    if type(o) is not np.ndarray or o.dtype.hasobject:
        return None
    arr = np.ascontiguousarray(o)
    flat = arr.reshape(-1).view(np.uint8)
    return np.lib.format.dtype_to_descr(arr.dtype), list(arr.shape), flat.data


def decode_ndarray(v: list[Any], *, copy: bool = True) -> Any:
    """An array from its stored fields `[descr, shape, buffer]`.

    Args:
        copy: copy the buffer, so the array is writable and owns its memory. False
            makes an array over the buffer itself (read-only if the buffer is), for a
            buffer that is a memory map of the stored bytes.
    """
    try:
        import numpy as np  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise SerializationError(
            "this state holds NumPy arrays; install NumPy (`pip install statevault[numpy]`) "
            "to load it"
        ) from exc
    descr, shape, data = v
    if isinstance(descr, list):
        descr = [tuple(item) if isinstance(item, list) else item for item in descr]
    dtype = np.lib.format.descr_to_dtype(descr)
    if dtype.hasobject:
        raise CorruptionError("stored array claims dtype=object, which is never written")
    arr = np.frombuffer(data, dtype=dtype)
    if copy:  # writable, and does not pin the decoded buffer
        arr = arr.copy()
    if shape is None:
        return arr[0]
    return arr.reshape(shape)


def decode_checked(decoder: msgspec.msgpack.Decoder[Any], data: bytes | memoryview) -> Any:
    """Decode a verified payload; one that still does not decode is `CorruptionError`.

    Typed errors raised by extension hooks (damage found deeper, an unregistered
    class) pass through unchanged.
    """
    try:
        return decoder.decode(data)
    except (CorruptionError, SerializationError):
        raise
    except (msgspec.DecodeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise CorruptionError(f"stored value does not decode ({exc})") from exc


@contextmanager
def gc_paused(pause: bool) -> Iterator[None]:
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
        gc.freeze()
        gc.unfreeze()
    finally:
        gc.enable()
