"""The write-ahead journal: delta entries in a run's history, replay, and folding.

A run's history is one sequence of entries, seq 1, 2, 3, ...; each is committed by
the same compare-and-swap and chained by the same hash:

- a **state** entry holds a whole state (the root of its tree);
- a **delta** entry holds operations (`statevault.ops`) on the state of the entry
  before it: a transaction or `run.apply` costs the size of its change;
- a **fold** entry is a state entry written by the checkpoint policy: it holds the
  state its deltas produced, so that loading replays few of them. Thanks to the
  tree, it writes only the chunks that changed since the last state entry.

Every entry is a point in history that `run.load(at=seq)` can return. Loading
starts from the nearest state or fold entry at or before the target and replays
the deltas after it.

Why one sequence rather than a separate journal beside the checkpoints: one
compare-and-swap orders transactions and whole saves against each other, one hash
chain covers all of history, and every backend stores deltas as it stores
checkpoints, atomically and durably, with nothing new to get right.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from statevault import ops as ops_module
from statevault.codec.envelope import Dictionaries, pack, unpack
from statevault.engine.checkpoints import Engine, Head, check_meta
from statevault.engine.records import CheckpointRecord, SchemaTag, open_record
from statevault.errors import CorruptionError
from statevault.tree.write import pool

KIND_STATE = "state"
KIND_DELTA = "delta"
KIND_FOLD = "fold"
STATE_KINDS = frozenset({KIND_STATE, KIND_FOLD})


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When the journal is folded into a state entry.

    A fold happens after a delta once any limit is reached since the last state
    entry: `records` deltas, `bytes` of stored deltas, or `seconds` of time. Loading
    the newest state replays at most about `records` deltas.

    Example:
        >>> statevault.open("state.db", policy=CheckpointPolicy(records=50))  # doctest: +SKIP
    """

    records: int = 100
    bytes: int = 1 << 20
    seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.records < 1 or self.bytes < 1 or self.seconds <= 0:
            raise ValueError(
                f"checkpoint policy limits must be positive; got records={self.records}, "
                f"bytes={self.bytes}, seconds={self.seconds}"
            )


@dataclass(frozen=True, slots=True)
class Since:
    """The journal since the last state entry: how many deltas, how many bytes, since when."""

    records: int = 0
    bytes: int = 0
    started_ns: int = 0

    def after(self, record: CheckpointRecord) -> Since:
        if record.kind in STATE_KINDS:
            return Since(0, 0, record.created_ns)
        return Since(self.records + 1, self.bytes + record.stored_bytes, self.started_ns)

    def due(self, policy: CheckpointPolicy) -> bool:
        if self.records == 0:
            return False
        age = (time.time_ns() - self.started_ns) / 1e9
        return self.records >= policy.records or self.bytes >= policy.bytes or age >= policy.seconds


def commit_delta(
    engine: Engine,
    run_id: str,
    operations: list[ops_module.Op],
    *,
    meta: dict[str, Any] | None,
    parent: Head,
    lease_token: int | None = None,
    schema: SchemaTag | None = None,
) -> tuple[CheckpointRecord, Head]:
    """Append one delta entry on top of `parent` (compare-and-swap, like every commit).

    `schema` is the (name, version) of the state the operations apply to, if any.
    """
    if parent.seq == 0:
        raise ValueError("a delta needs a state to apply to; save the first state with run.save")
    check_meta(meta)
    packed = pack(engine.codec.encode(ops_module.ops_to_value(operations)), engine.compression)
    return engine.append(
        run_id,
        parent,
        kind=KIND_DELTA,
        root=packed.digest,
        inline=packed.data,
        meta=meta,
        raw_bytes=packed.raw_size,
        stored_bytes=len(packed.data),
        lease_token=lease_token,
        schema=schema,
    )


def delta_ops(
    engine: Engine, record: CheckpointRecord, dictionaries: Dictionaries | None = None
) -> list[ops_module.Op]:
    """The operations of a delta entry, verified.

    Args:
        dictionaries: resolves the dictionary of a relocated entry (`Engine.relocate`);
            pass one cache to every entry of a replay, so each is read once.
    """
    raw = _delta_raw(engine, record, dictionaries)
    try:
        return ops_module.ops_from_value(engine.codec.decode(raw))
    except CorruptionError as exc:
        raise exc.located(run_id=record.run, seq=record.seq) from None


def _delta_raw(
    engine: Engine, record: CheckpointRecord, dictionaries: Dictionaries | None
) -> bytes | memoryview:
    """The encoded operations of a delta entry: frame, decompression and digest checked."""
    if record.inline is None:
        raise CorruptionError(
            "a delta entry holds no operations", run_id=record.run, seq=record.seq
        )
    try:
        return unpack(
            record.inline, record.root, dictionaries=dictionaries or engine.dictionaries()
        ).raw
    except CorruptionError as exc:
        raise exc.located(run_id=record.run, seq=record.seq) from None


