"""A schema: a name, a version and the Python type a run's state must match.

A schema-bound run stores its state in *plain form*: the dicts, lists and scalars
that `msgspec.to_builtins` makes of the typed value (records become dicts of their
fields, enums their values, sets lists), with the values JSON lacks (datetimes,
UUIDs, Decimals, bytes, NumPy arrays, ...) kept as they are for the codec. The
plain form is what the stored JSON Schema describes, what migrations receive, and
what loads without the code that wrote it; no class name is stored, so a type may
be renamed or moved freely. Loading converts the plain form back into the type,
which validates it (`msgspec.convert`, or Pydantic's `model_validate`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import fractions
import pathlib
import re
import sys
import typing
import uuid
from typing import Any, Literal

import msgspec

from statevault.codec.registry import kind_of
from statevault.errors import SchemaError, SchemaValidationError, SerializationError, describe
from statevault.schema.shape import fingerprint

SchemaKind = Literal["struct", "dataclass", "pydantic", "typeddict"]

MAX_NAME_LENGTH = 200

_PASS_THROUGH: tuple[type[Any], ...] = (
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
    bytes,
    bytearray,
    memoryview,
    fractions.Fraction,
    complex,
    pathlib.PurePath,
)
"""Values the codec stores natively: the plain form keeps them as they are."""

_CONVERT_STRICT = (bytes, bytearray)
"""Types `convert` must find as they are. Without this a `str` would be base64-decoded
into a bytes field; datetimes, UUIDs and Decimals still accept their JSON Schema text
forms (ISO 8601, canonical UUIDs, digits), which lets a migration write those."""

_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def check_name(name: object) -> str:
    """Return `name` if it is a valid schema name, else raise `SchemaError`."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise SchemaError(
            f"a schema name is a non-empty str of at most {MAX_NAME_LENGTH} characters; "
            f"got {name!r}"
        )
    if any(ord(ch) < 32 for ch in name):
        raise SchemaError(f"a schema name must not contain control characters: {name!r}")
    return name


def check_version(version: object, *, what: str = "a schema version") -> int:
    """Return `version` if it is an int >= 1, else raise `SchemaError`."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SchemaError(f"{what} is an int >= 1; got {version!r}")
    return version


def schema_kind(cls: object) -> SchemaKind | None:
    """The kind of type `cls` is as a schema, or None if it cannot be one."""
    if isinstance(cls, type) and typing.is_typeddict(cls):
        return "typeddict"
    kind = kind_of(cls) if isinstance(cls, type) else None
    if kind == "struct" or kind == "dataclass" or kind == "pydantic":  # noqa: PLR1714 - narrows
        return kind
    return None


def type_name(cls: type[Any]) -> str:
    """`module:QualName`, how a stored schema names the type it came from."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _pass_through() -> tuple[type[Any], ...]:
    numpy = sys.modules.get("numpy")  # NumPy is optional: only pass it if it is loaded
    if numpy is None:
        return _PASS_THROUGH
    return (*_PASS_THROUGH, numpy.ndarray, numpy.generic)


def _plain_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is not None and hasattr(type(value), "model_fields"):
        return dump(mode="python")
    raise NotImplementedError


def _decode_hook(wanted: type[Any], value: Any) -> Any:
    # Custom types (NumPy arrays, Fractions, paths) come through the plain form as they
    # are; anything else in their place is a mismatch for `convert` to report.
    if isinstance(wanted, type) and isinstance(value, wanted):
        return value
    raise NotImplementedError


