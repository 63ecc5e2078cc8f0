"""`open()` and `Vault`: the entry points of the public API."""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from statevault import __version__
from statevault.backends.base import (
    META_FORMAT,
    Backend,
    Capabilities,
    Durability,
    RecoveringBackend,
    RecoveryNote,
    check_run_id,
    initial_meta,
)
from statevault.backends.fsio import FileIO
from statevault.backends.memory import MemoryBackend
from statevault.backends.sqlite import SqliteBackend
from statevault.codec.compression import Compression
from statevault.codec.encoding import Codec, UnknownTypes
from statevault.codec.registry import GLOBAL_REGISTRY, TypeRegistry
from statevault.engine.aio import refuse_in_event_loop
from statevault.engine.bulk import (
    MigrationReport,
    RunOutcome,
    matching_runs,
    migrate_runs,
    undo_runs,
)
from statevault.engine.checkpoints import Engine
from statevault.engine.journal import CheckpointPolicy
from statevault.engine.leases import Lease
from statevault.engine.repair import QuarantinedItem, RepairReport, quarantined, repair
from statevault.engine.schemas import SchemaStore
from statevault.engine.upgrade import Progress, UpgradeReport, upgrade
from statevault.engine.verify import VerifyReport, verify
from statevault.engine.watch import DEFAULT_POLL, AsyncWatch, Watch
from statevault.errors import CorruptionError, NotAVaultError, SchemaError, UnsupportedFormatError
from statevault.run import Binding, Run
from statevault.schema.documents import SchemaDocument
from statevault.schema.registry import GLOBAL_SCHEMAS, MigrationFunction, SchemaRegistry
from statevault.schema.types import Schema, check_name

T = TypeVar("T", bound=type[Any])
F = TypeVar("F", bound=MigrationFunction)

