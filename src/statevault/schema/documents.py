"""Schema documents: the JSON Schema of each (name, version) a vault has used.

A vault stores one document per (name, version) the first time a state is saved
with it, so that the vault explains its own data without the code that wrote it.
A document is sealed (BLAKE3, like checkpoint records) and kept in the vault's
metadata under `schema:<name>:<version>`.
Each carries the fingerprint of its shape (`statevault.schema.shape`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import msgspec

from statevault.codec.envelope import seal, unseal
from statevault.errors import CorruptionError, UnsupportedFormatError
from statevault.schema.types import Schema, type_name

DOCUMENT_VERSION = 1
KEY_PREFIX = "schema:"


class SchemaDocument(msgspec.Struct, frozen=True, kw_only=True):
    """A schema as a vault stores it: what `vault.stored_schemas()` returns.

    Attributes:
        name: the schema's name.
        version: its version.
        fingerprint: BLAKE3 (hex) of the shape (see the module docstring).
        kind: the kind of type it came from: "struct", "dataclass", "pydantic", "typeddict".
        type_name: the type it came from, as `module:QualName` (for people; loading
            never imports it).
        json_schema_text: the JSON Schema as JSON text; `json_schema` parses it.
        stored_ns: when it was stored, nanoseconds since the Unix epoch (UTC).
        v: the document format version.
    """

    v: int = DOCUMENT_VERSION
    name: str
    version: int
    fingerprint: str
    kind: str
    type_name: str
    json_schema_text: str
    stored_ns: int = 0

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema (a new dict each time)."""
        value: dict[str, Any] = json.loads(self.json_schema_text)
        return value

    @property
    def stored_at(self) -> dt.datetime:
        """When the document was stored (UTC)."""
        return dt.datetime.fromtimestamp(self.stored_ns / 1e9, tz=dt.UTC)


_decoder = msgspec.msgpack.Decoder(SchemaDocument)


def document_key(name: str, version: int) -> str:
    """The metadata key of a document (the version, after the last colon, is digits)."""
    return f"{KEY_PREFIX}{name}:{version}"


def document_for(schema: Schema) -> SchemaDocument:
    """A new document for a registered schema, stamped now."""
    return SchemaDocument(
        name=schema.name,
        version=schema.version,
        fingerprint=schema.fingerprint,
        kind=schema.kind,
        type_name=type_name(schema.type),
        json_schema_text=json.dumps(schema.json_schema, sort_keys=True, indent=None),
        stored_ns=time.time_ns(),
    )


def encode_document(document: SchemaDocument) -> bytes:
    """The sealed bytes a vault stores."""
    return seal(msgspec.msgpack.encode(document))


def decode_document(key: str, sealed: bytes) -> SchemaDocument:
    """A stored document, verified.

    Raises:
        CorruptionError: the bytes fail their hash or do not decode.
        UnsupportedFormatError: a newer statevault wrote the document.
    """
    try:
        body, _ = unseal(sealed)
        document = _decoder.decode(body)
    except CorruptionError as exc:
        raise CorruptionError(f"stored schema {key!r}: {exc.detail}") from None
    except msgspec.DecodeError as exc:
        raise CorruptionError(f"stored schema {key!r} does not decode ({exc})") from None
    if document.v > DOCUMENT_VERSION:
        raise UnsupportedFormatError(
            found=document.v, supported=DOCUMENT_VERSION, what="stored schema document"
        )
    if document_key(document.name, document.version) != key:
        raise CorruptionError(
            f"stored schema {key!r} holds {document.name!r} version {document.version}"
        )
    return document
