"""A run's records as frames in fixed-size, pre-filled segment files (files layout 2).

A segment, `runs/<name>/log/<first seq as 20 digits>`::

    offset 0    header, 64 bytes: magic, version, size, first seq, key, check
    offset 64   frames, each at an 8-byte aligned offset:
                  u64 seq, u32 payload length, u32 flags, 16-byte tag, payload
    ...         filler bytes (0xA5) up to `size`

Why this shape:

- A segment is born whole: header, its first frame and filler up to its size are
  written to a temporary file, fsynced, and linked under its name. Its length never
  changes afterwards, so a file cut short (or extended) is damage, never a crash.
- A commit writes one frame over filler (`pwrite`) and `fdatasync`s it. Overwriting
  allocated space changes no file size or extent, which makes the flush cheaper than
  an append (see docs/performance.md for the figures on this machine).
- The tag is BLAKE3 keyed with the segment's own random key, over the frame's head
  and payload. A frame is valid only in the segment that wrote it and only under
  its seq, so stale or misplaced bytes never pass as a record.
- Frames are consecutive from the first seq. The first frame that is not valid ends
  the log: if only filler follows it, that is the clean end; if other bytes follow and
  none of them is a valid frame, it is a torn tail (a commit that never returned),
  which is dropped and reported; if a valid frame follows, records before the tail
  are damaged, and that is a `CorruptionError`.
- When a frame does not fit, the next segment is created (with that frame in it)
  and then the full one is sealed with a frame that names the next segment's first
  seq. A sealed segment whose successor is missing is damage.

The module knows bytes and files only; `FilesBackend` holds the locks.
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from blake3 import blake3

from statevault.backends.fsio import FileIO
from statevault.errors import CorruptionError
from statevault.faults import crash_point, register

SEGMENT_MAGIC = b"SVSEG\r\n\x1a"
SEGMENT_VERSION = 1
_HEADER = struct.Struct(">8sHHIQ32s")  # magic, version, reserved, size, first seq, key
HEADER_SIZE = 64
_CHECK_SIZE = HEADER_SIZE - _HEADER.size
_KEY = slice(_HEADER.size - 32, _HEADER.size)
_FRAME = struct.Struct(">QII16s")  # seq, payload length, flags, tag
FRAME_HEAD = _FRAME.size
_TAG_SIZE = 16
_ALIGN = 8
_FLAG_SEAL = 1
_KNOWN_FLAGS = _FLAG_SEAL
FILLER = 0xA5
"""The byte that fills a segment's unwritten space. Not zero, so that a zeroed page (a
common kind of damage) is never mistaken for space no commit has used yet."""
_FILLER_BYTE = bytes([FILLER])
_FILLER_HEAD = _FILLER_BYTE * FRAME_HEAD
_PAGE = 4096
MIN_SEGMENT_SIZE = 4096
MAX_SEGMENT_SIZE = 256 << 10
"""A new segment is twice the bytes its predecessor used, up to this: a run with few
records costs one page, a busy one makes a segment every hundred commits or so, and
the space not yet written (filler) stays below a quarter of a mebibyte per run."""
_FILLER_SPAN = _FILLER_BYTE * MAX_SEGMENT_SIZE
_NAME_DIGITS = 20

_CRASH_SEGMENT_LINKED = register(
    "files.segment.after_link", "a new segment holding a record is linked, log/ not yet fsynced"
)
_CRASH_FRAME_WRITTEN = register(
    "files.frame.after_write", "a record's frame is written into its segment, not yet flushed"
)
_CRASH_SEALED = register(
    "files.segment.after_seal", "a full segment is sealed; the commit has not returned"
)
_CRASH_WIPED = register(
    "files.segment.after_wipe", "a torn tail is wiped; the commit has not written its frame"
)


def segment_name(first_seq: int) -> str:
    return f"{first_seq:0{_NAME_DIGITS}d}"


def parse_segment_name(name: str) -> int | None:
    if len(name) == _NAME_DIGITS and name.isascii() and name.isdigit():
        return int(name)
    return None


def segments_for_newest(names: list[str], count: int) -> list[str]:
    """Of a run's segment names (sorted), the newest ones that hold its newest `count` records.

    A segment is named by its first seq and seqs run on from one segment to the next.
    The head is at least the newest segment's first seq, so the newest `count` records
    lie in the segment holding seq `first - count + 1` and those after it. A log that
    breaks the rule (damage, a roll-back meanwhile) reads short, and the caller reads
    every segment.
    """
    if not names:
        return []
    lowest = (parse_segment_name(names[-1]) or 0) - count + 1
    start = len(names) - 1
    while start > 0 and (parse_segment_name(names[start]) or 0) > lowest:
        start -= 1
    return names[start:]


def _aligned(offset: int) -> int:
    return (offset + _ALIGN - 1) & ~(_ALIGN - 1)


def _tag(key: bytes, head: bytes, payload: bytes | memoryview) -> bytes:
    hasher = blake3(head, key=key)
    hasher.update(payload)
    return hasher.digest(_TAG_SIZE)


def encode_frame(key: bytes, seq: int, payload: bytes, *, seal: bool = False) -> bytes:
    flags = _FLAG_SEAL if seal else 0
    head = struct.pack(">QII", seq, len(payload), flags)
    return head + _tag(key, head, payload) + payload


def encode_header(first_seq: int, size: int, key: bytes) -> bytes:
    fixed = _HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0, size, first_seq, key)
    return fixed + blake3(fixed).digest(_CHECK_SIZE)


def _pages(size: int) -> int:
    return -(-size // _PAGE) * _PAGE


def segment_size_for(previous_used: int, needed: int) -> int:
    """The size of a new segment: twice what its predecessor used (capped), and room for
    `needed` bytes of frames. Sized by use, not by size: relocation shrinks what a
    segment holds, and its successor should not inherit the room it no longer needs."""
    size = min(max(_pages(previous_used) * 2, MIN_SEGMENT_SIZE), MAX_SEGMENT_SIZE)
    return max(size, _pages(HEADER_SIZE + needed))


class SuccessorMissing(CorruptionError):
    """A sealed segment's successor is not in the listing read. Damage, unless the
    listing was taken just before a writer linked the successor: look again first."""


class SegmentDamage(Exception):
    """A segment's bytes are not what statevault wrote; the message says where, and
    `seq` names the first record it affects, when one is known."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True, slots=True)
