"""Every error statevault raises.

Each class derives from `StateVaultError` and from the nearest builtin, so code that
already catches `KeyError` or `ValueError` keeps working. Messages say what happened,
where (vault, run, checkpoint, object, path in the state) and what to do next; the
same facts are attributes for programs.
"""

from __future__ import annotations

import time
from typing import Any


def short_digest(digest: bytes | str | None) -> str:
    """`3f9a…c2d1`: enough of a digest to find it, short enough to read."""
    if digest is None:
        return "?"
    text = digest if isinstance(digest, str) else digest.hex()
    return f"{text[:8]}…{text[-4:]}" if len(text) > 16 else text


class StateVaultError(Exception):
    """Base class of every statevault error."""


class SerializationError(StateVaultError, TypeError):
    """A value cannot be stored, or stored bytes cannot be turned back into a value.

    Attributes:
        path: where in the state, as `state["jobs"][3]["callback"]`, when known.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.run_id: str | None = None
        self.seq: int | None = None

    def in_checkpoint(self, run_id: str, seq: int) -> SerializationError:
        """The same error, its message prefixed with the checkpoint being loaded."""
        if self.run_id is None:
            self.run_id, self.seq = run_id, seq
            self.args = (f"run {run_id!r} checkpoint {seq}: {self.args[0]}", *self.args[1:])
        return self


class UnknownTypeError(SerializationError):
    """Stored state names a class that this process has not registered.

    Loading never imports code by name, so the class must be registered first
    (`statevault.register(cls)`), or the vault opened with `unknown_types="keep"`.
    """

    def __init__(self, type_name: str, *, path: str | None = None) -> None:
        where = f" at {path}" if path else ""
        super().__init__(
            f"stored state holds a {type_name!r}{where}, but no class is registered under "
            f"that name in this process. Register it before loading "
            f"(`statevault.register(YourClass, name={type_name!r})`), or open the vault with "
            f"`unknown_types='keep'` to load it as a statevault.UnknownRecord.",
            path=path,
        )
        self.type_name = type_name


class CorruptionError(StateVaultError, ValueError):
    """Stored bytes fail their checksum or digest, or are not what the format says.

    Wrong data is never returned: reads that meet damage raise this instead.

    Attributes:
        run_id: the run whose read met the damage, when known.
        seq: the checkpoint, when known.
        digest: the object's digest (hex), when an object is at fault.
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        seq: int | None = None,
        digest: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = []
        if run_id is not None:
            where.append(f"run {run_id!r}")
        if seq is not None:
            where.append(f"checkpoint {seq}")
        if digest is not None:
            where.append(f"object {short_digest(digest)}")
        prefix = " ".join(where)
        text = f"{prefix}: {message}" if prefix else message
        if hint:
            text = f"{text}\n  {hint}"
        super().__init__(text)
        self.run_id = run_id
        self.seq = seq
        self.digest = digest
        self.detail = message

    def located(self, *, run_id: str | None, seq: int | None) -> CorruptionError:
        """The same damage, named with the run and checkpoint the caller was reading."""
        return CorruptionError(
            self.detail,
            run_id=self.run_id if self.run_id is not None else run_id,
            seq=self.seq if self.seq is not None else seq,
            digest=self.digest,
            hint=(
                "Run `statevault verify PATH` to see every damaged checkpoint; older "
                "checkpoints may still load with `run.load(at=SEQ)`."
            ),
        )


class UnsupportedFormatError(StateVaultError, ValueError):
    """The vault (or one object in it) was written by a newer format than this reader knows."""

    def __init__(self, *, found: int, supported: int, what: str = "vault") -> None:
        super().__init__(
            f"this {what} uses storage format {found}, but this statevault reads formats up "
            f"to {supported}. Upgrade statevault (`pip install -U statevault`) to open it; "
            f"nothing was changed."
        )
        self.found = found
        self.supported = supported


