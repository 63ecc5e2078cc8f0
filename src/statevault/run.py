"""`Run`: one workflow instance's history of checkpoints."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

from statevault import paths
from statevault.backends.base import check_run_id
from statevault.engine.checkpoints import NO_HEAD, Checkpoint, Engine, Head
from statevault.engine.records import open_record
from statevault.errors import CheckpointNotFound, ConflictError, RunNotFound

if TYPE_CHECKING:
    from statevault.engine.records import CheckpointRecord
    from statevault.tree import WrittenTree


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


MISSING: Final = _Missing()

_FORCE_RETRIES = 20


class Run:
    """A handle on one run. Get one with `vault.run("order-42")`.

    A handle remembers the head it last loaded or saved (or saw when it was made).
    `save` commits only on top of that head, so a writer never overwrites a
    checkpoint it has not seen: it gets `ConflictError` instead.

    Example:
        >>> run = vault.run("order-42")            # doctest: +SKIP
        >>> run.save({"step": 1})                  # doctest: +SKIP
        >>> run.load()                             # doctest: +SKIP
        {'step': 1}
    """

    def __init__(self, engine: Engine, run_id: str) -> None:
        self._engine = engine
        self._id = check_run_id(run_id)
        self._lock = threading.Lock()
        self._known, _ = engine.head(run_id)
        # Digests of the newest tree this handle saved or loaded: the vault holds them,
        # so the next save neither compresses nor writes them again.
        self._known_objects: frozenset[bytes] = frozenset()

    @property
    def id(self) -> str:
        return self._id

    def __repr__(self) -> str:
        return f"<Run {self._id!r} at checkpoint {self._known.seq}>"

    # -- writing -----------------------------------------------------------------------
    def save(
        self, state: Any, *, meta: dict[str, Any] | None = None, force: bool = False
    ) -> Checkpoint:
        """Commit `state` as the run's next checkpoint, atomically and durably.

        Args:
            state: the whole state (dicts, lists, scalars, bytes, datetimes, registered
                records, NumPy arrays, ...).
            meta: a small dict stored beside the checkpoint (shown by `statevault log`).
            force: commit on top of whatever the newest checkpoint is, even one this
                handle has not seen.

        Returns:
            The new checkpoint.

        Raises:
            SerializationError: the state holds a value that cannot be stored (nothing
                was written; the message names its path).
            ConflictError: another writer moved the head since this handle last saw it
                (nothing was written).
        """
        tree = self._engine.encode_state(state, known=self._known_objects)
        with self._lock:
            if not force:
                record, head = self._engine.commit(self._id, tree, meta=meta, parent=self._known)
            else:
                record, head = self._commit_forced(tree, meta)
            self._known = head
            self._known_objects = frozenset(tree.digests)
        return self._engine.checkpoint(record, head.record_hash)

    def _commit_forced(
        self, tree: WrittenTree, meta: dict[str, Any] | None
    ) -> tuple[CheckpointRecord, Head]:
        for _ in range(_FORCE_RETRIES):
            current, _ = self._engine.head(self._id)
            try:
                return self._engine.commit(self._id, tree, meta=meta, parent=current)
            except ConflictError:
                continue
        raise ConflictError(
            self._id, expected=current.seq, actual=self._engine.head(self._id)[0].seq
        )

    # -- reading -----------------------------------------------------------------------
    def load(self, *, at: int | None = None, default: Any = MISSING) -> Any:
        """The newest committed state, or that of checkpoint `at`.

        Loading the newest state also makes it the head this handle saves on top of.

        Raises:
            RunNotFound: the run has no checkpoint and no `default` was given.
            CheckpointNotFound: there is no checkpoint `at`.
            CorruptionError: stored bytes fail their checks (never returned as data).
            UnknownTypeError: the state holds a record of an unregistered class.
        """
        if at is None:
            head, record = self._engine.head(self._id)
            if record is None:
                if default is not MISSING:
                    with self._lock:
                        self._known = NO_HEAD
                    return default
                raise RunNotFound(self._id)
            state, digests = self._engine.load_state(record)
            with self._lock:
                self._known = head
                self._known_objects = digests
            return state
        return self._engine.load_state(self._record_at(at)[0])[0]

    def get(self, path: str, *, at: int | None = None, default: Any = MISSING) -> Any:
        """The value at `path` (`"results.rows.17"`) in the newest state or checkpoint `at`.

        Raises:
            KeyError: the path does not exist (unless `default` is given).
        """
        state = self.load(at=at)
        try:
            return paths.lookup(state, path)
        except KeyError:
            if default is not MISSING:
                return default
            raise

    def _record_at(self, at: int) -> tuple[CheckpointRecord, bytes]:
        if isinstance(at, bool) or not isinstance(at, int) or at < 1:
            raise ValueError(f"at must be a checkpoint seq (an int >= 1); got {at!r}")
        found = self._engine.record(self._id, at)
        if found is None:
            head, _ = self._engine.head(self._id)
            if head.seq == 0:
                raise RunNotFound(self._id)
            raise CheckpointNotFound(self._id, at, head.seq)
        return found

    def checkpoints(self, *, limit: int | None = None) -> list[Checkpoint]:
        """The run's checkpoints, newest first (one read, whatever their number)."""
        stored = self._engine.backend.read_checkpoints(self._id, limit=limit)
        return [
            self._engine.checkpoint(*open_record(item.record, run_id=self._id, seq=item.seq))
            for item in stored
        ]

    def checkpoint_at(self, seq: int) -> Checkpoint:
        """The checkpoint `seq` (its record, not its state)."""
        return self._engine.checkpoint(*self._record_at(seq))

    @property
    def head(self) -> Checkpoint | None:
        """The newest checkpoint in the vault now (not necessarily the one this handle saw)."""
        head, record = self._engine.head(self._id)
        if record is None:
            return None
        return self._engine.checkpoint(record, head.record_hash)

    @property
    def known_seq(self) -> int:
        """The head seq this handle will save on top of (0: none)."""
        return self._known.seq