class Segment:
    """What one segment holds: its valid frames, where the next one goes, and its tail.

    Attributes:
        frames: (seq, payload offset, payload length) of each valid record frame.
        end: the offset where the next frame goes (after the last valid frame or seal).
        sealed_next: the first seq of the next segment, if this one is sealed.
        torn: the bytes of a torn tail (none of them a valid frame), else empty.
    """

    first_seq: int
    size: int
    key: bytes
    frames: tuple[tuple[int, int, int], ...]
    end: int
    sealed_next: int | None
    torn: bytes

    @property
    def next_seq(self) -> int:
        return self.first_seq + len(self.frames)

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1


def _frame_at(data: bytes, offset: int, key: bytes, expected_seq: int) -> tuple[int, int] | None:
    """(payload length, flags) of a valid frame with `expected_seq` at `offset`, else None."""
    size = len(data)
    if offset + FRAME_HEAD > size:
        return None
    seq, length, flags, tag = _FRAME.unpack_from(data, offset)
    if seq != expected_seq or flags & ~_KNOWN_FLAGS or offset + FRAME_HEAD + length > size:
        return None
    if flags & _FLAG_SEAL and length:
        return None
    payload = memoryview(data)[offset + FRAME_HEAD : offset + FRAME_HEAD + length]
    if _tag(key, data[offset : offset + 16], payload) != tag:
        return None
    return length, flags


