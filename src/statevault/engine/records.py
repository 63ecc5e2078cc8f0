"""Checkpoint records: what the engine stores for each checkpoint, and how.

A record is a msgspec Struct encoded as MessagePack and sealed with its BLAKE3
(`codec.envelope.seal`). Each record names the hash of its parent's sealed bytes,
so history is a hash chain: a record reordered, replaced or dropped from the
middle is caught by `verify`.

Record version 1 (vault formats 1 and 2) seals everything, its inline envelope
included. Version 2 (vault format 3) seals the body without the inline envelope and
carries the envelope beside it (`seal_with_payload`): the body names the envelope's
digest (`root`), so the hash still covers its content, and the envelope can be
re-encoded later (a delta compressed against the fold that followed it) without
touching the chain. A version-2 record's envelope is frame-checked (CRC) when the
record is opened, so damage to any byte of a record is still reported as damage to
the record.
"""

from __future__ import annotations

import msgspec

from statevault.codec.envelope import (
    SEAL_MAGIC_PAYLOAD,
    check_frame,
    replace_payload,
    seal,
    seal_with_payload,
    unseal,
    unseal_with_payload,
)
from statevault.errors import CorruptionError, UnsupportedFormatError

RECORD_VERSION = 2
"""The newest record version this code reads; `record_version` says which it writes."""

SchemaTag = tuple[str, int]
"""(schema name, version) of a schema-bound state."""


class CheckpointRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One checkpoint as stored. Field names are short: there is one per checkpoint.

    Attributes:
        v: record format version (1 or 2, see the module docstring).
        run: the run id (a record copied into another run is detected).
        seq: 1, 2, 3... per run.
        parent: the previous checkpoint's seq (0 for the first).
        parent_hash: BLAKE3 of the previous record's sealed bytes (empty for the first).
        kind: "state" (a whole state), "delta" (operations on the previous entry's
            state) or "fold" (a state written by the checkpoint policy).
        root: digest of the state's root object; for a delta, of its operations.
        inline: the root object's envelope, when it is small enough to live here; for
            a delta, the envelope of its operations (always inline).
        created_ns: commit time, nanoseconds since the Unix epoch (UTC).
        meta: the user's metadata, encoded by the value codec.
        raw_bytes: encoded (uncompressed) size of the state.
        stored_bytes: bytes this checkpoint added to storage.
        schema: the name of the schema the state was saved with, or None (no schema).
            Added compatibly: older records lack it and older readers ignore it.
        schema_version: that schema's version (0 when there is no schema). For a delta,
            the version of the state its operations apply to.
    """

    v: int = 1
    run: str
    seq: int
    parent: int = 0
    parent_hash: bytes = b""
    kind: str = "state"
    root: bytes
    inline: bytes | None = None
    created_ns: int
    meta: bytes = b""
    raw_bytes: int
    stored_bytes: int
    schema: str | None = None
    schema_version: int = 0

    @property
    def schema_tag(self) -> SchemaTag | None:
        """(schema name, version) the entry was written with, or None."""
        return None if self.schema is None else (self.schema, self.schema_version)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CheckpointRecord)


def record_version(format_version: int) -> int:
    """The record version a vault of `format_version` writes."""
    return 2 if format_version >= 3 else 1


def seal_record(record: CheckpointRecord) -> tuple[bytes, bytes]:
    """(sealed bytes, record hash) of a record, in the layout of its version `v`."""
    if record.v >= 2:
        inline = record.inline or b""
        sealed = seal_with_payload(
            _encoder.encode(msgspec.structs.replace(record, inline=None)), inline
        )
    else:
        sealed = seal(_encoder.encode(record))
    return sealed, sealed[-32:]


def reseal_inline(sealed: bytes, inline: bytes) -> bytes:
    """A version-2 record's bytes with another inline envelope: same body, same hash.

    The caller guarantees that `inline` holds the same raw bytes (the body's `root`).
    """
    if not sealed.startswith(SEAL_MAGIC_PAYLOAD):
        raise ValueError("only a version-2 record carries its inline envelope outside its hash")
    return replace_payload(sealed, inline)


def open_record(
    sealed: bytes, *, run_id: str, seq: int, check_payload: bool = True
) -> tuple[CheckpointRecord, bytes]:
    """Verify and decode a stored record; returns (record, record hash).

    Args:
        check_payload: frame-check a version-2 record's inline envelope here. False
            leaves it to `envelope.unpack`, which checks it again wherever it is used:
            for a load, which unpacks every envelope it uses and would check each twice.

    Raises:
        CorruptionError: the record fails its checksum, does not decode, or belongs
            to another run or position.
        UnsupportedFormatError: the record was written by a newer format.
    """
    payload: bytes | None = None
    try:
        if sealed.startswith(SEAL_MAGIC_PAYLOAD):
            body, record_hash, payload = unseal_with_payload(sealed)
            if payload and check_payload:
                check_frame(payload)
        else:
            body, record_hash = unseal(sealed)
    except CorruptionError as exc:
        raise CorruptionError(exc.detail, run_id=run_id, seq=seq) from exc
    try:
        record = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        version = _peek_version(body)
        if version is not None and version > RECORD_VERSION:
            raise UnsupportedFormatError(
                found=version, supported=RECORD_VERSION, what="checkpoint record"
            ) from exc
        raise CorruptionError(f"record does not decode ({exc})", run_id=run_id, seq=seq) from exc
    if record.v > RECORD_VERSION:
        raise UnsupportedFormatError(
            found=record.v, supported=RECORD_VERSION, what="checkpoint record"
        )
    if (payload is not None) != (record.v >= 2) or (payload is not None and record.inline):
        raise CorruptionError(
            f"record of version {record.v} in the wrong layout", run_id=run_id, seq=seq
        )
    if record.kind not in ("state", "delta", "fold"):
        raise CorruptionError(f"record of unknown kind {record.kind!r}", run_id=run_id, seq=seq)
    if record.run != run_id or record.seq != seq:
        raise CorruptionError(
            f"record belongs to run {record.run!r} checkpoint {record.seq}, not here",
            run_id=run_id,
            seq=seq,
        )
    if payload:
        record = msgspec.structs.replace(record, inline=payload)
    return record, record_hash


def _peek_version(body: bytes) -> int | None:
    try:
        loose = msgspec.msgpack.decode(body)
    except msgspec.DecodeError:
        return None
    version = loose.get("v") if isinstance(loose, dict) else None
    return version if isinstance(version, int) else None
