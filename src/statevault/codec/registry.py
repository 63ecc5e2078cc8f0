"""The allow-list of classes that stored state may rebuild.

Loading never imports code by name: a typed record (msgspec Struct, dataclass,
Pydantic model) or an enum comes back as its class only if that class was
registered in the loading process under the name it was stored with.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

RecordKind = Literal["struct", "dataclass", "pydantic", "enum"]


@dataclass(frozen=True, slots=True)
class RegisteredType:
    """One allowed class and the name it is stored under."""

    cls: type[Any]
    name: str
    kind: RecordKind


def kind_of(cls: type[Any]) -> RecordKind | None:
    """What kind of registrable class `cls` is, or None if it is none of them."""
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return "enum"
    if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
        return "struct"
    if dataclasses.is_dataclass(cls) and isinstance(cls, type):
        return "dataclass"
    # Pydantic is optional: recognise a v2 model by its API instead of importing it.
    if isinstance(cls, type) and hasattr(cls, "model_fields") and hasattr(cls, "model_validate"):
        return "pydantic"
    return None


def default_name(cls: type[Any]) -> str:
    """`module:QualName`, the name a class is stored under unless one is given."""
    return f"{cls.__module__}:{cls.__qualname__}"


class TypeRegistry:
    """Registered classes, by class and by stored name.

    A registry may fall back to a parent: a vault's registry consults the
    module-level one, so `statevault.register(cls)` applies to every vault.
    """

    def __init__(self, parent: TypeRegistry | None = None) -> None:
        self._parent = parent
        self._by_cls: dict[type[Any], RegisteredType] = {}
        self._by_name: dict[str, RegisteredType] = {}
        self._lock = threading.Lock()

    def register(self, cls: type[Any], *, name: str | None = None) -> type[Any]:
        """Allow `cls` in stored state. Returns `cls`, so it works as a decorator.

        Args:
            cls: a msgspec Struct, dataclass, Pydantic v2 model or Enum class.
            name: the stored name; give one that will not change when the class
                moves between modules. Defaults to `module:QualName`.

        Raises:
            TypeError: `cls` is not a kind statevault can store, or the name is
                already taken by another class.
        """
        kind = kind_of(cls)
        if kind is None:
            raise TypeError(
                f"statevault can register msgspec Structs, dataclasses, Pydantic models and "
                f"enums; {cls!r} is none of these. Convert it to one of them, or store its "
                f"fields as a dict."
            )
        stored = name if name is not None else default_name(cls)
        entry = RegisteredType(cls=cls, name=stored, kind=kind)
        with self._lock:
            taken = self._by_name.get(stored)
            if taken is not None and taken.cls is not cls:
                raise TypeError(
                    f"the name {stored!r} is already registered for {taken.cls!r}; pass "
                    f"another `name=` for {cls!r}"
                )
            previous = self._by_cls.get(cls)
            if previous is not None and previous.name != stored:
                raise TypeError(
                    f"{cls!r} is already registered as {previous.name!r}; a class has one "
                    f"stored name"
                )
            self._by_cls[cls] = entry
            self._by_name[stored] = entry
        return cls

    def by_class(self, cls: type[Any]) -> RegisteredType | None:
        entry = self._by_cls.get(cls)
        if entry is None and self._parent is not None:
            return self._parent.by_class(cls)
        return entry

    def by_name(self, name: str) -> RegisteredType | None:
        entry = self._by_name.get(name)
        if entry is None and self._parent is not None:
            return self._parent.by_name(name)
        return entry


GLOBAL_REGISTRY = TypeRegistry()
"""The module-level registry behind `statevault.register`."""
