"""Files layout 2: record segments. Format properties, torn tails, damage, roll-back."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import statevault
from statevault import ops
from statevault.backends.files import FilesBackend, run_dir_name
from statevault.backends.fsio import FileIO
from statevault.backends.seglog import (
    FILLER,
    FRAME_HEAD,
    HEADER_SIZE,
    MIN_SEGMENT_SIZE,
    SegmentDamage,
    SegmentWriter,
    read_log,
    salvage,
    scan_segment,
    segments_for_newest,
)
from statevault.errors import CorruptionError

META = {"format": b"3"}
RECORDS = st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=40)


def write_log(directory: Path, records: list[bytes]) -> dict[str, bytes]:
    """Append `records` (seq 1, 2, ...) with the real writer; the segments' bytes."""
    log_dir = directory / "log"
    tmp = directory / "tmp"
    log_dir.mkdir(parents=True)
    tmp.mkdir()
    writer = SegmentWriter(FileIO(sync=False), str(tmp))
    tail = None
    for seq, record in enumerate(records, 1):
        tail = writer.append(str(log_dir), tail, seq, record)
    return {p.name: p.read_bytes() for p in sorted(log_dir.iterdir())}


def read(segments: dict[str, bytes]) -> dict[int, bytes]:
    view = read_log(sorted(segments.items()), run_id="r", describe=str)
    return dict(view.records)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=RECORDS)
def test_records_read_back_across_segments(
    records: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    segments = write_log(tmp_path_factory.mktemp("log"), records)
    assert read(segments) == dict(enumerate(records, 1))
    for data in segments.values():
        segment = scan_segment(data)
        assert len(data) == segment.size and segment.size % MIN_SEGMENT_SIZE == 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=RECORDS, where=st.floats(0, 1), bit=st.integers(0, 7))
def test_a_flipped_bit_is_never_wrong_data(
    records: list[bytes], where: float, bit: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    segments = write_log(tmp_path_factory.mktemp("log"), records)
    name = sorted(segments)[int(where * (len(segments) - 1))]
    data = bytearray(segments[name])
    pos = int(where * (len(data) - 1))
    data[pos] ^= 1 << bit
    segments[name] = bytes(data)
    expected = dict(enumerate(records, 1))
    try:
        found = read(segments)
    except CorruptionError:
        return
    # Only the newest record may go missing (taken for a torn tail), never any other.
    assert found in (expected, {s: r for s, r in expected.items() if s < len(records)})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=RECORDS, count=st.integers(1, 45))
