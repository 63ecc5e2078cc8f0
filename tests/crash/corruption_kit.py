"""Real bytes damaged in real vault files, and the one outcome allowed for each.

A small vault is built once per backend (several runs, whole states small and large,
journal entries and folds) and every state it holds is recorded. Then each stored
artifact is damaged in place, one case at a time: a bit flipped, the file cut short,
a 4 KiB page zeroed, garbage appended, or the file replaced by its previous version.
After each case the vault is opened afresh and every checkpoint of every run is
loaded (`read_all`), and then restored.

Allowed outcomes (`check_case`):
- every load returns exactly the recorded state (the damage hit bytes nothing reads,
  such as free space in a SQLite page);
- or a `CorruptionError` is raised, naming the run and checkpoint (and the object)
  when the damage is in one, and `verify` reports a problem;
- for "previous version" cases only: every run equals a prefix of its history (an
  older copy of the data is valid data; nothing in it can tell it is old);
- for damage to the newest record of a run in a log segment (files layout 2) only:
  that record alone is missing and `recovery_notes()` reports it. Such damage looks
  exactly like a commit that never returned, which is what recovery must drop.
Never a different state, never another exception, never a hang (pytest-timeout).
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import statevault
from statevault import ops
from statevault.backends.seglog import FRAME_HEAD, scan_segment

PAGE = 4096


@dataclass(frozen=True)
class Artifact:
    """A stored thing to damage: a whole file, or a byte range inside one.

    Attributes:
        kind: "object", "record", "run-id", "marker", "sqlite-page", "segment" (a log
            segment file of files layout 2) or "frame" (one record's frame in one).
        path: the file.
        start, stop: the byte range that holds it (the whole file for files).
        run_id, seq, digest: what it belongs to, when that is one thing.
    """

    kind: str
    path: Path
    start: int
    stop: int
    run_id: str | None = None
    seq: int | None = None
    digest: str | None = None
    whole_file: bool = True


Expected = dict[str, list[Any]]
"""Each run's state at each seq (index 0 is seq 1)."""


def build_vault(url: str, *, midway: Callable[[], None] | None = None) -> Expected:
    """Build the vault; `midway` runs (vault closed) before the last run is written."""
    rnd = random.Random(3)
    policy = statevault.CheckpointPolicy(records=3)
    with statevault.open(url, policy=policy) as vault:
        big = vault.run("big")
        big.save({"step": 1, "blob": rnd.randbytes(9000)})
        big.save({"step": 2, "items": [f"item {i} " * 5 for i in range(300)]})
        journal = vault.run("journal/1")
        journal.save({"n": 0, "log": []})
        for i in range(5):  # deltas, and a fold after the third
            journal.apply([ops.increment("n"), ops.append("log", i)])
    if midway is not None:
        midway()
    with statevault.open(url, policy=policy) as vault:
        small = vault.run("small 🚀")
        for i in range(3):
            small.save({"i": i})
        return {
            run_id: [
                vault.run(run_id).load(at=c.seq) for c in reversed(vault.run(run_id).checkpoints())
            ]
            for run_id in vault.runs()
        }


def files_artifacts(root: Path) -> list[Artifact]:
    found = [Artifact("marker", root / "STATEVAULT", 0, (root / "STATEVAULT").stat().st_size)]
    for fan in sorted((root / "objects").iterdir()):
        for item in sorted(fan.iterdir()):
            found.append(Artifact("object", item, 0, item.stat().st_size, digest=item.name))
    for run_dir in sorted((root / "runs").iterdir()):
        run_id = (run_dir / "id").read_text("utf-8")
        found.append(Artifact("run-id", run_dir / "id", 0, len(run_id.encode()), run_id=run_id))
        if (run_dir / "log").is_dir():
            found += segment_artifacts(run_dir / "log", run_id)
            continue
        for record in sorted((run_dir / "ckpt").iterdir()):
            found.append(
                Artifact(
                    "record", record, 0, record.stat().st_size, run_id=run_id, seq=int(record.name)
                )
            )
    return found


def segment_artifacts(log_dir: Path, run_id: str) -> list[Artifact]:
    """Each segment file of a run (layout 2), and each record's frame inside it."""
    found = []
    for path in sorted(log_dir.iterdir()):
        data = path.read_bytes()
        found.append(Artifact("segment", path, 0, len(data), run_id=run_id))
        for seq, offset, length in scan_segment(data).frames:
            start = offset - FRAME_HEAD
            found.append(
                Artifact(
                    "frame", path, start, offset + length, run_id=run_id, seq=seq, whole_file=False
                )
            )
    return found


def sqlite_artifacts(path: Path) -> list[Artifact]:
    """Every page of the file, and the rows' bytes found where they lie in it."""
    data = path.read_bytes()
    found = [
        Artifact("sqlite-page", path, start, min(start + PAGE, len(data)), whole_file=False)
        for start in range(0, len(data), PAGE)
    ]
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT run_id, seq, record FROM statevault_checkpoints").fetchall()
        objects = conn.execute("SELECT digest, data FROM statevault_objects").fetchall()
    finally:
        conn.close()
    for run_id, seq, record in rows:
        at = data.find(bytes(record))
        if at >= 0:
            found.append(
                Artifact(
                    "record", path, at, at + len(record), run_id=run_id, seq=seq, whole_file=False
                )
            )
    for digest, blob in objects:
        # An object larger than a page is spread over overflow pages: its first bytes
        # lie together in the row's own page.
        for size in (1024, 256, 64):
            head = bytes(blob)[:size]
            at = data.find(head)
            if at >= 0:
                break
        if at >= 0:
            found.append(
                Artifact(
                    "object", path, at, at + len(blob), digest=bytes(digest).hex(), whole_file=False
                )
            )
    return found


def build_wide_vault(url: str) -> Expected:
    """Sixty runs of one to five saves, with long ids: the checkpoint index then spans
    several leaf pages under an interior one, so a damaged page header can hide cells
    in the middle of it, not only at its end."""
    with statevault.open(url) as vault:
        for r in range(60):
            run = vault.run(f"run-{r:03d}-" + "x" * 40)
            for i in range(1 + r % 5):
                run.save({"r": r, "i": i})
        return {
            run_id: [
                vault.run(run_id).load(at=c.seq) for c in reversed(vault.run(run_id).checkpoints())
            ]
            for run_id in vault.runs()
        }


_BTREE_HEADER = {2: 12, 5: 12, 10: 8, 13: 8}
"""B-tree page kind (its first byte) -> length of its page header."""


def btree_header_cases(path: Path) -> Iterator[Case]:
    """Every bit of every b-tree page header and cell pointer array of a SQLite file:
    the bytes that say where a page's cells are and how many there are."""
    data = path.read_bytes()
    page = Artifact("sqlite-page", path, 0, len(data), whole_file=False)
    for start in range(0, len(data), PAGE):
        header = start + (100 if start == 0 else 0)  # page 1 starts with the file header
        size = _BTREE_HEADER.get(data[header])
        if size is None:
            continue  # an overflow or free page
        cells = int.from_bytes(data[header + 3 : header + 5], "big")
        for pos in range(header, header + size + 2 * cells):
            for bit in range(8):
                damaged = bytearray(data)
                damaged[pos] ^= 1 << bit
                yield Case(page, f"bit {bit} of byte {pos} (b-tree header) flipped", bytes(damaged))


@dataclass(frozen=True)
class Case:
    """One damage: a name for messages, and the bytes the file holds during it."""

    artifact: Artifact
    name: str
    damaged: bytes
    previous_version: bool = False


def cases(
    artifact: Artifact, original: bytes, *, samples: int, rnd: random.Random
) -> Iterator[Case]:
    """The damage done to one artifact: flips, cuts, a zeroed page, garbage, sampled."""
    span = range(artifact.start, artifact.stop)
    flips = list(span) if len(span) <= samples else sorted(rnd.sample(span, samples))
    for pos in flips:
        damaged = bytearray(original)
        damaged[pos] ^= 1 << (pos % 8)
        yield Case(artifact, f"bit {pos % 8} of byte {pos} flipped", bytes(damaged))
    if artifact.whole_file or artifact.kind == "sqlite-page":
        size = len(original)
        cuts = {0, 1, size // 2, size - 1, *range(0, size, 512)}
        if artifact.kind == "sqlite-page":
            cuts = {artifact.start, artifact.start + 100, artifact.stop - 1}
        for cut in sorted(c for c in cuts if 0 <= c < size):
            if len(cuts) > samples and cut % 512 == 0 and rnd.random() > samples / len(cuts):
                continue
            yield Case(artifact, f"cut at {cut} of {size}", original[:cut])
        yield Case(artifact, "garbage appended", original + rnd.randbytes(PAGE))
    page_start = artifact.start - artifact.start % PAGE
    zeroed = bytearray(original)
    end = min(page_start + PAGE, len(original))
    zeroed[page_start:end] = bytes(end - page_start)
    if zeroed != bytearray(original):
        yield Case(artifact, f"4 KiB page at {page_start} zeroed", bytes(zeroed))


def read_all(url: str) -> tuple[list[str], dict[str, list[Any]]]:
    """Open the vault afresh and load every checkpoint of every run."""
    with statevault.open(url, create=False) as vault:
        run_ids = vault.runs()
        states = {}
        for run_id in run_ids:
            run = vault.run(run_id)
            seqs = [c.seq for c in reversed(run.checkpoints())]
            states[run_id] = [run.load(at=seq) for seq in seqs]
            if seqs:
                assert run.load() == states[run_id][-1]
        return run_ids, states


def verify_finds_damage(url: str) -> bool:
    try:
        with statevault.open(url, create=False) as vault:
            return not vault.verify().ok
    except statevault.CorruptionError:
        return True  # it cannot even be opened: the damage is reported at open


@dataclass
class Tally:
    cases: int = 0
    detected: int = 0
    harmless: int = 0
    older: int = 0
    dropped: int = 0

    def __str__(self) -> str:
        return (
            f"{self.cases} damaged copies: {self.detected} detected (CorruptionError), "
            f"{self.harmless} harmless (every state read back exact), {self.older} older versions "
            f"read as valid older history, {self.dropped} newest records taken for a torn tail "
            f"(dropped and reported), 0 wrong data"
        )


def check_case(case: Case, url: str, expected: Expected, tally: Tally) -> None:
    """Raise AssertionError unless the damaged vault behaves as the module doc allows."""
    what = f"{case.artifact.kind} {case.artifact.path.name}: {case.name}"
    tally.cases += 1
    try:
        run_ids, states = read_all(url)
    except statevault.CorruptionError as exc:
        _check_named(case.artifact, exc, what)
        assert verify_finds_damage(url), f"{what}: a load failed but verify found nothing"
        tally.detected += 1
        return
    except statevault.NotAVaultError:
        # A file cut to nothing is an empty file: no byte is left to show it was a
        # vault. Refused when opened for reading; documented in docs/reliability.md.
        assert case.damaged == b"", f"{what}: a damaged vault was called foreign"
        tally.detected += 1
        return
    except Exception as exc:
        raise AssertionError(f"{what}: untyped or wrong error {type(exc).__name__}: {exc}") from exc
    if run_ids == sorted(expected) and states == expected:
        tally.harmless += 1
        return
    if case.previous_version:
        for run_id in run_ids:
            want = expected.get(run_id, [])
            assert states[run_id] == want[: len(states[run_id])], f"{what}: run {run_id!r} mixed"
        tally.older += 1
        return
    if _dropped_as_torn_tail(case, url, expected, states):
        tally.dropped += 1
        return
    raise AssertionError(f"{what}: WRONG DATA returned (runs {run_ids})")


def _dropped_as_torn_tail(
    case: Case, url: str, expected: Expected, states: dict[str, list[Any]]
) -> bool:
    """Damage to a run's newest record in a log segment looks like a commit that never
    returned: allowed only if that record alone is missing and the drop is reported."""
    run_id = case.artifact.run_id
    if case.artifact.kind not in ("segment", "frame") or run_id is None:
        return False
    others = {r: s for r, s in states.items() if r != run_id}
    if others != {r: s for r, s in expected.items() if r != run_id}:
        return False
    if states.get(run_id, []) != expected[run_id][:-1]:
        return False
    with statevault.open(url, create=False) as vault:
        vault.run(run_id).checkpoints()  # reading the run's log is what finds a torn tail
        notes = vault.recovery_notes()
    return any(n.run_id == run_id and n.seq == len(expected[run_id]) for n in notes)


def _check_named(artifact: Artifact, exc: statevault.CorruptionError, what: str) -> None:
    if artifact.kind in ("segment", "frame"):
        # A segment holds several records: the first one the damage reaches is named.
        assert exc.run_id == artifact.run_id, f"{what}: names run {exc.run_id!r}: {exc}"
        if artifact.kind == "frame" and exc.seq is not None:
            assert exc.seq <= (artifact.seq or 0), f"{what}: names checkpoint {exc.seq}: {exc}"
    if artifact.kind == "record" and exc.run_id is not None:
        assert exc.run_id == artifact.run_id, f"{what}: names run {exc.run_id!r}: {exc}"
        assert exc.seq == artifact.seq, f"{what}: names checkpoint {exc.seq}: {exc}"
    if artifact.kind == "record" and artifact.whole_file:
        assert exc.run_id == artifact.run_id and exc.seq == artifact.seq, f"{what}: {exc}"
    if artifact.kind == "object" and artifact.whole_file:
        assert exc.digest == artifact.digest, f"{what}: names object {exc.digest}: {exc}"
        assert exc.run_id is not None and exc.seq is not None, f"{what}: {exc}"


def damage_each(
    artifacts: list[Artifact],
    url: str,
    expected: Expected,
    *,
    samples: int,
    seed: int,
    restore: Callable[[Path, bytes], None] | None = None,
) -> Tally:
    """Run every case of every artifact, restoring the file after each."""
    rnd = random.Random(seed)
    tally = Tally()
    for artifact in artifacts:
        original = artifact.path.read_bytes()
        for case in cases(artifact, original, samples=samples, rnd=rnd):
            write(artifact.path, case.damaged)
            try:
                check_case(case, url, expected, tally)
            finally:
                (restore or write)(artifact.path, original)
    return tally


def write(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)
