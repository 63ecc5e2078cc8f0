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

from typing import Any

from statevault import ops
from statevault.backends.base import LeaseGrant
from statevault.codec.encoding import UnknownRecord
from statevault.codec.registry import GLOBAL_REGISTRY
from statevault.engine.checkpoints import Checkpoint
from statevault.engine.journal import CheckpointPolicy
from statevault.engine.leases import Lease
from statevault.engine.repair import QuarantinedItem, RepairReport, RolledBack
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
    NotAVaultError,
    RunNotFound,
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
    "NotAVaultError",
    "Problem",
    "QuarantinedItem",
    "RepairReport",
    "RolledBack",
    "Run",
    "RunDamage",
    "RunNotFound",
    "SerializationError",
    "StateVaultError",
    "StorageError",
    "UnknownRecord",
    "UnknownTypeError",
    "UnsupportedFormatError",
    "Vault",
    "VaultBusyError",
    "VaultClosedError",
    "VerifyReport",
    "Watch",
    "__version__",
    "lookup",
    "open",
    "open_async",
    "ops",
    "register",
]