def scan_segment(data: bytes, *, resume: Segment | None = None) -> Segment:
    """Parse a segment's bytes. `resume`, a scan of the same segment (same key), is
    trusted up to its end, so a growing segment is verified once per frame.

    Raises:
        SegmentDamage: a damaged header, a wrong length, or damage before the tail.
    """
    if len(data) < HEADER_SIZE:
        raise SegmentDamage(f"it is {len(data)} bytes long, shorter than a segment header")
    magic, version, _, size, first_seq, key = _HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise SegmentDamage("its header does not start with the segment magic")
    if blake3(data[: _HEADER.size]).digest(_CHECK_SIZE) != data[_HEADER.size : HEADER_SIZE]:
        raise SegmentDamage("its header's check does not match")
    if version != SEGMENT_VERSION:
        raise SegmentDamage(f"its header names segment version {version}")
    if size != len(data):
        raise SegmentDamage(
            f"it is {len(data)} bytes long but was created with {size}: cut short or extended"
        )
    sealed_next = None
    if (
        resume is not None
        and resume.key == key
        and not resume.torn
        and _holds_last_frame(data, resume)
        and (resume.sealed_next is None or _holds_seal(data, resume))
    ):
        frames = list(resume.frames)
        offset = resume.end
        sealed_next = resume.sealed_next
    else:
        frames = []
        offset = HEADER_SIZE
    while sealed_next is None:
        expected = first_seq + len(frames)
        found = _frame_at(data, offset, key, expected)
        if found is None:
            break
        length, flags = found
        if flags & _FLAG_SEAL:
            sealed_next = expected
            offset = _aligned(offset + FRAME_HEAD)
            break
        frames.append((expected, offset + FRAME_HEAD, length))
        offset = _aligned(offset + FRAME_HEAD + length)
    torn = b""
    tail = b"" if _only_filler(data, offset) else data[offset:].rstrip(_FILLER_BYTE)
    if tail:
        # Bytes beyond the last valid frame. A valid frame among them means the frame
        # at `offset` was damaged after later commits returned: records were lost.
        later = _find_valid_frame(data, offset, key, first_seq + len(frames))
        if later is not None:
            raise SegmentDamage(
                f"the frame of seq {first_seq + len(frames)} at offset {offset} is damaged, "
                f"and records written after it follow (seq {later})",
                seq=first_seq + len(frames),
            )
        if sealed_next is not None:
            raise SegmentDamage(f"bytes follow its seal frame at offset {offset - FRAME_HEAD}")
        torn = tail
    return Segment(first_seq, size, key, tuple(frames), offset, sealed_next, torn)


def _holds_seal(data: bytes, scan: Segment) -> bool:
    """True if `data` holds the seal frame of the sealed segment `scan` found (a full
    segment's scan is then trusted whole, and only its free space is looked at)."""
    assert scan.sealed_next is not None
    found = _frame_at(data, scan.end - _aligned(FRAME_HEAD), scan.key, scan.sealed_next)
    return found is not None and bool(found[1] & _FLAG_SEAL)


def _only_filler(data: bytes, start: int) -> bool:
    """True if `data` holds nothing but filler from `start` on.

    A comparison with a span of filler runs at memory speed: most reads meet a
    segment's free space, 256 KiB of it in a new segment, and stripping it byte by
    byte took most of a small read's time.
    """
    rest = memoryview(data)[start:]
    if len(rest) <= len(_FILLER_SPAN):
        return _FILLER_SPAN.startswith(rest)
    return not data[start:].rstrip(_FILLER_BYTE)


def _holds_last_frame(data: bytes, scan: Segment) -> bool:
    """True if `data` already holds the newest frame `scan` found. Another thread's scan
    may be newer than these bytes, read a moment earlier; frames are written in order,
    so holding the newest means holding every one before it."""
    if not scan.frames:
        return True
    seq, offset, _ = scan.frames[-1]
    return _frame_at(data, offset - FRAME_HEAD, scan.key, seq) is not None


def _find_valid_frame(data: bytes, start: int, key: bytes, next_seq: int) -> int | None:
    """The seq of a valid frame at any aligned offset after `start`, if there is one."""
    size = len(data)
    offset = _aligned(start + 1)
    while offset + FRAME_HEAD <= size:
        (seq,) = struct.unpack_from(">Q", data, offset)
        # A lost frame leaves the ones after it with seqs from next_seq on, and no
        # segment holds more frames than it has room for.
        if next_seq <= seq < next_seq + size // FRAME_HEAD and _frame_at(data, offset, key, seq):
            return int(seq)
        offset += _ALIGN
    return None