class NotAVaultError(StateVaultError, ValueError):
    """The path holds something other than a statevault vault. Nothing in it was changed."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(
            f"{location} is not a statevault vault: {reason}. Nothing in it was changed; "
            f"pass a new path (or an empty file or directory) to create a vault."
        )
        self.location = location


class RunNotFound(StateVaultError, KeyError):
    """The run has no checkpoint."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id

    def __str__(self) -> str:
        return (
            f"run {self.run_id!r} has no checkpoint yet. Save one with `run.save(state)`, or "
            f"pass `default=` to `run.load()` to get a starting value instead."
        )


class CheckpointNotFound(StateVaultError, KeyError):
    """The run exists but has no checkpoint with that sequence number."""

    def __init__(self, run_id: str, seq: int, head: int) -> None:
        super().__init__(seq)
        self.run_id = run_id
        self.seq = seq
        self.head = head

    def __str__(self) -> str:
        known = f"its checkpoints are 1..{self.head}" if self.head else "it has none"
        return (
            f"run {self.run_id!r} has no checkpoint {self.seq}: {known}. "
            f"`run.checkpoints()` lists them."
        )


class ConflictError(StateVaultError, RuntimeError):
    """Another writer moved the run's head since this handle last saw it.

    Nothing was written. Load again, reapply the change and save, or save with
    `force=True` to overwrite deliberately.

    Attributes:
        run_id: the run.
        expected: the head seq this handle knew (0 = no checkpoint).
        actual: the head seq found in the vault.
    """

    def __init__(self, run_id: str, *, expected: int, actual: int) -> None:
        super().__init__(
            f"run {run_id!r} moved: this handle expected head checkpoint {expected} but the "
            f"vault has {actual}. Nothing was written. Call `run.load()` to see the newer "
            f"state and save again, or `run.save(state, force=True)` to overwrite it."
        )
        self.run_id = run_id
        self.expected = expected
        self.actual = actual


class LeaseError(StateVaultError, RuntimeError):
    """Base of the errors about a run's lease (single-writer ownership)."""


class LeaseHeld(LeaseError):
    """Another worker holds the run's lease, so this one may not write to the run.

    Nothing was written. Wait for the lease (`run.lease(wait=SECONDS)`), or leave the
    run to its holder; a crashed holder's lease ends by itself at `expires_at`.

    Attributes:
        run_id: the run.
        owner: who holds the lease (`host:pid:random` unless the holder named itself).
        expires_at: when the lease ends unless renewed (Unix seconds, the backend's clock).
    """

    def __init__(self, run_id: str, *, owner: str, expires_at: float, waited: float = 0.0) -> None:
        waited_text = f" after waiting {waited:.1f} s" if waited > 0 else ""
        super().__init__(
            f"run {run_id!r} is leased by {owner!r} until {_clock(expires_at)} "
            f"(unless renewed){waited_text}; nothing was written. Wait for it with "
            f"`run.lease(wait=SECONDS)`, or leave the run to its holder: a crashed holder's "
            f"lease ends by itself."
        )
        self.run_id = run_id
        self.owner = owner
        self.expires_at = expires_at
        self.waited = waited


class LeaseLost(LeaseError):
    """This worker's lease on the run is no longer current: it expired, or was taken over.

    Nothing was written. Another worker may own the run now; stop working on it, and
    acquire the lease again (and reload the state) before writing.

    Attributes:
        run_id: the run.
        token: the fencing token of the lease that was lost.
    """

    def __init__(self, run_id: str, *, token: int, detail: str = "") -> None:
        reason = f" ({detail})" if detail else ""
        super().__init__(
            f"run {run_id!r}: the lease with fencing token {token} is no longer current"
            f"{reason}; nothing was written. Another worker may own the run now: stop "
            f"working on it, and take the lease again (then reload) before writing."
        )
        self.run_id = run_id
        self.token = token


