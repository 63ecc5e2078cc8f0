"""Registered schemas and migrations, per vault with a module-level fallback.

`statevault.schema(...)` and `@statevault.migration(...)` register in the module-level
registry, which every vault consults after its own (`vault.schema(...)`), the same way
`statevault.register` and `vault.register` share classes. A vault's own registrations
win over module-level ones for the same (name, version) or step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statevault.errors import SchemaError
from statevault.schema.types import Schema, check_name, check_version

MigrationFunction = Callable[[Any], Any]
"""A migration: takes a state in plain form (dicts, lists, scalars) of one version and
returns it in the plain form of the next (it may change its argument and return it)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One registered step of a schema's history: `source` -> `target` (adjacent versions).

    Attributes:
        name: the schema's name.
        source: the version the function reads.
        target: the version it returns (source + 1, or source - 1 for a way back).
        function: the function.
    """

    name: str
    source: int
    target: int
    function: MigrationFunction

    @property
    def label(self) -> str:
        """The function's qualified name, for messages."""
        function = self.function
        module = getattr(function, "__module__", None) or "?"
        return f"{module}.{getattr(function, '__qualname__', repr(function))}"


class SchemaRegistry:
    """Schemas by (name, version) and migrations by (name, source, target).

    Args:
        parent: consulted after this registry (a vault's registry has the module-level
            one as parent).
    """

    def __init__(self, parent: SchemaRegistry | None = None) -> None:
        self._parent = parent
        self._schemas: dict[str, dict[int, Schema]] = {}
        self._migrations: dict[tuple[str, int, int], Migration] = {}
        self._lock = threading.Lock()

    # -- registering -----------------------------------------------------------------
    def add(self, name: str, cls: type[Any], version: int) -> Schema:
        """Register `cls` as version `version` of schema `name`; returns the `Schema`.

        Registering the same class again is a no-op.

        Raises:
            SchemaError: `cls` is not a type a schema can have, or this registry holds
                another class under the same (name, version).
        """
        schema = Schema(name, cls, version)
        with self._lock:
            versions = self._schemas.setdefault(name, {})
            taken = versions.get(version)
            if taken is not None:
                if taken.type is cls:
                    return taken
                raise SchemaError(
                    f"schema {name!r} version {version} is already registered as "
                    f"{taken.type!r}; a changed type needs a new version: register "
                    f"{cls.__qualname__} as version {max(versions) + 1} with a migration "
                    f"{max(versions)}->{max(versions) + 1}",
                    schema=name,
                    version=version,
                )
            versions[version] = schema
        return schema

    def add_migration(
        self, name: str, source: int, target: int, function: MigrationFunction
    ) -> Migration:
        """Register `function` as the step `source` -> `target` of schema `name`.

        Raises:
            SchemaError: the versions are not adjacent, `function` is not callable, or
                another function is registered for the same step here.
        """
        check_name(name)
        check_version(source, what="a migration's source version")
        check_version(target, what="a migration's target version")
        if abs(source - target) != 1:
            raise SchemaError(
                f"a migration goes one version up or down (N -> N+1 or N+1 -> N); got "
                f"{source} -> {target} for {name!r}: register one function per step",
                schema=name,
                version=target,
            )
        if not callable(function):
            raise SchemaError(f"a migration must be a function; got {function!r}", schema=name)
        step = Migration(name, source, target, function)
        with self._lock:
            taken = self._migrations.get((name, source, target))
            if taken is not None and taken.function is not function:
                raise SchemaError(
                    f"migration {name!r} {source}->{target} is already registered "
                    f"({taken.label}); one function per step",
                    schema=name,
                    version=target,
                )
            self._migrations[(name, source, target)] = step
        return step

    # -- looking up ------------------------------------------------------------------
    def versions(self, name: str) -> dict[int, Schema]:
        """Every registered version of `name` (this registry's over its parent's)."""
        found = self._parent.versions(name) if self._parent is not None else {}
        with self._lock:
            found.update(self._schemas.get(name, {}))
        return found

    def get(self, name: str, version: int) -> Schema | None:
        return self.versions(name).get(version)

    def current(self, name: str) -> Schema:
        """The newest registered version of `name`: what its runs save and load as.

        Raises:
            SchemaError: nothing is registered under `name`.
        """
        versions = self.versions(name)
        if not versions:
            known = ", ".join(repr(n) for n in self.names()) or "none"
            raise SchemaError(
                f"no schema {name!r} is registered in this process (registered: {known}). "
                f"Register its type first: `vault.schema({name!r}, YourType, version=N)` or "
                f"`statevault.schema(...)` at import time",
                schema=name,
            )
        return versions[max(versions)]

    def names(self) -> list[str]:
        """Names with at least one registered version, sorted."""
        names = set(self._parent.names()) if self._parent is not None else set()
        with self._lock:
            names.update(n for n, versions in self._schemas.items() if versions)
        return sorted(names)

    def step(self, name: str, source: int, target: int) -> Migration | None:
        """The registered migration `source` -> `target` of `name`, if any."""
        with self._lock:
            found = self._migrations.get((name, source, target))
        if found is None and self._parent is not None:
            return self._parent.step(name, source, target)
        return found

    def migrations(self, name: str) -> list[Migration]:
        """Every registered step of `name`, ordered by source then target."""
        found = {
            (m.source, m.target): m for m in (self._parent.migrations(name) if self._parent else [])
        }
        with self._lock:
            found.update({(s, t): m for (n, s, t), m in self._migrations.items() if n == name})
        return [found[key] for key in sorted(found)]


GLOBAL_SCHEMAS = SchemaRegistry()
"""The module-level registry behind `statevault.schema` and `statevault.migration`."""
