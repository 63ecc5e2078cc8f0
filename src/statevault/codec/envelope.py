"""Envelopes: the bytes an object is stored as, and sealed records.

An object envelope is a fixed 30-byte header and the (maybe compressed) payload:

    offset  size  field
    0       2     magic b"SV"
    2       1     format version (1)
    3       1     encoding id (1 value, 2 tree node, 3 raw bytes)
    4       1     compression id (0 none, 1 zstd, 2 lz4)
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
A sealed record (checkpoint records, small metadata) is a body followed by the
32-byte BLAKE3 of the body, so each record verifies on its own, and that hash is
what the next checkpoint chains to.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from statevault.codec import compression as comp
from statevault.codec.digest import DIGEST_SIZE, digest
from statevault.errors import CorruptionError, UnsupportedFormatError

MAGIC = b"SV"
FORMAT_VERSION = 1
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

SEAL_MAGIC = b"SVR1"


@dataclass(frozen=True, slots=True)
class Packed:
    """An encoded object ready to store: its digest, stored bytes and raw size."""

    digest: bytes
    data: bytes
    raw_size: int


def pack(
    raw: bytes,
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


@dataclass(frozen=True, slots=True)
class Unpacked:
    """A verified object: its encoding id and raw bytes."""

    encoding: int
    raw: bytes | memoryview


def unpack(data: bytes | memoryview, expected_digest: bytes) -> Unpacked:
    """Parse, decompress and verify an envelope against the digest it is stored under.

    Raises:
        CorruptionError: the bytes are not an envelope, do not decompress, or fail
            the digest (the error names the object).
        UnsupportedFormatError: written by a newer format version.
    """
    hexdigest = expected_digest.hex()
    if len(data) < HEADER_SIZE:
        raise CorruptionError(
            f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header",
            digest=hexdigest,
        )
    magic, version, encoding, cid, flags, dict_id, raw_length, payload_length = _HEADER.unpack_from(
        data
    )
    if magic != MAGIC:
        raise CorruptionError(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}", digest=hexdigest)
    (stored_crc,) = _CRC.unpack_from(data, _HEADER.size)
    view = memoryview(data)
    if zlib.crc32(view[HEADER_SIZE:], zlib.crc32(view[: _HEADER.size])) != stored_crc:
        raise CorruptionError("fails its CRC-32 (the stored bytes changed)", digest=hexdigest)
    # Checked after the CRC, so a flipped version byte reads as damage, not as a newer
    # format (a vault with newer objects also has a newer vault format, refused on open).
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(found=version, supported=FORMAT_VERSION, what="object")
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
    try:
        raw = comp.decompress(cid, view[HEADER_SIZE:], raw_length)
    except CorruptionError as exc:
        raise CorruptionError(exc.detail, digest=hexdigest) from exc
    actual = digest(raw)
    if actual != expected_digest:
        raise CorruptionError(
            f"fails its digest (stored {len(data)} bytes, {raw_length} raw; expected BLAKE3 "
            f"{hexdigest[:8]}…, found {actual.hex()[:8]}…)",
            digest=hexdigest,
        )
    return Unpacked(encoding, raw)


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
