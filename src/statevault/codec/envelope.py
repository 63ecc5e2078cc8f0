"""Envelopes: the bytes an object is stored as, and sealed records.

An object envelope is a fixed 30-byte header and the (maybe compressed) payload:

    offset  size  field
    0       2     magic b"SV"
    2       1     format version (1; 2 when the payload is compressed against a dictionary)
    3       1     encoding id (1 value, 2 tree node, 3 raw bytes)
    4       1     compression id (0 none, 1 zstd, 2 lz4, 3 zstd against a dictionary)
    5       1     flags (0; reserved)
    6       4     compression dictionary id (0 = none), little-endian
    10      8     raw (uncompressed) length, little-endian
    18      8     payload length, little-endian
    26      4     CRC-32 of bytes 0-25 and the payload, little-endian
    30      ...   payload

The object's digest (its storage key) is BLAKE3 of the raw bytes, and is checked on
every read. The CRC adds what the digest cannot see: damage that decodes to the
same raw bytes anyway (a flipped flag, a zstd window size, garbage after the frame,
which a zstd decoder ignores). With both, every flipped bit is caught.

With compression id 3 (format version 2), the payload is the 32-byte digest of a
dictionary node (a tree node whose children are the stored objects that make up the
dictionary, their raw bytes in order) followed by a zstd frame compressed against
that content. The reader is handed a resolver that turns the digest into the
dictionary; the raw bytes are then checked against the digest as always.

A sealed record (checkpoint records) is a body followed by the 32-byte BLAKE3 of the
body, so each record verifies on its own, and that hash is what the next checkpoint
chains to. Two layouts:

    "SVR1" body hash                          the body holds everything
    "SVR2" u32 length, payload, body, hash    the payload (an envelope) is outside the
                                              hash: the body names its digest instead

In the second, the payload can be re-encoded (compressed against a later dictionary)
without changing the record's hash: the chain stays intact, and the payload is
checked by its own CRC and digest.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from statevault.codec import compression as comp
from statevault.codec.digest import DIGEST_SIZE, digest, hasher
from statevault.errors import CorruptionError, UnsupportedFormatError

MAGIC = b"SV"
FORMAT_VERSION = 1
DICTIONARY_FORMAT_VERSION = 2
"""Envelopes compressed against a dictionary; every other envelope is still written as 1."""
NEWEST_FORMAT_VERSION = DICTIONARY_FORMAT_VERSION
ENCODING_MSGPACK = 1
"""A whole value (vault format 1 roots; still read)."""
ENCODING_TREE = 2
"""A state-tree node: MessagePack `[child digests, value]`, see `statevault.tree`."""
ENCODING_RAW = 3
"""Raw bytes: one chunk of a large `bytes` value or array buffer."""
ENCODINGS = frozenset({ENCODING_MSGPACK, ENCODING_TREE, ENCODING_RAW})

_HEADER = struct.Struct("<2sBBBBIQQ")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _CRC.size
_FRAME = struct.Struct("<2sBBBBIQQI")
"""The header and its CRC, read in one call."""

SEAL_MAGIC = b"SVR1"
SEAL_MAGIC_PAYLOAD = b"SVR2"
_PAYLOAD_LENGTH = struct.Struct("<I")

Dictionaries = Callable[[bytes], comp.ContentDictionary]
"""Turns a dictionary node's digest into its content (raising CorruptionError if it
cannot be read or verified)."""


@dataclass(frozen=True, slots=True)
class Packed:
    """An encoded object ready to store: its digest, stored bytes and raw size."""

    digest: bytes
    data: bytes
    raw_size: int


def pack(
    raw: bytes | memoryview,
    compression: comp.Compression,
    *,
    encoding: int = ENCODING_MSGPACK,
    key: bytes | None = None,
    large: bool | None = None,
) -> Packed:
    """Digest (unless `key` is already known), compress and frame `raw` bytes.

    `large`: see `Compression.compress`.
    """
    if key is None:
        key = digest(raw)
    cid, payload = compression.compress(raw, large=large)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, encoding, cid, 0, 0, len(raw), len(payload))
    crc = zlib.crc32(payload, zlib.crc32(header))
    return Packed(key, b"".join((header, _CRC.pack(crc), payload)), len(raw))


def pack_against(
    raw: bytes | memoryview,
    *,
    key: bytes,
    reference: bytes,
    dictionary: comp.ContentDictionary,
    encoding: int = ENCODING_MSGPACK,
) -> Packed:
    """Frame `raw` (whose digest is `key`) compressed against the dictionary whose node
    digest is `reference`."""
    payload = reference + dictionary.compress(raw)
    header = _HEADER.pack(
        MAGIC,
        DICTIONARY_FORMAT_VERSION,
        encoding,
        comp.ZSTD_DICTIONARY,
        0,
        0,
        len(raw),
        len(payload),
    )
    crc = zlib.crc32(payload, zlib.crc32(header))
    return Packed(key, b"".join((header, _CRC.pack(crc), payload)), len(raw))


@dataclass(frozen=True, slots=True)
class Frame:
    """An envelope's header fields, after its frame was checked (CRC, lengths, ids)."""

    version: int
    encoding: int
    compression: int
    raw_length: int