class Schema:
    """One registered (name, version, type). Made by `vault.schema` / `statevault.schema`.

    Attributes:
        name: the schema's name, e.g. "order".
        version: its version, an int >= 1.
        type: the msgspec Struct, dataclass, Pydantic v2 model or TypedDict.
        kind: "struct", "dataclass", "pydantic" or "typeddict".
    """

    __slots__ = (
        "_fingerprint",
        "_json_schema",
        "_paths_match",
        "kind",
        "name",
        "type",
        "version",
    )

    def __init__(self, name: str, cls: type[Any], version: int) -> None:
        self.name = check_name(name)
        self.version = check_version(version)
        kind = schema_kind(cls)
        if kind is None:
            raise SchemaError(
                f"schema {name!r} version {version}: a schema's type is a msgspec Struct, "
                f"dataclass, Pydantic v2 model or TypedDict class; got {cls!r}",
                schema=name,
                version=version,
            )
        self.type = cls
        self.kind: SchemaKind = kind
        self._json_schema: dict[str, Any] | None = None
        self._fingerprint: str | None = None
        self._paths_match: bool | None = None

    def __repr__(self) -> str:
        return f"<Schema {self.name!r} v{self.version} {type_name(self.type)}>"

    # -- conversion ------------------------------------------------------------------
    def to_plain(self, value: Any) -> Any:
        """The plain form of `value` (a typed value or plain data), without validating.

        Raises:
            SerializationError: `value` holds something the plain form cannot carry.
        """
        try:
            return msgspec.to_builtins(value, builtin_types=_pass_through(), enc_hook=_plain_hook)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            raise SerializationError(
                f"cannot store this state under schema {self.name!r} version {self.version}: "
                f"{exc}. Schema-bound state holds the schema's type, plain data and the "
                f"values statevault stores natively (datetimes, UUIDs, Decimals, bytes, "
                f"NumPy arrays)."
            ) from None

    def from_plain(self, plain: Any) -> Any:
        """The typed value of a plain form, validated.

        Raises:
            SchemaValidationError: the plain form does not match the type.
        """
        if self.kind == "pydantic":
            from pydantic import ValidationError  # noqa: PLC0415 - pydantic is optional

            try:
                return self.type.model_validate(plain)
            except ValidationError as exc:
                raise self._pydantic_error(exc) from None
        try:
            return msgspec.convert(
                plain, self.type, dec_hook=_decode_hook, builtin_types=_CONVERT_STRICT
            )
        except msgspec.ValidationError as exc:
            raise self._msgspec_error(exc, plain) from None

    def check(self, value: Any) -> tuple[Any, Any]:
        """Validate `value` (typed or plain): returns (typed value, plain form).

        The typed value is new: nothing in it is shared with `value` but immutable
        leaves (and NumPy arrays, which the plain form carries as they are).

        Raises:
            SchemaValidationError: `value` does not match the type.
            SerializationError: `value` holds something that cannot be stored.
        """
        plain = self.to_plain(value)
        return self.from_plain(plain), plain

    # -- documents -------------------------------------------------------------------
    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the plain form (made once; do not change the dict)."""
        if self._json_schema is None:
            if self.kind == "pydantic":
                made: dict[str, Any] = self.type.model_json_schema()
            else:
                made = msgspec.json.schema(self.type, schema_hook=_schema_hook)
            self._json_schema = made
        return self._json_schema

    @property
    def fingerprint(self) -> str:
        """BLAKE3 (hex) of the shape of `json_schema` (see `statevault.schema.shape`)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.json_schema)
        return self._fingerprint

    @property
    def paths_match(self) -> bool:
        """Whether every field of the type is stored under its own name, in a dict.

        Then a change recorded on the typed value (`order.items[3].qty = 2`) names the
        same path in the plain form, and transactions commit it as a journal entry.
        Renamed fields, array-like Structs and Structs that omit defaults break that
        correspondence: their transactions commit whole states instead.
        """
        if self._paths_match is None:
            self._paths_match = self.kind == "pydantic" or _names_kept(
                msgspec.inspect.type_info(self.type)
            )
        return self._paths_match

    # -- errors ----------------------------------------------------------------------
    def _msgspec_error(self, exc: msgspec.ValidationError, plain: Any) -> SchemaValidationError:
        match = _MSGSPEC_PATH.match(str(exc))
        assert match is not None  # the pattern matches every string
        message, path = match.group("message"), match.group("path") or "$"
        expected, found = message, _found_at(plain, path)
        missing = re.match(r"Object missing required field `(.*)`$", message)
        wrong = re.match(r"Expected `([^`]*)`(.*?)(?:, got `([^`]*)`)?$", message)
        if missing:
            path = f"{path}.{missing.group(1)}"
            expected, found = "a value (the field is required)", "nothing (the field is missing)"
        elif wrong:
            expected = (wrong.group(1) + wrong.group(2)).strip()
            if found is None and wrong.group(3):
                found = f"a value of type {wrong.group(3)}"
        elif message.startswith("Invalid enum value"):
            expected = f"one of the allowed values ({message})"
        return SchemaValidationError(
            schema=self.name,
            version=self.version,
            path=path,
            expected=expected,
            found=found if found is not None else "a value that does not fit",
        )

    def _pydantic_error(self, exc: Any) -> SchemaValidationError:
        problems: list[dict[str, Any]] = exc.errors()
        first = problems[0] if problems else {"loc": (), "msg": str(exc), "type": ""}
        path = "$" + "".join(
            f"[{key}]" if isinstance(key, int) else f".{key}" for key in first.get("loc", ())
        )
        if first.get("type") == "missing":
            expected, found = "a value (the field is required)", "nothing (the field is missing)"
        else:
            expected, found = str(first["msg"]), describe(first.get("input"))
        return SchemaValidationError(
            schema=self.name,
            version=self.version,
            path=path,
            expected=expected,
            found=found,
            errors=max(1, len(problems)),
        )


def _schema_hook(cls: type[Any]) -> dict[str, Any]:
    """JSON Schema for the custom types the plain form carries as they are."""
    return {"description": f"a {cls.__module__}.{cls.__qualname__}, stored natively"}


def _found_at(plain: Any, path: str) -> str | None:
    """A description of the value at a msgspec error path (`$.items[0].qty`), if found."""
    value = plain
    for name, index in _PATH_TOKEN.findall(path[1:]):
        try:
            if name:
                value = value[name]
            elif index == "...":
                return None  # msgspec does not say which dict key
            else:
                value = value[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return describe(value)


def _names_kept(info: msgspec.inspect.Type, seen: set[int] | None = None) -> bool:
    """True if no Struct reachable from `info` renames fields, is array-like or omits
    fields from its plain form (see `Schema.paths_match`)."""
    seen = set() if seen is None else seen
    if id(info) in seen:
        return True
    seen.add(id(info))
    if isinstance(info, msgspec.inspect.StructType):
        if info.array_like or info.cls.__struct_config__.omit_defaults:
            return False
        if any(f.encode_name != f.name or f.default is msgspec.UNSET for f in info.fields):
            return False
    children: list[msgspec.inspect.Type] = []
    for name in type(info).__struct_fields__:
        _collect(getattr(info, name), children)
    return all(_names_kept(child, seen) for child in children)


def _collect(value: Any, found: list[msgspec.inspect.Type]) -> None:
    if isinstance(value, msgspec.inspect.Type):
        found.append(value)
    elif isinstance(value, msgspec.inspect.Field):
        found.append(value.type)
    elif isinstance(value, tuple):
        for item in value:
            _collect(item, found)