def salvage(data: bytes) -> dict[int, bytes]:
    """The records of a damaged segment's valid prefix: frames whose seq and tag check,
    from the first up to the first that does not. Empty if the header is damaged."""
    if len(data) < HEADER_SIZE:
        return {}
    magic, _, _, _, first_seq, key = _HEADER.unpack_from(data)
    if (
        magic != SEGMENT_MAGIC
        or blake3(data[: _HEADER.size]).digest(_CHECK_SIZE) != data[_HEADER.size : HEADER_SIZE]
    ):
        return {}
    found: dict[int, bytes] = {}
    offset = HEADER_SIZE
    seq = first_seq
    while (frame := _frame_at(data, offset, key, seq)) is not None and not frame[1] & _FLAG_SEAL:
        found[seq] = data[offset + FRAME_HEAD : offset + FRAME_HEAD + frame[0]]
        offset = _aligned(offset + FRAME_HEAD + frame[0])
        seq += 1
    return found


def ends_at(data: bytes, seq: int) -> bool:
    """True if the segment is intact and its last record is `seq` (nothing after it)."""
    try:
        segment = scan_segment(data)
    except SegmentDamage:
        return False
    return segment.last_seq == seq and segment.sealed_next is None and not segment.torn


# -- a run's log: the segments of one directory --------------------------------------------
@dataclass(frozen=True, slots=True)
class Tail:
    """Where a run's next frame goes: enough to check, with two small reads, that no
    other writer has committed since (its key and the filler at `end`)."""

    name: str
    key: bytes
    size: int
    end: int
    next_seq: int


@dataclass(frozen=True, slots=True)
class LogView:
    """A consistent read of a run's log: its records and its tail."""

    records: Mapping[int, bytes]
    head: int
    tail: Tail | None
    torn: bytes
    """A torn tail's bytes (a commit that never returned), else empty."""


def read_log(
    segments: Sequence[tuple[str, bytes]],
    *,
    run_id: str,
    describe: Callable[[str], str],
    want: Callable[[int], bool] = lambda seq: True,
    cache: dict[tuple[str, bytes], Segment] | None = None,
    newest: bool = True,
) -> LogView:
    """Check the segments of one run (sorted by name) and pick the wanted records.

    `newest`: the last of `segments` is the run's newest (so a seal there is damage).

    Raises:
        CorruptionError: any damage but a torn tail with nothing valid after it.
    """

    def damage(message: str, seq: int | None = None) -> CorruptionError:
        return CorruptionError(message, run_id=run_id, seq=seq, hint=_HINT)

    records: dict[int, bytes] = {}
    expected_first: int | None = None
    previous: Segment | None = None
    tail: Tail | None = None
    for name, data in segments:
        where = describe(name)
        resume = cache.get((name, data[_KEY])) if cache is not None else None
        try:
            segment = scan_segment(data, resume=resume)
        except SegmentDamage as exc:
            raise damage(f"the log segment {where} is damaged: {exc}", exc.seq) from None
        if segment.first_seq != parse_segment_name(name):
            raise damage(
                f"the log segment {where} holds records from seq {segment.first_seq}, "
                f"not from the seq its name gives"
            )
        if previous is not None:
            # A full segment's seal is written after its successor exists, with no flush
            # of its own: a reader (or a crash) can catch it half written. Bytes that fit
            # in a seal frame right after the last record are that, not lost records.
            if previous.torn and len(previous.torn) > FRAME_HEAD:
                raise damage(
                    f"the segment before {where} ends in damaged bytes, and records "
                    f"written after them follow",
                    previous.next_seq,
                )
            if not previous.frames:
                raise damage(f"the segment before {where} holds no record, yet one follows it")
        if expected_first is not None and segment.first_seq != expected_first:
            raise damage(
                f"the log segment {where} starts at seq {segment.first_seq}, but the segment "
                f"before it ends at seq {expected_first - 1}: records are missing"
            )
        if cache is not None and not segment.torn:
            cache[(name, segment.key)] = segment
        for seq, offset, length in segment.frames:
            if want(seq):
                records[seq] = data[offset : offset + length]
        expected_first = segment.sealed_next or segment.next_seq
        previous = segment
        tail = Tail(name, segment.key, segment.size, segment.end, segment.next_seq)
    if newest and previous is not None and previous.sealed_next is not None:
        raise SuccessorMissing(
            f"the log segment {describe(tail.name if tail else '')} is sealed, but the segment "
            f"after it (from seq {previous.sealed_next}) is missing: records are lost",
            run_id=run_id,
            hint=_HINT,
        )
    head = previous.last_seq if previous is not None else 0
    return LogView(records, head, tail, previous.torn if previous is not None else b"")