def check_frame(
    data: bytes | memoryview, hexdigest: str | None = None, *, crc: int | None = None
) -> Frame:
    """Check an envelope's header, CRC and lengths without decompressing it.

    Args:
        crc: the CRC-32 of the header's first 26 bytes and the payload, if the caller
            computed it already (in windows, `unpack_mapped`); else computed here.

    Raises:
        CorruptionError: the bytes are not a well-formed envelope.
        UnsupportedFormatError: written by a newer format version.
    """
    if len(data) < HEADER_SIZE:
        raise CorruptionError(
            f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header",
            digest=hexdigest,
        )
    magic, version, encoding, cid, flags, dict_id, raw_length, payload_length, stored_crc = (
        _FRAME.unpack_from(data)
    )
    if magic != MAGIC:
        raise CorruptionError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}", digest=hexdigest)
    if crc is None:
        view = memoryview(data)
        crc = zlib.crc32(view[HEADER_SIZE:], zlib.crc32(view[: _HEADER.size]))
    if crc != stored_crc:
        raise CorruptionError("fails its CRC-32 (the stored bytes changed)", digest=hexdigest)
    # Checked after the CRC, so a flipped version byte reads as damage, not as a newer
    # format (a vault with newer objects also has a newer vault format, refused on open).
    if version > NEWEST_FORMAT_VERSION:
        raise UnsupportedFormatError(found=version, supported=NEWEST_FORMAT_VERSION, what="object")
    if version == 0:
        raise CorruptionError("format version 0 does not exist", digest=hexdigest)
    if encoding not in ENCODINGS or flags != 0:
        raise CorruptionError(f"unknown encoding {encoding} or flags {flags}", digest=hexdigest)
    if len(data) - HEADER_SIZE != payload_length:
        raise CorruptionError(
            f"payload is {len(data) - HEADER_SIZE} bytes, the header says {payload_length} "
            f"(truncated or extended)",
            digest=hexdigest,
        )
    if dict_id != 0:
        raise CorruptionError(f"unknown compression dictionary {dict_id}", digest=hexdigest)
    if (cid == comp.ZSTD_DICTIONARY) != (version >= DICTIONARY_FORMAT_VERSION):
        raise CorruptionError(
            f"compression id {cid} does not belong to envelope version {version}",
            digest=hexdigest,
        )
    if cid == comp.ZSTD_DICTIONARY and payload_length < DIGEST_SIZE:
        raise CorruptionError("names no dictionary", digest=hexdigest)
    return Frame(version, encoding, cid, raw_length)