def unpack_deltas(engine: Engine, deltas: list[CheckpointRecord]) -> list[bytes | memoryview]:
    """The encoded operations of each delta entry (oldest first), every envelope checked."""
    dictionaries = engine.dictionaries()
    return [_delta_raw(engine, delta, dictionaries) for delta in deltas]


def replay(
    engine: Engine,
    state: Any,
    deltas: list[CheckpointRecord],
    *,
    unpacked: list[bytes | memoryview] | None = None,
) -> Any:
    """`state` after the operations of `deltas` (oldest first), changed in place.

    The state must be the caller's own, thrown away if this raises: the operations are
    applied without an undo log. Every envelope is checked as `delta_ops` checks it
    (`unpacked`: their bytes from `unpack_deltas`, if the caller has them already); the
    operations are decoded in one batch, under one GC pause.

    Raises:
        CorruptionError: an entry fails its checks or its operations do not apply.
    """
    raws = unpack_deltas(engine, deltas) if unpacked is None else unpacked
    try:
        values: list[Any] | None = engine.codec.decode_many(raws)
    except Exception:  # decoded again one by one below, to name the damaged entry
        values = None
    for index, delta in enumerate(deltas):
        try:
            value = engine.codec.decode(raws[index]) if values is None else values[index]
            operations = ops_module.ops_from_value(value)
            state = ops_module.apply(state, operations, copy_values=False, atomic=False)
        except CorruptionError as exc:
            raise exc.located(run_id=delta.run, seq=delta.seq) from None
        except Exception as exc:
            raise CorruptionError(
                f"its operations do not apply to the state before it ({exc})",
                run_id=delta.run,
                seq=delta.seq,
            ) from exc
    return state


_UNPACK_AHEAD_FROM = 16
"""Deltas to replay from which `materialize` unpacks them on the pool while the state
entry loads. Both spend most of their time in zstd and BLAKE3, which release the GIL:
for the chat benchmark's 99 deltas after a fold, the load went from 4.70 to 4.49 ms
(files) and from 5.52 to 5.20 ms (SQLite), medians of 55 loads taking turns on a quiet
machine (no difference beyond the noise when the second core is busy). For a few
deltas the hand-off to the pool would cost about what the overlap saves."""


class Materialized(NamedTuple):
    """The state at an entry, and how it was made."""

    state: Any
    digests: frozenset[bytes]
    """The digests of the state entry's tree (what the vault holds for sure)."""
    since: Since
    """The journal since the state entry."""
    base: CheckpointRecord
    """The state entry the deltas were replayed on: its schema is the state's."""


def materialize(
    engine: Engine,
    run_id: str,
    target: CheckpointRecord,
    *,
    newer: list[CheckpointRecord],
    mmap: bool = False,
) -> Materialized:
    """The state at `target`: its nearest state entry, then the deltas after it.

    Args:
        newer: records before `target`, newest first, already read (may be empty);
            more are read one by one as needed.
        mmap: map arrays stored whole instead of copying them (`Engine.load_state`).
    """
    chain: list[CheckpointRecord] = []
    known = {r.seq: r for r in newer}
    record = target
    while record.kind not in STATE_KINDS:
        chain.append(record)
        previous = record.seq - 1
        found = known.get(previous)
        if found is None:
            stored = engine.record(run_id, previous)
            if stored is None:
                raise CorruptionError(
                    f"the entries before it are missing, so its delta has no state to apply to "
                    f"(entry {previous} is gone)",
                    run_id=run_id,
                    seq=record.seq,
                )
            found = stored[0]
        record = found
    chain.reverse()
    # A damaged delta is still reported after the state entry loaded: damage in the
    # entry comes first, as when each was read in turn.
    ahead = (
        pool().submit(unpack_deltas, engine, chain) if len(chain) >= _UNPACK_AHEAD_FROM else None
    )
    state, digests = engine.load_state(record, mmap=mmap)
    state = replay(engine, state, chain, unpacked=None if ahead is None else ahead.result())
    since = Since().after(record)
    for delta in chain:
        since = since.after(delta)
    return Materialized(state, digests, since, record)


def read_newest(
    engine: Engine, run_id: str, *, window: int, check_payloads: bool = True
) -> list[tuple[CheckpointRecord, bytes]]:
    """The newest `window` entries of a run as (record, sealed bytes), newest first.

    `check_payloads`: see `open_record`'s `check_payload`.
    """
    return [
        (
            open_record(item.record, run_id=run_id, seq=item.seq, check_payload=check_payloads)[0],
            item.record,
        )
        for item in engine.backend.read_checkpoints(run_id, limit=window)
    ]
