"""`verify`: read every byte of a vault and report what is damaged, without raising.

Checks, per run: each record's checksum and format, that seqs run 1..head with no
gap, that each record chains to its parent's hash. Then every checkpoint's state
tree is walked from its root: each object present, passing its digest, and its
value decoding (shared objects are read once, and a damaged one is reported for
every checkpoint that uses it). Finally every other stored object is read and
checked. Objects no checkpoint refers to (left by a save that crashed before its
record) are counted, not reported: they are harmless.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from statevault.codec.encoding import Codec
from statevault.engine.checkpoints import Engine
from statevault.engine.records import CheckpointRecord, open_record
from statevault.errors import StateVaultError
from statevault.tree.read import check_value, unpack_node

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
        self.roots: list[tuple[bytes, bytes | None, tuple[str, int]]] = []
        self.nodes: dict[bytes, list[bytes] | None] = {}
        self.damaged: set[bytes] = set()
        self.damage: dict[bytes, str] = {}
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
            self.roots.append((record.root, None, (record.run, record.seq)))
        else:
            self.roots.append((record.root, record.inline, (record.run, record.seq)))

    def walk_trees(self) -> None:
        """Check every object reachable from a checkpoint, once, naming all its users."""
        stack = list(reversed(self.roots))
        while stack:
            batch: list[tuple[bytes, bytes | None, tuple[str, int]]] = []
            while stack and len(batch) < _OBJECT_BATCH:
                batch.append(stack.pop())
            wanted = [key for key, inline, _ in batch if inline is None and key not in self.nodes]
            found = self.backend.get_objects(wanted) if wanted else {}
            for key, inline, user in batch:
                self.users[key].append(user)
                if key not in self.nodes:
                    data = inline if inline is not None else found.get(key)
                    self.nodes[key] = self.check_object(key, data, user, stored=inline is None)
                for child in self.nodes[key] or ():
                    stack.append((child, None, user))

    def check_object(
        self, key: bytes, data: bytes | None, user: tuple[str, int], *, stored: bool
    ) -> list[bytes] | None:
        """Verify one object; its children, or None when it is missing or damaged."""
        if data is None:
            self.problem(
                "missing-object",
                "an object of its state is missing",
                run_id=user[0],
                seq=user[1],
                digest=key.hex(),
            )
            return None
        if stored:  # an inline root was counted with its record
            self.objects += 1
            self.bytes_read += len(data)
        try:
            node = unpack_node(data, key)
            check_value(node, self.codec)
        except StateVaultError as exc:
            self.damaged.add(key)
            self.damage[key] = _detail(exc)
            return None
        return node.children

    def report_damaged(self) -> None:
        for key in self.damaged:
            for run_id, seq in self.users[key]:
                self.problem("object", self.damage[key], run_id=run_id, seq=seq, digest=key.hex())

    def check_objects(self) -> int:
        """Read every object no checkpoint reaches; returns how many there are."""
        unreachable = 0
        for batch in _batches(
            (k for k in self.backend.scan_objects() if k not in self.nodes), _OBJECT_BATCH
        ):
            for key, data in self.backend.get_objects(batch).items():
                unreachable += 1
                self.objects += 1
                self.bytes_read += len(data)
                try:
                    unpack_node(data, key)
                except StateVaultError as exc:
                    self.problem("object", _detail(exc), digest=key.hex())
        return unreachable


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
    verifier.walk_trees()
    verifier.report_damaged()
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
