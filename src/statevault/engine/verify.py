"""`verify`: read every byte of a vault and report what is damaged, without raising.

Checks, per run: each record's checksum and format, that seqs run 1..head with no
gap, that each record chains to its parent's hash, and that its state object is
present, passes its digest and decodes. Then every stored object is read once and
checked against its digest. Objects no checkpoint refers to (left by a save that
crashed before its record) are counted, not reported: they are harmless.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from statevault.codec.encoding import Codec
from statevault.codec.envelope import unpack
from statevault.engine.checkpoints import Engine
from statevault.engine.records import CheckpointRecord, open_record
from statevault.errors import StateVaultError

_OBJECT_BATCH = 32


@dataclass(frozen=True, slots=True)
class Problem:
    """One piece of damage: where it is and what is wrong.

    Attributes:
        kind: "record" (checksum or format), "chain" (history broken or reordered),
            "missing-checkpoint", "missing-object", "object" (digest or format) or
            "state" (the state does not decode).
        run_id, seq, digest: where, when known (digest in hex).
        message: a sentence for people.
    """

    kind: str
    message: str
    run_id: str | None = None
    seq: int | None = None
    digest: str | None = None

    def __str__(self) -> str:
        where = []
        if self.run_id is not None:
            where.append(f"run {self.run_id!r}")
        if self.seq is not None:
            where.append(f"checkpoint {self.seq}")
        if self.digest is not None:
            where.append(f"object {self.digest[:12]}")
        return f"{' '.join(where) or 'vault'}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of `Vault.verify()`.

    Attributes:
        ok: True when no problem was found.
        problems: every problem found.
        runs, checkpoints, objects: how many of each were checked.
        bytes_read: stored bytes read and verified.
        unreferenced_objects: objects no checkpoint uses (reclaimable, not damage).
    """

    ok: bool
    problems: list[Problem] = field(default_factory=list)
    runs: int = 0
    checkpoints: int = 0
    objects: int = 0
    bytes_read: int = 0
    unreferenced_objects: int = 0


class _Verifier:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.backend = engine.backend
        # Types this process never registered must not count as damage.
        self.codec = Codec(engine.codec.registry, unknown_types="keep")
        self.problems: list[Problem] = []
        self.users: dict[bytes, list[tuple[str, int]]] = defaultdict(list)
        self.runs = self.checkpoints = self.objects = self.bytes_read = 0

    def problem(self, kind: str, message: str, **where: object) -> None:
        self.problems.append(Problem(kind, message, **where))  # type: ignore[arg-type]

    def check_run(self, run_id: str) -> None:
        self.runs += 1
        previous: tuple[int, bytes] | None = None
        stored = self.backend.read_checkpoints(run_id, newest_first=False)
        expected_seq = 1
        for item in stored:
            self.checkpoints += 1
            self.bytes_read += len(item.record)
            if item.seq != expected_seq:
                self.problem(
                    "missing-checkpoint",
                    f"checkpoints {expected_seq}..{item.seq - 1} are missing",
                    run_id=run_id,
                    seq=expected_seq,
                )
            expected_seq = item.seq + 1
            try:
                record, record_hash = open_record(item.record, run_id=run_id, seq=item.seq)
            except StateVaultError as exc:
                self.problem("record", _detail(exc), run_id=run_id, seq=item.seq)
                previous = None
                continue
            if previous is not None and (record.parent, record.parent_hash) != previous:
                self.problem(
                    "chain",
                    f"does not chain to checkpoint {previous[0]}: history was reordered, "
                    f"replaced or tampered with",
                    run_id=run_id,
                    seq=item.seq,
                )
            elif previous is None and item.seq == 1 and (record.parent or record.parent_hash):
                self.problem("chain", "the first checkpoint names a parent", run_id=run_id, seq=1)
            previous = (record.seq, record_hash)
            self.check_state(record)

    def check_state(self, record: CheckpointRecord) -> None:
        if record.inline is None:
            self.users[record.root].append((record.run, record.seq))
            return
        try:
            self.codec.decode(unpack(record.inline, record.root).raw)
        except StateVaultError as exc:
            self.problem(
                "state", _detail(exc), run_id=record.run, seq=record.seq, digest=record.root.hex()
            )

    def check_objects(self) -> int:
        referenced = set(self.users)
        seen: set[bytes] = set()
        for batch in _batches(self.backend.scan_objects(), _OBJECT_BATCH):
            for key, data in self.backend.get_objects(batch).items():
                seen.add(key)
                self.objects += 1
                self.bytes_read += len(data)
                try:
                    unpacked = unpack(data, key)
                    if key in referenced:
                        self.codec.decode(unpacked.raw)
                except StateVaultError as exc:
                    users: list[tuple[str | None, int | None]] = list(self.users.get(key, []))
                    for run_id, seq in users or [(None, None)]:
                        self.problem(
                            "object", _detail(exc), run_id=run_id, seq=seq, digest=key.hex()
                        )
        for key in referenced - seen:
            for run_id, seq in self.users[key]:
                self.problem(
                    "missing-object",
                    "the checkpoint's state object is missing",
                    run_id=run_id,
                    seq=seq,
                    digest=key.hex(),
                )
        return len(seen - referenced)


def _detail(exc: StateVaultError) -> str:
    return getattr(exc, "detail", None) or str(exc)


def _batches(items: Iterable[bytes], size: int) -> Iterable[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def verify(engine: Engine) -> VerifyReport:
    """Check every record and object the vault holds."""
    verifier = _Verifier(engine)
    for run_id in engine.backend.list_runs(""):
        verifier.check_run(run_id)
    unreferenced = verifier.check_objects()
    problems = sorted(
        verifier.problems, key=lambda p: (p.run_id or "", p.seq or 0, p.kind, p.digest or "")
    )
    return VerifyReport(
        ok=not problems,
        problems=problems,
        runs=verifier.runs,
        checkpoints=verifier.checkpoints,
        objects=verifier.objects,
        bytes_read=verifier.bytes_read,
        unreferenced_objects=unreferenced,
    )
