"""statevault: atomic, durable, verified state for long-running Python workflows.

Example:
    >>> import statevault
    >>> vault = statevault.open("state.db")                      # doctest: +SKIP
    >>> run = vault.run("order-42")                              # doctest: +SKIP
    >>> run.save({"step": 1, "items": ["a"]}, meta={"note": "after fetch"})  # doctest: +SKIP
    >>> run.load()                                               # doctest: +SKIP
    {'step': 1, 'items': ['a']}
"""

from __future__ import annotations

__version__ = "0.1.0"

from collections.abc import Callable
from typing import Any, TypeVar

from statevault import ops
from statevault.backends.base import LeaseGrant, RecoveryNote, UpgradeStep
from statevault.codec.encoding import UnknownRecord
from statevault.codec.registry import GLOBAL_REGISTRY
from statevault.engine.bulk import MigrationReport, RunOutcome
from statevault.engine.checkpoints import Checkpoint
from statevault.engine.journal import CheckpointPolicy
from statevault.engine.leases import Lease
from statevault.engine.repair import QuarantinedItem, RepairReport, RolledBack
from statevault.engine.upgrade import UpgradeReport
from statevault.engine.verify import Problem, RunDamage, VerifyReport
from statevault.engine.watch import AsyncWatch, Watch
from statevault.errors import (
    BlockingCallError,
    CheckpointNotFound,
    ConflictError,
    CorruptionError,
    DurabilityError,
    DurabilityWarning,
    InvalidRunIdError,
    LeaseError,
    LeaseHeld,
    LeaseLost,
    MigrationError,
    NotAVaultError,
    RunNotFound,
    SchemaError,
    SchemaValidationError,
    SerializationError,
    StateVaultError,
    StorageError,
    UnknownTypeError,
    UnsupportedFormatError,
    VaultBusyError,
    VaultClosedError,
)
from statevault.paths import lookup
from statevault.run import Run
from statevault.schema.documents import SchemaDocument
from statevault.schema.registry import GLOBAL_SCHEMAS, MigrationFunction
from statevault.schema.types import Schema
from statevault.tree.lazy import LazyState
from statevault.vault import FORMAT_VERSION, Vault, open, open_async


def register(cls: type[Any], *, name: str | None = None) -> type[Any]:
    """Allow a class in stored state, in every vault of this process.

    Works as a decorator. The class must be a msgspec Struct, dataclass, Pydantic v2
    model or Enum. Loading rebuilds only registered classes, so register before
    loading too; give a stable `name` if the class may move between modules.

    Example:
        >>> @statevault.register                                 # doctest: +SKIP
        ... @dataclass
        ... class Order:
        ...     id: str
        ...     total_cents: int
    """
    return GLOBAL_REGISTRY.register(cls, name=name)


_T = TypeVar("_T", bound=type[Any])
_F = TypeVar("_F", bound=MigrationFunction)


def schema(name: str, cls: _T, /, *, version: int) -> _T:
    """Register `cls` as version `version` of schema `name`, for every vault.

    Meant for import time, in the module that defines the types: a vault opened
    later (also by `statevault migrate --module`) finds it. `vault.schema` registers
    for one vault, and checks at once that the vault stored no other shape under the
    same version; module-level schemas are checked when a run is opened with them.

    Example:
        >>> statevault.schema("order", OrderV3, version=3)     # doctest: +SKIP
    """
    GLOBAL_SCHEMAS.add(name, cls, version)
    return cls


def migration(name: str, source: int, target: int) -> Callable[[_F], _F]:
    """Register a migration of schema `name` from `source` to `target`, for every vault.

    See `Vault.migration`.

    Example:
        >>> @statevault.migration("order", 2, 3)              # doctest: +SKIP
        ... def cents(state: dict) -> dict:
        ...     state["total_cents"] = round(state.pop("total") * 100)
        ...     return state
    """

    def decorate(function: _F) -> _F:
        GLOBAL_SCHEMAS.add_migration(name, source, target, function)
        return function

    return decorate


__all__ = [
    "FORMAT_VERSION",
    "AsyncWatch",
    "BlockingCallError",
    "Checkpoint",
    "CheckpointNotFound",
    "CheckpointPolicy",
    "ConflictError",
    "CorruptionError",
    "DurabilityError",
    "DurabilityWarning",
    "InvalidRunIdError",
    "LazyState",
    "Lease",
    "LeaseError",
    "LeaseGrant",
    "LeaseHeld",
    "LeaseLost",
    "MigrationError",
    "MigrationReport",
    "NotAVaultError",
    "Problem",
    "QuarantinedItem",
    "RecoveryNote",
    "RepairReport",
    "RolledBack",
    "Run",
    "RunDamage",
    "RunNotFound",
    "RunOutcome",
    "Schema",
    "SchemaDocument",
    "SchemaError",
    "SchemaValidationError",
    "SerializationError",
    "StateVaultError",
    "StorageError",
    "UnknownRecord",
    "UnknownTypeError",
    "UnsupportedFormatError",
    "UpgradeReport",
    "UpgradeStep",
    "Vault",
    "VaultBusyError",
    "VaultClosedError",
    "VerifyReport",
    "Watch",
    "__version__",
    "lookup",
    "migration",
    "open",
    "open_async",
    "ops",
    "register",
    "schema",
]