def test_the_newest_records_are_read_from_the_segments_that_hold_them(
    records: list[bytes], count: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    segments = write_log(tmp_path_factory.mktemp("log"), records)
    names = sorted(segments)
    chosen = segments_for_newest(names, count)
    assert chosen == names[len(names) - len(chosen) :], "a run of the newest segments"
    found = read({name: segments[name] for name in chosen})
    head = len(records)
    newest = range(max(1, head - count + 1), head + 1)
    assert all(found[seq] == records[seq - 1] for seq in newest)
    if len(chosen) > 1:  # the oldest chosen holds a record within `count` of the newest's first
        assert int(chosen[1]) > int(names[-1]) - count + 1


def test_reading_the_newest_records_reads_only_their_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from statevault.backends import files  # noqa: PLC0415 - the module whose reads are counted

    with statevault.open(f"files://{tmp_path / 'v'}") as vault:
        run = vault.run("r")
        for n in range(400):
            run.save({"n": n, "pad": os.urandom(600)})
    read_segments: list[int] = []
    original = files.read_log

    def counting(segments: list[tuple[str, bytes]], **kwargs: object) -> object:
        read_segments.append(len(segments))
        return original(segments, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(files, "read_log", counting)
    with statevault.open(f"files://{tmp_path / 'v'}") as vault:
        backend = vault._backend
        assert isinstance(backend, FilesBackend)
        log = tmp_path / "v" / "runs" / run_dir_name("r") / "log"
        firsts = sorted(int(p.name) for p in log.iterdir())
        assert len(firsts) > 3, "the workload must leave older segments to skip"
        # Deeper than the two newest segments hold, short of the two oldest.
        limit = firsts[-1] - firsts[2] + 1
        assert limit > 400 - firsts[-2] + 1
        newest = backend.read_checkpoints("r", limit=limit)
    assert [c.seq for c in newest] == list(range(400, 400 - limit, -1))
    needed = len(firsts) - 2
    assert read_segments == [needed]


def test_a_cut_or_extended_segment_is_damage(tmp_path: Path) -> None:
    segments = write_log(tmp_path, [b"a" * 100, b"b" * 100])
    ((name, data),) = segments.items()
    for damaged in (data[:-1], data[: len(data) // 2], data + b"\0"):
        with pytest.raises(SegmentDamage, match=r"cut short or extended|shorter"):
            scan_segment(damaged)
        with pytest.raises(CorruptionError, match="run 'r'"):
            read({name: damaged})


def test_a_zeroed_page_is_never_taken_for_free_space(tmp_path: Path) -> None:
    segments = write_log(tmp_path, [b"x" * 50] * 3)
    (data,) = segments.values()
    zeroed = data[:HEADER_SIZE] + bytes(len(data) - HEADER_SIZE)
    # Every record is gone: a torn tail can only ever cost the newest one, so this is
    # damage (the first frame is not valid, and no later frame is either: torn), and
    # reported as such: the bytes are not filler.
    segment = scan_segment(zeroed)
    assert segment.frames == () and segment.torn


def test_a_lost_record_before_the_tail_is_damage_naming_it(tmp_path: Path) -> None:
    segments = write_log(tmp_path, [b"r%d" % i * 20 for i in range(1, 6)])
    ((name, data),) = segments.items()
    segment = scan_segment(data)
    _, offset, _ = segment.frames[2]
    damaged = bytearray(data)
    damaged[offset] ^= 0x10
    with pytest.raises(CorruptionError) as info:
        read({name: bytes(damaged)})
    assert info.value.seq == 3 and info.value.run_id == "r"
    assert sorted(salvage(bytes(damaged))) == [1, 2]


def test_a_missing_middle_or_sealed_successor_segment_is_damage(tmp_path: Path) -> None:
    segments = write_log(tmp_path, [os.urandom(1500) for _ in range(12)])
    names = sorted(segments)
    assert len(names) >= 3
    middle = {n: d for n, d in segments.items() if n != names[1]}
    with pytest.raises(CorruptionError, match="records are missing"):
        read(middle)
    newest_gone = {n: d for n, d in segments.items() if n != names[-1]}
    with pytest.raises(CorruptionError, match="sealed"):
        read(newest_gone)


def torn_vault(tmp_path: Path, *, through_api: bool = False) -> tuple[str, Path, int]:
    """A vault whose run 'r' has 3 records and then the torn frame of a 4th."""
    root = tmp_path / "v"
    if through_api:
        with statevault.open(f"files://{root}") as vault:
            for step in (1, 2, 3):
                vault.run("r").save({"step": step})
    else:
        backend = FilesBackend(str(root), initial_meta=META)
        for seq in (1, 2, 3):
            backend.commit_checkpoint("r", seq, b"rec%d" % seq, expected_head=seq - 1)
        backend.close()
    log = root / "runs" / run_dir_name("r") / "log"
    (segment,) = sorted(log.iterdir())
    data = bytearray(segment.read_bytes())
    end = scan_segment(bytes(data)).end
    # What a crash inside the 4th commit's pwrite can leave: its first bytes only.
    # (Ending in a byte that is not filler, so the tail's length is exactly this.)
    data[end : end + FRAME_HEAD + 2] = os.urandom(FRAME_HEAD + 1) + b"\x01"
    segment.write_bytes(bytes(data))
    return str(root), segment, end


def test_a_torn_tail_is_skipped_reported_and_set_aside(tmp_path: Path) -> None:
    root, segment, end = torn_vault(tmp_path)
    torn = segment.read_bytes()[end : end + FRAME_HEAD + 2]
    reader = FilesBackend(root, initial_meta=META)
    assert reader.head("r") == 3
    assert [c.seq for c in reader.read_checkpoints("r")] == [3, 2, 1]
    (note,) = reader.recovery_notes()
    assert (note.run_id, note.seq, note.kept_as) == ("r", 4, None)
    # The next writer keeps the torn bytes, wipes them, and commits in their place.
    writer = FilesBackend(root, initial_meta=META)
    writer.commit_checkpoint("r", 4, b"rec4", expected_head=3)
    (note,) = writer.recovery_notes()
    assert note.kept_as is not None and Path(note.kept_as).read_bytes() == torn
    assert [c.record for c in FilesBackend(root, initial_meta=META).read_checkpoints("r")] == [
        b"rec4",
        b"rec3",
        b"rec2",
        b"rec1",
    ]
    assert scan_segment(segment.read_bytes()).torn == b""


def test_vault_recovery_notes(tmp_path: Path) -> None:
    root, _, _ = torn_vault(tmp_path, through_api=True)
    with statevault.open(f"files://{root}") as vault:
        assert [c.seq for c in vault.run("r").checkpoints()] == [3, 2, 1]
        assert [(n.run_id, n.seq) for n in vault.recovery_notes()] == [("r", 4)]
    with statevault.open(f"sqlite://{tmp_path / 'v.db'}") as vault:
        assert vault.recovery_notes() == []


def test_repair_rolls_a_damaged_log_back_and_keeps_its_bytes(tmp_path: Path) -> None:
    url = f"files://{tmp_path / 'v'}"
    with statevault.open(url) as vault:
        run = vault.run("r")
        run.save({"n": 0})
        for _ in range(6):
            run.apply([ops.increment("n")])
    log = tmp_path / "v" / "runs" / run_dir_name("r") / "log"
    (segment,) = sorted(log.iterdir())
    before = segment.read_bytes()
    _, offset, _ = scan_segment(before).frames[2]
    damaged = bytearray(before)
    damaged[offset + 1] ^= 0x04
    segment.write_bytes(bytes(damaged))
    with statevault.open(url) as vault:
        report = vault.verify()
        assert not report.ok
        assert any(p.run_id == "r" and p.seq == 3 for p in report.problems)
        repaired = vault.repair()
        assert [(r.run_id, r.kept_through) for r in repaired.rolled_back] == [("r", 2)]
        assert repaired.remaining == []
        assert vault.run("r").load() == {"n": 1}
        vault.run("r").apply([ops.increment("n")])
        assert vault.verify().ok
    kept = [p for p in (tmp_path / "v" / "recovery").iterdir() if "rolled-back" in p.name]
    assert [p.read_bytes() for p in kept] == [bytes(damaged)]


def test_filler_is_not_zero() -> None:
    # A zeroed page must never read as unused space (docs/format.md).
    assert FILLER != 0


def test_a_half_written_seal_is_not_damage(tmp_path: Path) -> None:
    # The seal of a full segment is written after its successor exists and is never
    # flushed on its own: readers and crashes can see it half written.
    records = [os.urandom(1500) for _ in range(12)]
    segments = write_log(tmp_path, records)
    first = sorted(segments)[0]
    data = bytearray(segments[first])
    seal_at = scan_segment(bytes(data)).end - FRAME_HEAD
    data[seal_at + 10 : seal_at + FRAME_HEAD] = bytes([FILLER]) * (FRAME_HEAD - 10)
    segments[first] = bytes(data)
    assert read(segments) == dict(enumerate(records, 1))
    # More than a seal's worth of bytes there is damage that records follow.
    data[seal_at + FRAME_HEAD : seal_at + FRAME_HEAD + 8] = b"\x00" * 8
    segments[first] = bytes(data)
    with pytest.raises(CorruptionError, match="damaged bytes"):
        read(segments)


def test_concurrent_readers_never_see_damage_while_segments_roll(tmp_path: Path) -> None:
    # Readers list the log, then read it, while a writer fills segment after segment
    # (new segment linked, then the full one sealed): a reader whose listing predates
    # the link must look again, never report the seal's missing successor as damage.
    root = str(tmp_path / "v")
    writer = FilesBackend(root, initial_meta=META)
    reader = FilesBackend(root, initial_meta=META)
    writer.commit_checkpoint("r", 1, os.urandom(900), expected_head=0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read_forever() -> None:
        while not stop.is_set():
            try:
                reader.read_checkpoints("r", limit=3)
                reader.head("r")
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=read_forever) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for seq in range(2, 400):
            writer.commit_checkpoint("r", seq, os.urandom(900), expected_head=seq - 1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert len(list((Path(root) / "runs" / run_dir_name("r") / "log").iterdir())) > 3


def test_a_newer_cached_scan_never_lends_frames_to_older_bytes(tmp_path: Path) -> None:
    # Threads share the cache of verified scans: one may have scanned the segment after
    # a commit that another's bytes, read a moment earlier, do not hold yet.
    records = [b"one" * 30, b"two" * 30]
    segments = write_log(tmp_path / "a", records)
    ((name, newer),) = segments.items()
    older = bytearray(newer)
    last = scan_segment(newer).frames[-1]
    older[last[1] - FRAME_HEAD : last[1] + last[2]] = bytes([FILLER]) * (FRAME_HEAD + last[2])
    cache: dict[tuple[str, bytes], object] = {}
    read_log([(name, newer)], run_id="r", describe=str, cache=cache)  # type: ignore[arg-type]
    view = read_log([(name, bytes(older))], run_id="r", describe=str, cache=cache)  # type: ignore[arg-type]
    assert dict(view.records) == {1: records[0]}


def test_a_sealed_segment_is_trusted_from_its_scan_only_while_it_holds_its_seal(
    tmp_path: Path,
) -> None:
    segments = write_log(tmp_path / "a", [bytes([n]) * 1500 for n in range(12)])
    names = sorted(segments)
    assert len(names) > 1
    full = segments[names[0]]
    scan = scan_segment(full)
    assert scan.sealed_next == int(names[1])
    assert scan_segment(full, resume=scan) == scan
    # Bytes read before the seal was written (a reader racing the writer): the scan
    # must not lend them a seal they do not hold.
    unsealed = bytearray(full)
    seal_at = scan.end - FRAME_HEAD
    unsealed[seal_at : scan.end] = bytes([FILLER]) * FRAME_HEAD
    rescanned = scan_segment(bytes(unsealed), resume=scan)
    assert rescanned.sealed_next is None
    assert rescanned.frames == scan.frames
    # Damage after the seal is found from a trusted scan too.
    damaged = bytearray(full)
    damaged[scan.end + 100] ^= 0xFF
    with pytest.raises(SegmentDamage, match="bytes follow its seal"):
        scan_segment(bytes(damaged), resume=scan)
