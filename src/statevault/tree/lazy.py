"""`LazyState`: a read-only view of a stored state that reads its parts on first access."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from statevault import paths
from statevault.tree.read import PathReader


class LazyState:
    """A read-only view of a stored state, returned by `run.load(lazy=True)`.

    Indexing reads only the objects on the way (`view["messages"][4321]["text"]` reads
    the root and one chunk); scalars come back as values, containers as further
    views. `to_python()` loads the part a view stands for, whole.

    Example:
        >>> view = run.load(lazy=True)                      # doctest: +SKIP
        >>> view["results"]["rows"][17]["score"]            # doctest: +SKIP
        0.93
    """

    __slots__ = ("_path", "_reader", "_value")

    def __init__(self, reader: PathReader, value: Any, path: tuple[Any, ...] = ()) -> None:
        self._reader = reader
        self._value = value
        self._path = path

    def __getitem__(self, key: Any) -> Any:
        found = self._reader.child(self._value, key, list(self._path), paths.step)
        if self._reader.is_container(found):
            return LazyState(self._reader, found, (*self._path, key))
        return self._reader.whole(found)

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __len__(self) -> int:
        return self._reader.length(self._value)

    def keys(self) -> list[Any]:
        """A dict's keys (no object is read)."""
        if not isinstance(self._value, dict):
            raise TypeError(f"{self._where()} is a list, not a dict")
        return list(self._value)

    def items(self) -> Iterator[tuple[Any, Any]]:
        for key in self.keys():
            yield key, self[key]

    def values(self) -> Iterator[Any]:
        for key in self.keys():
            yield self[key]

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self._value, dict):
            return iter(list(self._value))
        return (self[i] for i in range(len(self)))

    def __contains__(self, key: Any) -> bool:
        if isinstance(self._value, dict):
            return key in self._value
        return any(item == key for item in self)

    def to_python(self) -> Any:
        """This part of the state as ordinary values, loaded whole."""
        return self._reader.whole(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyState):
            other = other.to_python()
        return bool(self.to_python() == other)

    __hash__ = None  # type: ignore[assignment]  # a view of mutable state is not hashable

    def _where(self) -> str:
        return paths.format_path(list(self._path)) or "the state"

    def __repr__(self) -> str:
        kind = "dict" if isinstance(self._value, dict) else "list"
        return f"<LazyState {kind} of {len(self)} at {self._where()}>"
