"""`verify`: read every byte of a vault and report what is damaged, without raising.

Checks, per run: each record's checksum and format, that it reads the same looked up
by its seq as listed, that seqs run 1..head with no gap, that each record chains to
its parent's hash, and that each journal entry's operations decode. Then every
checkpoint's state tree is walked from its root: each object present, passing its
digest, and its value decoding (shared objects are read once, and a damaged one is
reported for every checkpoint that uses it). Finally every other stored object is
read and re-hashed. Objects no checkpoint refers to (left by a save that crashed
before its record) are counted, not reported: they are harmless.

Each problem says what it costs (`Problem.consequence`): a run is trusted up to the
newest checkpoint whose whole history verifies (`RunDamage.verified_through`);
everything after it is what `statevault repair` would set aside.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from statevault import ops as ops_module
from statevault.backends.base import StoredCheckpoint
from statevault.codec.encoding import Codec
from statevault.codec.envelope import dictionary_reference, unpack
from statevault.engine.checkpoints import Engine
from statevault.engine.records import CheckpointRecord, open_record
from statevault.engine.schemas import damaged_documents
from statevault.errors import CorruptionError, StateVaultError
from statevault.tree.read import check_value, unpack_node

_OBJECT_BATCH = 32


@dataclass(frozen=True, slots=True)
class Problem:
    """One piece of damage: where it is, what is wrong, and what it costs.

    Attributes:
        kind: "record" (checksum or format), "chain" (history broken or reordered),
            "missing-checkpoint", "missing-object", "object" (digest or format) or
            "storage" (the backend could not read something at all) or "schema" (a stored
            schema document fails its hash).
        run_id, seq, digest: where, when known (digest in hex).
        message: a sentence for people.
        consequence: what the damage costs, and what `statevault repair` would do.
    """

    kind: str
    message: str
    run_id: str | None = None
    seq: int | None = None
    digest: str | None = None
    consequence: str = ""

    def __str__(self) -> str:
        where = []
        if self.run_id is not None:
            where.append(f"run {self.run_id!r}")
        if self.seq is not None:
            where.append(f"checkpoint {self.seq}")
        if self.digest is not None:
            where.append(f"object {self.digest[:12]}")
        text = f"{' '.join(where) or 'vault'}: {self.message}"
        return f"{text}. {self.consequence}" if self.consequence else text


@dataclass(frozen=True, slots=True)
class RunDamage:
    """How much of a damaged run can be trusted.

    Attributes:
        run_id: the run.
        head: its newest stored checkpoint.
        verified_through: the newest checkpoint whose whole history (every entry from
            1 up to it, with its state or operations) verifies; 0 when none does.
        repairable: False when the run could not even be read (a "storage" problem),
            so how far it verifies is unknown and repair leaves it alone.
    """

    run_id: str
    head: int
    verified_through: int
    repairable: bool = True

    @property
    def lost(self) -> range:
        """The seqs that cannot be trusted: those a repair sets aside."""
        return range(self.verified_through + 1, self.head + 1)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of `Vault.verify()`.

    Attributes:
        ok: True when no problem was found.
        problems: every problem found.
        runs, checkpoints, objects: how many of each were checked.
        bytes_read: stored bytes read and verified.
        unreferenced_objects: objects no checkpoint uses (reclaimable, not damage).
        damaged_runs: the runs with problems, and how far each verifies.
        damaged_objects: stored objects (hex digests) that fail their checks.
    """

    ok: bool
    problems: list[Problem] = field(default_factory=list)
    runs: int = 0
    checkpoints: int = 0
    objects: int = 0
    bytes_read: int = 0
    unreferenced_objects: int = 0
    damaged_runs: dict[str, RunDamage] = field(default_factory=dict)
    damaged_objects: list[str] = field(default_factory=list)


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
        # Objects missing or failing their checks: (problem kind, message), reported for
        # every checkpoint that uses them.
        self.damage: dict[bytes, tuple[str, str]] = {}
        self.heads: dict[str, int] = {}
        self.unreadable_runs: set[str] = set()
        self.objects_unreadable = False
        self.runs = self.checkpoints = self.objects = self.bytes_read = 0
        self.dictionaries = engine.dictionaries()

    def problem(self, kind: str, message: str, **where: object) -> None:
        self.problems.append(Problem(kind, message, **where))  # type: ignore[arg-type]

    def check_runs(self) -> None:
        try:
            run_ids = self.backend.list_runs("")
        except StateVaultError as exc:
            self.problem("storage", f"the list of runs cannot be read ({_detail(exc)})")
            return
        if run_ids != sorted(set(run_ids)):
            self.problem(
                "storage",
                "the list of runs repeats or misorders ids: the store's index is damaged",
            )
            run_ids = sorted(set(run_ids))
        for run_id in run_ids:
            try:
                self.check_run(run_id)
            except StateVaultError as exc:
                self.unreadable_runs.add(run_id)
                self.problem(
                    "storage", f"its records cannot be read ({_detail(exc)})", run_id=run_id
                )

    def check_run(self, run_id: str) -> None:
        self.runs += 1
        previous: tuple[int, bytes] | None = None
        try:
            stored = self.backend.read_checkpoints(run_id, newest_first=False)
        except CorruptionError as exc:
            if exc.seq is None:
                raise
            # The store itself found the damage and names the first record it reaches
            # (a backend with its own log: files layout 2). The history before it is
            # checked as usual, record by record, so repair knows how far it verifies.
            stored = self.readable_prefix(run_id, exc.seq)
            self.heads[run_id] = exc.seq
            self.problem("record", _detail(exc), run_id=run_id, seq=exc.seq)
            newest_first = stored[::-1]
        else:
            self.heads[run_id] = stored[-1].seq if stored else 0
            newest_first = self.backend.read_checkpoints(run_id)
        if (
            not stored
            or newest_first[::-1] != stored
            or (
                self.heads[run_id] == (stored[-1].seq if stored else 0)
                and self.backend.head(run_id) != self.heads[run_id]
            )
        ):
            # Listed, yet empty; or read one way, other records than read the other way:
            # the store's index is damaged (seen with SQLite index pages), so which
            # checkpoints the run has cannot be known.
            seqs = sorted({c.seq for c in stored} | {c.seq for c in newest_first})
            self.unreadable_runs.add(run_id)
            self.problem(
                "storage",
                f"its checkpoints read differently depending on how they are looked up "
                f"(seqs found: {seqs[:10]}{'...' if len(seqs) > 10 else ''}): the store's "
                f"index is damaged",
                run_id=run_id,
            )
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
            if self.backend.read_checkpoint(run_id, item.seq) != item.record:
                # Loads look a checkpoint up by its seq, listings scan the run: both must
                # find the same bytes, or an index (a SQLite index page) is damaged.
                self.problem(
                    "record",
                    "looked up by its seq it reads otherwise than in the run's listing "
                    "(a damaged index)",
                    run_id=run_id,
                    seq=item.seq,
                )
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
            if record.kind == "delta":
                self.check_delta(record)
            self.check_state(record)

    def readable_prefix(self, run_id: str, damaged: int) -> list[StoredCheckpoint]:
        """The records before the first damaged one, each read by its seq."""
        found = []
        for seq in range(1, damaged):
            try:
                record = self.backend.read_checkpoint(run_id, seq)
            except CorruptionError:
                break
            if record is None:
                break
            found.append(StoredCheckpoint(seq, record))
        return found

    def check_delta(self, record: CheckpointRecord) -> None:
        """A journal entry's operations must decode (its envelope is checked with the tree)."""
        if record.inline is None:
            self.problem(
                "record", "a journal entry holds no operations", run_id=record.run, seq=record.seq
            )
            return
        try:
            raw = unpack(record.inline, record.root, dictionaries=self.dictionaries).raw
            ops_module.ops_from_value(self.codec.decode(raw))
        except StateVaultError as exc:
            self.problem(
                "record",
                f"its journal operations do not decode ({_detail(exc)})",
                run_id=record.run,
                seq=record.seq,
            )

    def check_state(self, record: CheckpointRecord) -> None:
        user = (record.run, record.seq)
        self.roots.append((record.root, record.inline, user))
        if record.inline is not None:
            # A relocated journal entry needs its dictionary: a node, walked like a tree.
            try:
                reference = dictionary_reference(record.inline)
            except StateVaultError:
                reference = None  # the walk reports the damaged envelope
            if reference is not None:
                self.roots.append((reference, None, user))

    def walk_trees(self) -> None:
        """Check every object reachable from a checkpoint, once, naming all its users."""
        stack = list(reversed(self.roots))
        while stack:
            batch: list[tuple[bytes, bytes | None, tuple[str, int]]] = []
            while stack and len(batch) < _OBJECT_BATCH:
                batch.append(stack.pop())
            wanted = [key for key, inline, _ in batch if inline is None and key not in self.nodes]
            try:
                found = self.backend.get_objects(wanted) if wanted else {}
            except StateVaultError as exc:
                self.objects_unreadable = True
                self.problem("storage", f"objects cannot be read ({_detail(exc)})")
                return
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
            self.damage[key] = ("missing-object", "an object of its state is missing")
            return None
        if stored:  # an inline root was counted with its record
            self.objects += 1
            self.bytes_read += len(data)
        try:
            node = unpack_node(data, key, self.dictionaries)
            check_value(node, self.codec)
        except StateVaultError as exc:
            if stored:
                self.damaged.add(key)
            self.damage[key] = ("object", _detail(exc))
            return None
        return node.children

    def report_damaged(self) -> None:
        for key, (kind, message) in self.damage.items():
            for run_id, seq in self.users[key]:
                self.problem(kind, message, run_id=run_id, seq=seq, digest=key.hex())

    def check_objects(self) -> int:
        """Read and re-hash every object no checkpoint reaches; returns how many there are."""
        unreachable = 0
        if self.objects_unreadable:
            return 0
        try:
            keys = [k for k in self.backend.scan_objects() if k not in self.nodes]
            for batch in _batches(keys, _OBJECT_BATCH):
                for key, data in self.backend.get_objects(batch).items():
                    unreachable += 1
                    self.objects += 1
                    self.bytes_read += len(data)
                    try:
                        unpack_node(data, key)
                    except StateVaultError as exc:
                        self.damaged.add(key)
                        self.problem(
                            "object",
                            _detail(exc),
                            digest=key.hex(),
                            consequence=(
                                "No checkpoint uses it; `statevault repair` moves it to quarantine."
                            ),
                        )
        except StateVaultError as exc:
            self.problem("storage", f"objects cannot be listed or read ({_detail(exc)})")
        return unreachable

    def damaged_runs(self) -> dict[str, RunDamage]:
        """How far each run with a problem verifies: up to its first untrusted entry."""
        first_bad: dict[str, int] = {}
        for p in self.problems:
            if p.run_id is not None and p.seq is not None:
                first_bad[p.run_id] = min(first_bad.get(p.run_id, p.seq), p.seq)
        found = {
            run_id: RunDamage(run_id, self.heads.get(run_id, seq), seq - 1)
            for run_id, seq in first_bad.items()
        }
        for run_id in self.unreadable_runs:
            found[run_id] = RunDamage(run_id, self.heads.get(run_id, 0), 0, repairable=False)
        return found