class BlockingCallError(StateVaultError, RuntimeError):
    """A blocking call was made on an event loop's thread; its `a`-twin must be awaited.

    Blocking there would stall every other task of the loop for the whole I/O.
    """

    def __init__(self, call: str, instead: str) -> None:
        super().__init__(
            f"{call} called inside a running event loop; use {instead} (it runs the I/O "
            f"off the loop), or call it from a thread that runs no event loop."
        )
        self.call = call
        self.instead = instead


def _clock(unix_seconds: float) -> str:
    """A Unix time as local `HH:MM:SS`, with the seconds left from now."""
    left = unix_seconds - time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(unix_seconds))
    return f"{stamp} (in {left:.1f} s)" if left >= 0 else f"{stamp} ({-left:.1f} s ago)"


class VaultClosedError(StateVaultError, RuntimeError):
    """The vault was closed; open it again to keep working."""


class InvalidRunIdError(StateVaultError, ValueError):
    """A run id must be a non-empty string of at most 256 characters."""


class StorageError(StateVaultError, OSError):
    """The storage underneath failed (an I/O error, a full disk, a lost connection).

    What was being written was not acknowledged; earlier commits are unaffected.
    """


class VaultBusyError(StorageError, TimeoutError):
    """Another process held the vault's write lock for longer than the timeout allows."""


class DurabilityError(StorageError):
    """A flush to stable storage failed. The handle refuses further writes.

    After a failed fsync the operating system may have dropped the unflushed data
    while reporting later flushes as successful, so retrying is not safe. Close the
    vault and open it again: recovery keeps every commit that was acknowledged.
    """


class DurabilityWarning(UserWarning):
    """The store is set up so that acknowledged commits may not survive a crash.

    Issued when a vault opens with `durability="fsync"` on a PostgreSQL server that runs
    with `fsync` or `full_page_writes` off. Commits still work; ask the server's
    administrator to turn the setting back on.
    """