_HINT = (
    "The log's bytes changed after they were written (disk damage, or a program other than "
    "statevault). `statevault verify` lists what is affected; `statevault repair` rolls the "
    "run back to its last intact record."
)


class SegmentWriter:
    """The writes of a run's log; the caller holds the run's lock.

    Args:
        io: the file operations.
        tmp_dir: where new segments are written before they are linked.
    """

    def __init__(self, io: FileIO, tmp_dir: str) -> None:
        self._io = io
        self._tmp = tmp_dir

    def tail_is_current(self, log_dir: str, tail: Tail) -> bool:
        """True if nothing was written after `tail` (no frame, no seal, same segment)."""
        io = self._io
        try:
            fd = io.syscall(os.open, os.path.join(log_dir, tail.name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            header = io.pread(fd, HEADER_SIZE, 0)
            if header[_KEY] != tail.key:
                return False
            if tail.end + FRAME_HEAD > tail.size:
                return False  # no room for a seal (not written by this module): look again
            return io.pread(fd, FRAME_HEAD, tail.end) == _FILLER_HEAD
        finally:
            io.close_quietly(fd)

    def append(self, log_dir: str, tail: Tail | None, seq: int, record: bytes) -> Tail:
        """Write the frame of `seq` durably; returns the new tail."""
        io = self._io
        # Room for a seal is always kept, so that a full segment can name its successor.
        if (
            tail is not None
            and tail.end + _aligned(FRAME_HEAD + len(record)) + FRAME_HEAD <= tail.size
        ):
            frame = encode_frame(tail.key, seq, record)
            fd = io.open_file(os.path.join(log_dir, tail.name))
            try:
                io.pwrite_all(fd, frame, tail.end)
                crash_point(_CRASH_FRAME_WRITTEN)
                io.fdatasync(fd)
            finally:
                io.close_quietly(fd)
            return Tail(tail.name, tail.key, tail.size, _aligned(tail.end + len(frame)), seq + 1)
        # A new segment, born holding the frame: one fsynced file and one link, so the
        # record is durable exactly when the segment's name is.
        size = segment_size_for(
            tail.end if tail is not None else 0, _aligned(FRAME_HEAD + len(record)) + FRAME_HEAD
        )
        key = secrets.token_bytes(32)
        frame = encode_frame(key, seq, record)
        body = encode_header(seq, size, key) + frame
        name = segment_name(seq)
        if not io.create_exclusive(
            os.path.join(log_dir, name),
            body + _FILLER_BYTE * (size - len(body)),
            temp_dir=self._tmp,
        ):
            raise FileExistsError(f"{os.path.join(log_dir, name)} exists already")
        crash_point(_CRASH_SEGMENT_LINKED)
        io.fsync_dir(log_dir)
        if tail is not None and tail.end + FRAME_HEAD <= tail.size:
            # Only after the new segment is durable: a seal naming a segment that a crash
            # lost would make a clean crash look like damage. The seal needs no flush of
            # its own; a lost one only costs a reader the check it gives.
            fd = io.open_file(os.path.join(log_dir, tail.name))
            try:
                io.pwrite_all(fd, encode_frame(tail.key, seq, b"", seal=True), tail.end)
            finally:
                io.close_quietly(fd)
            crash_point(_CRASH_SEALED)
        return Tail(name, key, size, _aligned(HEADER_SIZE + len(frame)), seq + 1)

    def write_log(self, log_dir: str, records: Mapping[int, bytes]) -> None:
        """Write a whole log of `records` (seq 1 upwards) into an empty directory.

        Full segments of the largest size, each sealed, and a last one with room to
        grow; each file fsynced. The caller fsyncs the directory.
        """
        seqs = sorted(records)
        start = 0
        while start < len(seqs):
            key = secrets.token_bytes(32)
            first = seqs[start]
            frames: list[bytes] = []
            used = HEADER_SIZE + FRAME_HEAD  # room for the seal is always kept
            stop = start
            while stop < len(seqs):
                frame = encode_frame(key, seqs[stop], records[seqs[stop]])
                if frames and used + _aligned(len(frame)) > MAX_SEGMENT_SIZE:
                    break
                frames.append(frame + bytes(_aligned(len(frame)) - len(frame)))
                used += _aligned(len(frame))
                stop += 1
            last = stop == len(seqs)
            rounded = _pages(used)
            if last:
                # Room to grow, as a segment its writer made would have.
                size = max(min(2 * rounded, MAX_SEGMENT_SIZE), rounded)
            else:
                frames.append(encode_frame(key, seqs[stop], b"", seal=True))
                size = rounded
            body = encode_header(first, size, key) + b"".join(frames)
            path = os.path.join(log_dir, segment_name(first))
            temp = self._io.write_temp(log_dir, body + _FILLER_BYTE * (size - len(body)))
            self._io.rename(temp, path)
            start = stop

    def wipe(self, log_dir: str, name: str, start: int, stop: int) -> None:
        """Overwrite [start, stop) of a segment with filler, durably."""
        fd = self._io.open_file(os.path.join(log_dir, name))
        try:
            self._io.pwrite_all(fd, _FILLER_BYTE * (stop - start), start)
            self._io.fdatasync(fd)
        finally:
            self._io.close_quietly(fd)
        crash_point(_CRASH_WIPED)

    def truncate_after(self, log_dir: str, name: str, data: bytes, keep_through: int) -> None:
        """Remove the frames after `keep_through` from one segment (see `replace`).

        The frames up to `keep_through` must be valid; what follows them may be damaged,
        which is why a repair rolls back.
        """
        self.replace(log_dir, data, {}, last=True, keep_through=keep_through)

    def replace(
        self,
        log_dir: str,
        data: bytes,
        payloads: Mapping[int, bytes],
        *,
        last: bool,
        keep_through: int | None = None,
    ) -> str:
        """Write a segment anew, some records' payloads replaced or, with `keep_through`,
        the records after it left out; returns its name.

        Never changed in place: readers trust a segment's frames by its key, so a new
        file with a new key replaces it, and each reader checks it afresh. The last
        segment keeps its size (its writer appends there); an earlier one is cut to
        what it holds. Renamed over the old file, so a crash keeps the old bytes or the
        new, both valid; the directory is fsynced only when records are removed (a lost
        rename of a rewrite loses only the space it saved).
        """
        where = os.path.join(log_dir, "?")
        try:
            first = scan_segment(data[:HEADER_SIZE] + _FILLER_BYTE * (len(data) - HEADER_SIZE))
        except SegmentDamage as exc:
            raise CorruptionError(
                f"the log segment {where} is damaged: {exc}", hint=_HINT
            ) from None
        old_key = first.key
        key = secrets.token_bytes(32)
        frames = []
        offset = HEADER_SIZE
        seq = first.first_seq
        sealed_next = None
        while keep_through is None or seq <= keep_through:
            found = _frame_at(data, offset, old_key, seq)
            if found is None:
                if keep_through is not None:
                    raise CorruptionError(
                        f"the log segment {where} cannot be cut after seq {keep_through}: "
                        f"the frame of seq {seq} is damaged",
                        seq=seq,
                        hint=_HINT,
                    )
                break
            length, flags = found
            if flags & _FLAG_SEAL:
                sealed_next = seq
                break
            start = offset + FRAME_HEAD
            frame = encode_frame(key, seq, payloads.get(seq, data[start : start + length]))
            frames.append(frame + bytes(_aligned(len(frame)) - len(frame)))
            offset = _aligned(start + length)
            seq += 1
        if sealed_next is not None and keep_through is None:
            frames.append(encode_frame(key, sealed_next, b"", seal=True))
        body = b"".join(frames)
        needed = _pages(HEADER_SIZE + len(body) + FRAME_HEAD)
        # The last segment keeps room to grow, but no more than it holds again: a
        # rewrite that shrank its records gives the space back.
        size = max(min(first.size, 2 * needed), needed) if last else needed
        name = segment_name(first.first_seq)
        self._io.write_atomic(
            os.path.join(log_dir, name),
            encode_header(first.first_seq, size, key)
            + body
            + _FILLER_BYTE * (size - HEADER_SIZE - len(body)),
            sync_dir=keep_through is not None,
            temp_dir=self._tmp,
        )
        return name