def _consequence(problem: Problem, damage: dict[str, RunDamage]) -> str:
    if problem.consequence:
        return problem.consequence
    if problem.run_id is None:
        return "Repair cannot fix this; restore the vault from a backup."
    run = damage[problem.run_id]
    if not run.repairable:
        return (
            f"How much of run {problem.run_id!r} verifies is unknown; repair cannot fix "
            f"this: restore the vault from a backup (for SQLite, `REINDEX` may rebuild "
            f"a damaged index)."
        )
    untrusted = _seqs(run.lost)
    if run.verified_through == 0:
        return (
            f"No checkpoint of run {problem.run_id!r} verifies; `statevault repair` would set "
            f"its checkpoints {untrusted} aside."
        )
    return (
        f"Run {problem.run_id!r} verifies through checkpoint {run.verified_through}; "
        f"`statevault repair` would roll it back there and set checkpoints {untrusted} aside."
    )


def _seqs(seqs: range) -> str:
    if len(seqs) == 1:
        return str(seqs.start)
    return f"{seqs.start}-{seqs.stop - 1}"


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
    verifier.check_runs()
    verifier.walk_trees()
    verifier.report_damaged()
    unreferenced = verifier.check_objects()
    for key, message in damaged_documents(engine.backend):
        verifier.problems.append(
            Problem(
                "schema",
                f"schema document {key!r}: {message}",
                consequence=(
                    "The runs' states are unaffected, but the vault no longer explains this "
                    "schema version; saving a state with it will fail until the document is "
                    "restored from a backup."
                ),
            )
        )
    damage = verifier.damaged_runs()
    problems = sorted(
        (replace(p, consequence=_consequence(p, damage)) for p in verifier.problems),
        key=lambda p: (p.run_id or "", p.seq or 0, p.kind, p.digest or ""),
    )
    return VerifyReport(
        ok=not problems,
        problems=problems,
        runs=verifier.runs,
        checkpoints=verifier.checkpoints,
        objects=verifier.objects,
        bytes_read=verifier.bytes_read,
        unreferenced_objects=unreferenced,
        damaged_runs=damage,
        damaged_objects=sorted(key.hex() for key in verifier.damaged),
    )