FORMAT_VERSION = 3
"""The vault format this version writes and the newest it reads.

1: each checkpoint's state is one object. 2: states are trees of objects
(`statevault.tree`). 3: records are sealed apart from their inline envelope, so a
journal entry's operations can be re-encoded against the fold after it
(`statevault.engine.records`, `Engine.relocate`). A vault keeps the format it was
created with: a format-1 or format-2 vault is read and written in its own format, so
the statevault that made it can still read it; nothing is upgraded behind the user's
back."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

_DURABILITY: tuple[Durability, ...] = ("fsync", "process")


def _backend_for(
    url: str,
    *,
    durability: Durability,
    meta: dict[str, bytes],
    timeout: float,
    create: bool,
    fileio: FileIO | None,
) -> Backend:
    if url.startswith("memory://"):
        if not create:
            raise NotAVaultError(url, "a memory vault exists only in the process that made it")
        return MemoryBackend(initial_meta=meta, name=url[len("memory://") :])
    if url.startswith("sqlite://"):
        return SqliteBackend(
            url[len("sqlite://") :],
            durability=durability,
            initial_meta=meta,
            timeout=timeout,
            create=create,
            fileio=fileio,
        )
    if url.startswith("files://"):
        from statevault.backends.files import FilesBackend  # noqa: PLC0415 - loaded on use

        return FilesBackend(
            url[len("files://") :],
            durability=durability,
            initial_meta=meta,
            create=create,
            fileio=fileio,
        )
    if url.startswith(("postgresql://", "postgres://")):
        # Loaded on use: psycopg is an optional extra, and its import hints at the install.
        from statevault.backends.postgres import PostgresBackend  # noqa: PLC0415

        return PostgresBackend(
            url, durability=durability, initial_meta=meta, timeout=timeout, create=create
        )
    scheme = _SCHEME.match(url)
    if scheme is not None and not os.path.exists(url):
        raise ValueError(
            f"unknown vault URL scheme {scheme.group(1)!r} in {url!r}: use a path or "
            f"sqlite:///path (SQLite, the default), files:///dir (a directory of files), "
            f"postgresql://user@host/db (PostgreSQL) or memory://"
        )
    # A bare path: a directory that already is a files vault opens as one; anything else
    # is a SQLite file, the embedded default.
    if os.path.isdir(url):
        from statevault.backends.files import MARKER_NAME, FilesBackend  # noqa: PLC0415

        if os.path.exists(os.path.join(url, MARKER_NAME)):
            return FilesBackend(
                url, durability=durability, initial_meta=meta, create=create, fileio=fileio
            )
    return SqliteBackend(
        url,
        durability=durability,
        initial_meta=meta,
        timeout=timeout,
        create=create,
        fileio=fileio,
    )


def open(
    url: str | os.PathLike[str],
    *,
    durability: Durability = "fsync",
    compression: Literal["zstd", "lz4", "none"] = "zstd",
    level: int | None = None,
    unknown_types: UnknownTypes = "error",
    timeout: float = 30.0,
    create: bool = True,
    policy: CheckpointPolicy | None = None,
    fileio: FileIO | None = None,
    mmap_arrays: bool = False,
) -> Vault:
    """Open (or create) a vault.

    Args:
        url: a path or `sqlite:///path` (one SQLite file, the default),
            `files:///dir` (a directory of files), `postgresql://user@host/db?schema=s`
            (PostgreSQL; needs `pip install statevault[postgres]`) or `memory://` (this
            process only).
        durability: "fsync" (default): a save that returned survives power loss.
            "process": it survives a crash of the process, not of the machine.
        compression: "zstd" (default), "lz4" (faster, larger) or "none".
        level: the compression level (zstd: 3 by default).
        unknown_types: "error" (default): loading a record of an unregistered class
            raises `UnknownTypeError`. "keep": it loads as a `statevault.UnknownRecord`.
        timeout: seconds to wait for another process's write lock (SQLite), or for a
            connection to the server, lost ones retried (PostgreSQL).
        create: when False, a location without a vault raises `NotAVaultError` and
            nothing is created (for tools that only read).
        policy: when a run's journal is folded into a state entry (`CheckpointPolicy`:
            every 100 entries, 1 MiB or 300 s by default); each run may override it.
        fileio: the file operations of the files and SQLite backends (default: the real
            ones, flushing unless `durability="process"`). Crash and fault tests pass
            one that records or fails operations.
        mmap_arrays: store each NumPy array of 1 MiB or more whole and uncompressed, in
            one object, so that `run.load(mmap=True)` on the files backend maps it
            instead of copying it (docs/guide.md, "Memory-mapped arrays"). Such arrays
            are not compressed, and a changed one is rewritten whole.

    Raises:
        NotAVaultError: the path holds something else (nothing in it is changed).
        UnsupportedFormatError: a newer statevault wrote the vault.

    Example:
        >>> with statevault.open("state.db") as vault:       # doctest: +SKIP
        ...     vault.run("order-42").save({"step": 1})
    """
    refuse_in_event_loop("statevault.open()", "await statevault.open_async()")
    if durability not in _DURABILITY:
        raise ValueError(f"durability must be 'fsync' or 'process'; got {durability!r}")
    settings = Compression.parse(compression, level=level)
    codec = Codec(TypeRegistry(GLOBAL_REGISTRY), unknown_types=unknown_types)
    meta = initial_meta(
        FORMAT_VERSION,
        {"vault_id": uuid.uuid4().hex.encode(), "created_by": f"statevault {__version__}".encode()},
    )
    backend = _backend_for(
        os.fspath(url),
        durability=durability,
        meta=meta,
        timeout=timeout,
        create=create,
        fileio=fileio,
    )
    try:
        engine = Engine(backend, codec, settings)
        engine.whole_arrays = mmap_arrays
        return Vault(backend, engine, policy=policy)
    except BaseException:
        backend.close()
        raise


async def open_async(
    url: str | os.PathLike[str],
    *,
    durability: Durability = "fsync",
    compression: Literal["zstd", "lz4", "none"] = "zstd",
    level: int | None = None,
    unknown_types: UnknownTypes = "error",
    timeout: float = 30.0,
    create: bool = True,
    policy: CheckpointPolicy | None = None,
    mmap_arrays: bool = False,
) -> Vault:
    """`open`, awaited: the vault is opened off the event loop.

    Use the `a`-methods of the vault and its runs (`await run.asave(...)`); their
    blocking twins refuse to run on the event loop's thread.

    Example:
        >>> async with await statevault.open_async("state.db") as vault:  # doctest: +SKIP
        ...     run = vault.run("order-42")
        ...     await run.asave({"step": 1})
    """
    import asyncio  # noqa: PLC0415 - loaded already: a loop is running

    opening = functools.partial(
        open,  # this module's open(), not the builtin
        url,
        durability=durability,
        compression=compression,
        level=level,
        unknown_types=unknown_types,
        timeout=timeout,
        create=create,
        policy=policy,
        mmap_arrays=mmap_arrays,
    )
    return await asyncio.to_thread(opening)


class Vault:
    """A store of runs. Made by `statevault.open()`; close it, or use it as a context manager.

    Every blocking call has an awaitable twin named with an `a` (`aruns`, `aclose`,
    `awatch`; `run.asave`, `run.aload`, ...), and `async with` closes the vault.
    """

    def __init__(
        self, backend: Backend, engine: Engine, *, policy: CheckpointPolicy | None = None
    ) -> None:
        self._backend = backend
        self._engine = engine
        self._policy = policy or CheckpointPolicy()
        meta = backend.get_meta()
        raw = meta.get(META_FORMAT, b"")
        if not raw.isdigit():
            raise CorruptionError(
                f"{backend.location}: the vault's format version is unreadable ({raw[:20]!r})"
            )
        self.format_version = int(raw)
        if self.format_version > FORMAT_VERSION:
            raise UnsupportedFormatError(found=self.format_version, supported=FORMAT_VERSION)
        self.vault_id = meta.get("vault_id", b"").decode("ascii", "replace")
        engine.format_version = self.format_version
        self._schemas = SchemaRegistry(GLOBAL_SCHEMAS)
        self._schema_store = SchemaStore(backend)

    @property
    def location(self) -> str:
        """Where the vault lives (a path, or `memory://`)."""
        return self._backend.location

    def __repr__(self) -> str:
        return f"<Vault {self.location}>"

    @property
    def capabilities(self) -> Capabilities:
        """What the vault's backend can do (leases, native change notification, ...)."""
        return self._backend.capabilities

    def register(self, cls: type[Any], *, name: str | None = None) -> type[Any]:
        """Allow a class (Struct, dataclass, Pydantic model, Enum) in this vault's state.

        See `statevault.register`, which registers for every vault.
        """
        return self._engine.codec.registry.register(cls, name=name)

    # -- schemas -------------------------------------------------------------------------
    @overload
    def schema(self, name: str, cls: T, /, *, version: int) -> T: ...
    @overload
    def schema(self, name: str, cls: None = None, /, *, version: int) -> Callable[[T], T]: ...
    def schema(self, name: str, cls: T | None = None, /, *, version: int) -> T | Callable[[T], T]:
        """Register `cls` as version `version` of schema `name` in this vault.

        `cls` is a msgspec Struct, dataclass, Pydantic v2 model or TypedDict. Runs opened
        with `vault.run(id, schema=name)` save and load it (the newest registered
        version). Works as a decorator when `cls` is left out. `statevault.schema`
        registers for every vault.

        Raises:
            SchemaError: `cls` cannot be a schema's type, another type is registered
                under (name, version), or this vault stored a different shape under
                (name, version) (the message says to bump the version).

        Example:
            >>> vault.schema("order", OrderV3, version=3)          # doctest: +SKIP
        """
        if cls is None:

            def decorate(target: T) -> T:
                return self.schema(name, target, version=version)

            return decorate
        schema = self._schemas.add(name, cls, version)
        self._schema_store.check(schema)
        return cls

    def migration(self, name: str, source: int, target: int) -> Callable[[F], F]:
        """Register a function that migrates states of `name` from `source` to `target`.

        Steps go one version up (N -> N+1) or down (N+1 -> N, a way back). The function
        takes the state in plain form (dicts, lists, scalars; records as dicts, enums as
        their values) and returns the plain form of the next version; it may change its
        argument. `statevault.migration` registers for every vault.

        Example:
            >>> @vault.migration("order", 2, 3)                    # doctest: +SKIP
            ... def cents(state: dict) -> dict:
            ...     state["total_cents"] = round(state.pop("total") * 100)
            ...     return state
        """

        def decorate(function: F) -> F:
            self._schemas.add_migration(name, source, target, function)
            return function

        return decorate

    def schemas(self, name: str) -> dict[int, Schema]:
        """The versions of schema `name` registered for this vault (its own and global)."""
        return self._schemas.versions(check_name(name))

    def stored_schemas(self) -> list[SchemaDocument]:
        """The schema documents this vault stores, sorted by name and version.

        A document is stored the first time a state is saved with its (name, version).

        Raises:
            CorruptionError: a stored document fails its hash.
        """
        return self._schema_store.documents()

    def stored_schema(self, name: str, version: int | None = None) -> SchemaDocument:
        """One stored schema document: `version` of `name`, or its newest.

        Raises:
            SchemaError: the vault stores no such document.
        """
        found = [d for d in self.stored_schemas() if d.name == name]
        if version is not None:
            found = [d for d in found if d.version == version]
        if not found:
            stored = sorted({f"{d.name} v{d.version}" for d in self.stored_schemas()})
            which = f"{name!r}" if version is None else f"{name!r} version {version}"
            raise SchemaError(
                f"{self.location} stores no schema {which} (it stores: "
                f"{', '.join(stored) or 'none'}). A schema is stored when a state is first "
                f"saved with it.",
                schema=name,
                version=version,
            )
        return found[-1]

    def migrate(
        self,
        name: str,
        *,
        to: int | None = None,
        runs: str = "*",
        dry_run: bool = False,
        workers: int = 8,
        progress: Callable[[RunOutcome], None] | None = None,
    ) -> MigrationReport:
        """Migrate every run of schema `name` to version `to`, each as a new checkpoint.

        Each matching run's newest state is migrated in memory through the registered
        steps (up, or down through ways back), validated against version `to`'s type,
        and committed on top of the head it was read from. A run that fails (a missing
        step, a raising or invalid migration, a concurrent writer) is left as it was and
        reported; the others go on. Runs already at `to` cost one read, so running the
        same migration again after an interruption finishes it. Each new checkpoint's
        meta records `{"migration": {schema, from_version, to_version, from_seq}}`, and
        `undo_migration` restores the states from before it.

        Args:
            to: the target version; its type must be registered. Default: the newest.
            runs: a glob of run ids (`order-*`); default every run.
            dry_run: migrate and validate in memory only; write nothing.
            workers: threads migrating runs at once (their commits share flushes).
            progress: called with each run's `RunOutcome` as it finishes.

        Raises:
            SchemaError: no type is registered for `to`, or the vault stored another shape
                under (name, to).

        Example:
            >>> report = vault.migrate("order", to=3, dry_run=True)  # doctest: +SKIP
            >>> [o.reason for o in report.failed]                     # doctest: +SKIP
        """
        target = self._migration_target(check_name(name), to)
        run_ids = matching_runs(self.runs(), runs)
        return migrate_runs(
            self._engine,
            self._schema_store,
            self._schemas,
            target,
            run_ids,
            dry_run=dry_run,
            workers=workers,
            progress=progress,
        )

    def undo_migration(
        self,
        name: str,
        *,
        runs: str = "*",
        dry_run: bool = False,
        workers: int = 8,
        progress: Callable[[RunOutcome], None] | None = None,
    ) -> MigrationReport:
        """Restore, for each run whose newest checkpoint a migration of `name` wrote, the
        state from before that migration, as a new checkpoint with its old version.

        Runs whose newest checkpoint is not a migration are skipped (so an undo can be run
        again). Arguments as for `migrate`.
        """
        return undo_runs(
            self._engine,
            check_name(name),
            matching_runs(self.runs(), runs),
            dry_run=dry_run,
            workers=workers,
            progress=progress,
        )

    def _migration_target(self, name: str, to: int | None) -> Schema:
        if to is None:
            return self._schemas.current(name)
        target = self._schemas.get(name, to)
        if target is None:
            known = sorted(self._schemas.versions(name))
            raise SchemaError(
                f"no type is registered for schema {name!r} version {to} (registered "
                f"versions: {', '.join(map(str, known)) or 'none'}); migrated states are "
                f"validated against it, so register it first "
                f"(`vault.schema({name!r}, TypeV{to}, version={to})`)",
                schema=name,
                version=to,
            )
        return target

    def run(
        self,
        run_id: str,
        *,
        policy: CheckpointPolicy | None = None,
        schema: str | None = None,
    ) -> Run:
        """A handle on run `run_id` (a non-empty string of up to 256 characters).

        Args:
            policy: when this run's journal is folded into a state entry; defaults to
                the vault's.
            schema: the name of a registered schema: the handle saves instances of its
                newest version (validated) and loads them (migrated from older versions).

        Raises:
            SchemaError: no schema `schema` is registered, or its type differs from the
                one this vault stored under the same version.
        """
        binding = None
        if schema is not None:
            current = self._schemas.current(check_name(schema))
            self._schema_store.check(current)
            binding = Binding(current, self._schemas, self._schema_store)
        return Run(self._engine, run_id, policy=policy or self._policy, binding=binding)

    def runs(self, prefix: str = "") -> list[str]:
        """Ids of the runs that have checkpoints, sorted, optionally by prefix."""
        refuse_in_event_loop("vault.runs()", "await vault.aruns()")
        return self._backend.list_runs(prefix)

    def delete_run(self, run_id: str, *, lease: Lease | None = None) -> bool:
        """Delete a run and its history. Returns False if it had none.

        Handles that still know the deleted head get `ConflictError` on save, so a late
        writer cannot bring a deleted run back by accident.

        Args:
            lease: the run's lease, when it is held (`run.lease()`); without it a leased
                run is refused with `LeaseHeld`.
        """
        refuse_in_event_loop("vault.delete_run()", "await vault.adelete_run()")
        return self._backend.delete_run(
            run_id, lease_token=lease.token if lease is not None else None
        )

    def verify(self) -> VerifyReport:
        """Read and check every record and object; report damage instead of raising.

        Example:
            >>> report = vault.verify()                       # doctest: +SKIP
            >>> for problem in report.problems:               # doctest: +SKIP
            ...     print(problem)  # where, what, and what it costs
        """
        refuse_in_event_loop("vault.verify()", "await vault.averify()")
        return verify(self._engine)

    def watch(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        prefix: str = "",
        poll: float = DEFAULT_POLL,
        timeout: float | None = None,
    ) -> Watch:
        """Follow runs: iterate over their new checkpoints as they commit.

        Only checkpoints committed after this call are reported, oldest first within
        each run (runs begun later included). Backends that notify (PostgreSQL, memory)
        report a commit at once; the others are polled every `poll` seconds.

        Args:
            run_ids: the runs to follow; None follows every run starting with `prefix`.
            prefix: with `run_ids` None, follow the runs whose ids start with it.
            poll: seconds between looks (with notification: between safety looks).
            timeout: end the iteration after this many seconds without a new
                checkpoint; None: only `stop()`, `close()` or `break` end it.

        Example:
            >>> with vault.watch(prefix="order-", timeout=60) as feed:   # doctest: +SKIP
            ...     for checkpoint in feed:
            ...         print(checkpoint.run_id, checkpoint.seq, checkpoint.kind)
        """
        refuse_in_event_loop("vault.watch()", "vault.awatch() with `async for`")
        return Watch(
            self._engine, run_ids=_run_list(run_ids), prefix=prefix, poll=poll, timeout=timeout
        )

    def upgrade(self, *, dry_run: bool = False, progress: Progress | None = None) -> UpgradeReport:
        """Bring an older vault to the newest format (`FORMAT_VERSION`), on purpose.

        Opening never upgrades: a vault keeps its format until this is called, so the
        statevault that made it can still read it (an upgraded vault needs this release
        or a later one). Every checkpoint keeps its seq, state and record hash; new
        entries are written in the new format from then on, also by this handle. Other
        processes write the old format until they open the vault again, which is safe:
        every format mixes with the others. Safe to kill at any point (the vault is then
        of the old format or the new, whole), and to run again: an interrupted upgrade
        finishes, a finished one does nothing and says so (`report.current`).

        Args:
            dry_run: report what an upgrade would rewrite; write nothing.
            progress: called as it goes with (step name, units done, units in all).

        Raises:
            UnsupportedFormatError: another process upgraded the vault beyond this
                release meanwhile (a newer vault is refused already on open).

        Example:
            >>> report = vault.upgrade(dry_run=True)                    # doctest: +SKIP
            >>> report.source, report.target, [s.name for s in report.steps]  # doctest: +SKIP
            (2, 3, ['vault format 2 -> 3'])
        """
        refuse_in_event_loop("vault.upgrade()", "await vault.aupgrade()")
        report = upgrade(self._backend, target=FORMAT_VERSION, dry_run=dry_run, progress=progress)
        if not dry_run:
            self.format_version = self._engine.format_version = report.target
        return report

    def repair(self, run: str | None = None, *, dry_run: bool = False) -> RepairReport:
        """Roll damaged runs back to their newest fully verified checkpoint.

        Nothing is deleted: the records a roll-back removes, and every object that
        fails its checks, are moved to the vault's quarantine area (`quarantined()`).
        Safe to run again, also after a crash in the middle; on a vault that verifies
        it changes nothing. Stop the run's writers first: a commit made on top of a
        damaged checkpoint while the repair runs is set aside with it.

        Args:
            run: repair only this run (and the damaged objects its checkpoints use).
            dry_run: change nothing; report what a repair would do.

        Returns:
            What was found, what was rolled back (run by run, the seqs lost), what was
            quarantined, and what `verify` still finds afterwards.

        Example:
            >>> report = vault.repair(dry_run=True)            # doctest: +SKIP
            >>> [(r.run_id, r.lost) for r in report.rolled_back]  # doctest: +SKIP
            [('order-42', [17, 18])]
        """
        refuse_in_event_loop("vault.repair()", "await vault.arepair()")
        if run is not None:
            check_run_id(run)
        return repair(self._engine, run_id=run, dry_run=dry_run)

    def quarantined(self) -> list[QuarantinedItem]:
        """What repairs moved aside: damaged objects, and records removed from runs."""
        return quarantined(self._engine)

    def recovery_notes(self) -> list[RecoveryNote]:
        """Torn journal tails that recovery dropped: commits that never returned.

        A crash in the middle of a commit can leave part of its record on disk; it was
        never acknowledged, so reads skip it, and the run's next writer moves its bytes
        aside (`kept_as`) before writing there. Empty on backends whose own log handles
        this (SQLite, PostgreSQL).

        Example:
            >>> for note in vault.recovery_notes():  # doctest: +SKIP
            ...     print(note.run_id, note.seq, note.kept_as)
        """
        backend = self._backend
        return backend.recovery_notes() if isinstance(backend, RecoveringBackend) else []

    def close(self) -> None:
        """Release files, connections and locks. Further use raises `VaultClosedError`."""
        refuse_in_event_loop("vault.close()", "await vault.aclose()")
        self._backend.close()

    # -- the async API: the same calls, awaited ------------------------------------------
    async def aruns(self, prefix: str = "") -> list[str]:
        """`runs`, awaited."""
        return await self._engine.offload(lambda: self.runs(prefix))

    async def adelete_run(self, run_id: str, *, lease: Lease | None = None) -> bool:
        """`delete_run`, awaited."""
        return await self._engine.offload(lambda: self.delete_run(run_id, lease=lease))

    async def averify(self) -> VerifyReport:
        """`verify`, awaited."""
        return await self._engine.offload(self.verify, brief=False)

    async def amigrate(
        self,
        name: str,
        *,
        to: int | None = None,
        runs: str = "*",
        dry_run: bool = False,
        workers: int = 8,
        progress: Callable[[RunOutcome], None] | None = None,
    ) -> MigrationReport:
        """`migrate`, awaited (`progress` is called from a worker thread)."""
        return await self._engine.offload(
            lambda: self.migrate(
                name, to=to, runs=runs, dry_run=dry_run, workers=workers, progress=progress
            ),
            brief=False,
        )

    async def aundo_migration(
        self, name: str, *, runs: str = "*", dry_run: bool = False, workers: int = 8
    ) -> MigrationReport:
        """`undo_migration`, awaited."""
        return await self._engine.offload(
            lambda: self.undo_migration(name, runs=runs, dry_run=dry_run, workers=workers),
            brief=False,
        )

    async def aupgrade(
        self, *, dry_run: bool = False, progress: Progress | None = None
    ) -> UpgradeReport:
        """`upgrade`, awaited (`progress` is called from a worker thread)."""
        return await self._engine.offload(
            lambda: self.upgrade(dry_run=dry_run, progress=progress), brief=False
        )

    async def arepair(self, run: str | None = None, *, dry_run: bool = False) -> RepairReport:
        """`repair`, awaited."""
        return await self._engine.offload(lambda: self.repair(run, dry_run=dry_run), brief=False)

    def awatch(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        prefix: str = "",
        poll: float = DEFAULT_POLL,
        timeout: float | None = None,
    ) -> AsyncWatch:
        """`watch` for `async for` (a plain call: it reads nothing until iterated).

        Example:
            >>> async for checkpoint in vault.awatch(["order-42"], timeout=60):  # doctest: +SKIP
            ...     print(checkpoint.seq)
        """
        return AsyncWatch(
            self._engine, run_ids=_run_list(run_ids), prefix=prefix, poll=poll, timeout=timeout
        )

    async def aclose(self) -> None:
        """`close`, awaited."""
        # On a thread: closing waits for calls still running on the vault's threads.
        await self._engine.offload(self.close, brief=False)

    async def __aenter__(self) -> Vault:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Vault:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _run_list(run_ids: Iterable[str] | None) -> list[str] | None:
    if isinstance(run_ids, str):
        return [run_ids]  # one id, not its characters
    return None if run_ids is None else list(run_ids)