class OpError(StateVaultError, ValueError):
    """A delta operation does not fit the state it is applied to.

    `statevault.ops.apply` raises it with the state exactly as it was before its first
    operation: a batch of operations is applied whole or not at all.

    Attributes:
        op: the operation's name (`"set"`, `"append"`, ...).
        path: where it applies, as text (`results.rows[17]`); `""` is the whole state.
        found: what stands where the operation failed (a short description), when known.
        index: the position of the failing operation in the batch, when applied as one.
    """

    def __init__(
        self,
        op: str,
        path: str,
        reason: str,
        *,
        found: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = path or "the state root"
        text = f"cannot {op} at {where}: {reason}"
        if hint:
            text = f"{text}. {hint}"
        super().__init__(text)
        self.op = op
        self.path = path
        self.found = found
        self.index: int | None = None

    def in_batch(self, index: int, total: int) -> OpError:
        """The same error, its message naming the failing operation's place in the batch."""
        if self.index is None:
            self.index = index
            self.args = (
                f"operation {index + 1} of {total} failed, so none was applied: {self.args[0]}",
                *self.args[1:],
            )
        return self


class TransactionError(StateVaultError, RuntimeError):
    """A tracked view of a transaction's state was used in a way that cannot be recorded.

    Raised for a view used after its transaction ended, and for a view whose object an
    earlier change in the same transaction replaced or moved. Nothing was changed.
    """


class SchemaDocumentError(StateVaultError, ValueError):
    """A JSON Schema document the schema tools cannot read.

    Raised for a document that is not a JSON object and for a `$ref` that points
    nowhere or loops. The message names the document and the reference.
    """


class SchemaError(StateVaultError, ValueError):
    """A schema is used in a way that cannot work: an unknown name, a bad version, or a
    type that differs from the one a vault stored under the same version.

    Attributes:
        schema: the schema's name, when known.
        version: the version concerned, when known.
    """

    def __init__(
        self, message: str, *, schema: str | None = None, version: int | None = None
    ) -> None:
        super().__init__(message)
        self.schema = schema
        self.version = version


class SchemaValidationError(SchemaError):
    """A state does not match its schema. On save nothing was written; on load the
    stored state is intact (`run.load(raw=True)` returns it as stored).

    Attributes:
        path: where in the state, as `$.items[0].qty` (`$` is the whole state).
        expected: what the schema wants there.
        found: what is there (a short description).
        run_id: the run, when a run was being saved or loaded.
        seq: the checkpoint, when one was being loaded.
        errors: how many problems the validator reported (the message names the first).
    """

    def __init__(
        self,
        *,
        schema: str,
        version: int,
        path: str,
        expected: str,
        found: str,
        errors: int = 1,
        run_id: str | None = None,
        seq: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = path
        self.expected = expected
        self.found = found
        self.errors = errors
        self.run_id = run_id
        self.seq = seq
        self.hint = hint
        super().__init__(self._text(schema, version), schema=schema, version=version)

    def _text(self, schema: str, version: int) -> str:
        where = []
        if self.run_id is not None:
            where.append(f"run {self.run_id!r}")
        if self.seq is not None:
            where.append(f"checkpoint {self.seq}")
        prefix = f"{' '.join(where)}: " if where else ""
        more = f" (and {self.errors - 1} more problems)" if self.errors > 1 else ""
        text = (
            f"{prefix}state does not match schema {schema!r} version {version} at "
            f"{self.path}: expected {self.expected}, found {self.found}{more}"
        )
        return f"{text}. {self.hint}" if self.hint else text

    def located(
        self, *, run_id: str | None, seq: int | None = None, hint: str | None = None
    ) -> SchemaValidationError:
        """The same problem, named with the run and checkpoint it was met in."""
        assert self.schema is not None
        assert self.version is not None
        return SchemaValidationError(
            schema=self.schema,
            version=self.version,
            path=self.path,
            expected=self.expected,
            found=self.found,
            errors=self.errors,
            run_id=run_id if run_id is not None else self.run_id,
            seq=seq if seq is not None else self.seq,
            hint=hint if hint is not None else self.hint,
        )


class MigrationError(SchemaError):
    """A stored state could not be brought to the version the code wants.

    Raised for a missing step in the chain of migrations, a migration function that
    raised, and a result that does not match the target version. The stored state is
    untouched and still loads as stored with `run.load(raw=True)`.

    Attributes:
        run_id: the run, when a run's state was being migrated.
        seq: the checkpoint whose state was being migrated.
        source: the version the state was stored with.
        target: the version it was being migrated to.
        step: the failing step as (from, to), when one step is at fault.
        function: the failing migration function's qualified name, when there is one.
    """

    def __init__(
        self,
        reason: str,
        *,
        schema: str,
        source: int | None,
        target: int,
        step: tuple[int, int] | None = None,
        function: str | None = None,
        run_id: str | None = None,
        seq: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.target = target
        self.step = step
        self.function = function
        self.run_id = run_id
        self.seq = seq
        self.hint = hint
        where = []
        if run_id is not None:
            where.append(f"run {run_id!r}")
        if seq is not None:
            where.append(f"checkpoint {seq}")
        prefix = f"{' '.join(where)}: " if where else ""
        stored = "unversioned" if source is None else f"version {source}"
        text = f"{prefix}cannot migrate {schema!r} from {stored} to version {target}"
        if step is not None:
            text += f": step {step[0]}->{step[1]}"
            if function:
                text += f" ({function})"
        text += f": {reason}"
        if hint:
            text += f". {hint}"
        super().__init__(text, schema=schema, version=target)

    def located(self, *, run_id: str, seq: int) -> MigrationError:
        """The same failure, named with the run and checkpoint being migrated."""
        assert self.schema is not None
        return MigrationError(
            self.reason,
            schema=self.schema,
            source=self.source,
            target=self.target,
            step=self.step,
            function=self.function,
            run_id=run_id,
            seq=seq,
            hint=self.hint,
        )


def describe(value: Any) -> str:
    """A short description of a value for error messages: its type and a clipped repr."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__qualname__} {text}"