def dictionary_reference(data: bytes | memoryview) -> bytes | None:
    """The dictionary node digest an envelope names (None for most envelopes).

    Raises:
        CorruptionError: the envelope's frame is damaged.
    """
    frame = check_frame(data)
    if frame.compression != comp.ZSTD_DICTIONARY:
        return None
    return bytes(data[HEADER_SIZE : HEADER_SIZE + DIGEST_SIZE])


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A verified object: its encoding id and raw bytes."""

    encoding: int
    raw: bytes | memoryview


def unpack(
    data: bytes | memoryview,
    expected_digest: bytes,
    *,
    dictionaries: Dictionaries | None = None,
) -> Unpacked:
    """Parse, decompress and verify an envelope against the digest it is stored under.

    Args:
        dictionaries: resolves the dictionary an envelope of version 2 names; without
            it, such an envelope is refused (where none is ever written, it is damage).

    Raises:
        CorruptionError: the bytes are not an envelope, do not decompress, or fail
            the digest (the error names the object).
        UnsupportedFormatError: written by a newer format version.
    """
    try:
        frame = check_frame(data)
    except CorruptionError as exc:
        raise CorruptionError(exc.detail, digest=expected_digest.hex()) from exc
    view = memoryview(data)[HEADER_SIZE:]
    dictionary = None
    if frame.compression == comp.ZSTD_DICTIONARY:
        if dictionaries is None:
            raise CorruptionError(
                "is compressed against a dictionary, which objects of this kind never are",
                digest=expected_digest.hex(),
            )
        dictionary = dictionaries(bytes(view[:DIGEST_SIZE]))
        view = view[DIGEST_SIZE:]
    try:
        raw = comp.decompress(frame.compression, view, frame.raw_length, dictionary=dictionary)
    except CorruptionError as exc:
        raise CorruptionError(exc.detail, digest=expected_digest.hex()) from exc
    actual = digest(raw)
    if actual != expected_digest:
        raise _wrong_digest(len(data), frame.raw_length, expected_digest.hex(), actual)
    return Unpacked(frame.encoding, raw)


def _wrong_digest(stored: int, raw: int, hexdigest: str, actual: bytes) -> CorruptionError:
    return CorruptionError(
        f"fails its digest (stored {stored} bytes, {raw} raw; expected BLAKE3 "
        f"{hexdigest[:8]}…, found {actual.hex()[:8]}…)",
        digest=hexdigest,
    )


_MAPPED_WINDOW = 16 << 20
"""How much of a mapped object `unpack_mapped` checks before it lets the pages go."""


def unpack_mapped(
    data: memoryview,
    expected_digest: bytes,
    *,
    release: Callable[[int, int], None] | None = None,
) -> Unpacked | None:
    """An object stored uncompressed, its raw bytes a view of `data` (no copy), checked
    as `unpack` checks every object: header, CRC-32, lengths and digest.

    The CRC and the digest are computed in one pass of 16 MiB windows, and
    `release(offset, length)` is called after each window: a caller reading `data`
    through a memory map can let those pages go, so that checking a large object does
    not keep all of it in memory.

    Returns None when the object is compressed (or too short to say): `unpack` it.

    Raises:
        CorruptionError: as `unpack`.
    """
    if len(data) < HEADER_SIZE or data[4] != comp.NONE:
        return None
    crc = zlib.crc32(data[: _HEADER.size])
    hashed = hasher()
    for start in range(HEADER_SIZE, len(data), _MAPPED_WINDOW):
        window = data[start : start + _MAPPED_WINDOW]
        crc = zlib.crc32(window, crc)
        hashed.update(window)
        if release is not None:
            release(start, len(window))
    hexdigest = expected_digest.hex()
    frame = check_frame(data, hexdigest, crc=crc)
    raw = data[HEADER_SIZE:]
    if frame.raw_length != len(raw):
        raise CorruptionError(
            f"payload decompresses to {len(raw)} bytes, the envelope says {frame.raw_length}",
            digest=hexdigest,
        )
    actual = hashed.digest()
    if actual != expected_digest:
        raise _wrong_digest(len(data), frame.raw_length, hexdigest, actual)
    return Unpacked(frame.encoding, raw)


def seal(body: bytes) -> bytes:
    """Frame a record body with its BLAKE3 so it can be verified alone."""
    return SEAL_MAGIC + body + digest(body)


def unseal(sealed: bytes) -> tuple[bytes, bytes]:
    """Return (body, hash) of a sealed record after checking it.

    Raises:
        CorruptionError: too short, wrong magic, or the hash does not match.
    """
    if len(sealed) < len(SEAL_MAGIC) + DIGEST_SIZE or not sealed.startswith(SEAL_MAGIC):
        raise CorruptionError(f"record is not sealed ({len(sealed)} bytes, bad header)")
    body = sealed[len(SEAL_MAGIC) : -DIGEST_SIZE]
    stored = sealed[-DIGEST_SIZE:]
    if digest(body) != stored:
        raise CorruptionError("record fails its checksum")
    return body, stored


def seal_with_payload(body: bytes, payload: bytes) -> bytes:
    """Seal a record body, carrying `payload` beside it, outside the hash."""
    return b"".join(
        (SEAL_MAGIC_PAYLOAD, _PAYLOAD_LENGTH.pack(len(payload)), payload, body, digest(body))
    )


def unseal_with_payload(sealed: bytes) -> tuple[bytes, bytes, bytes]:
    """Return (body, hash, payload) of a record sealed by `seal_with_payload`.

    Only the body is checked here; the payload is checked where it is used.

    Raises:
        CorruptionError: too short, wrong magic, or the hash does not match.
    """
    start = len(SEAL_MAGIC_PAYLOAD) + _PAYLOAD_LENGTH.size
    if len(sealed) < start + DIGEST_SIZE or not sealed.startswith(SEAL_MAGIC_PAYLOAD):
        raise CorruptionError(f"record is not sealed ({len(sealed)} bytes, bad header)")
    (length,) = _PAYLOAD_LENGTH.unpack_from(sealed, len(SEAL_MAGIC_PAYLOAD))
    if start + length + DIGEST_SIZE > len(sealed):
        raise CorruptionError(f"record is truncated (its payload is {length} bytes)")
    payload = sealed[start : start + length]
    body = sealed[start + length : -DIGEST_SIZE]
    stored = sealed[-DIGEST_SIZE:]
    if digest(body) != stored:
        raise CorruptionError("record fails its checksum")
    return body, stored, payload


def replace_payload(sealed: bytes, payload: bytes) -> bytes:
    """A record sealed by `seal_with_payload` with another payload (same body, same hash)."""
    start = len(SEAL_MAGIC_PAYLOAD) + _PAYLOAD_LENGTH.size
    (length,) = _PAYLOAD_LENGTH.unpack_from(sealed, len(SEAL_MAGIC_PAYLOAD))
    return b"".join(
        (SEAL_MAGIC_PAYLOAD, _PAYLOAD_LENGTH.pack(len(payload)), payload, sealed[start + length :])
    )
