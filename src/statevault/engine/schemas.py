"""Schema documents in the vault: stored on first use, compared on every first use after.

Documents live in the backend's metadata (every backend has it, so this works the
same on all of them). They are written once per (name, version) and never replaced:
a type registered under a version the vault already holds must have the same
fingerprint, or it is refused with a request to bump the version.

Why metadata and not objects: documents are few and small, they must survive garbage
collection without being referenced from any checkpoint, and metadata is read in one
call. Backends offer no compare-and-swap on metadata, so two processes storing
different types under one new (name, version) at the same moment could both pass the
check; each re-reads after writing, so at least the one whose write lost sees the
mismatch at once, and every later use by either sees it.
"""

from __future__ import annotations

import threading

from statevault.backends.base import Backend
from statevault.errors import CorruptionError, SchemaError, UnsupportedFormatError, short_digest
from statevault.schema.documents import (
    KEY_PREFIX,
    SchemaDocument,
    decode_document,
    document_for,
    document_key,
    encode_document,
)
from statevault.schema.types import Schema, type_name


class SchemaStore:
    """The schema documents of one vault, with a cache of the ones this handle checked."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._confirmed: dict[tuple[str, int], str] = {}
        """(name, version) -> fingerprint known to be stored, or to match the stored one."""
        self._checked: dict[tuple[str, int], str] = {}
        """(name, version) -> fingerprint known to match (or to be absent) at last look."""
        self._lock = threading.Lock()

    def documents(self) -> list[SchemaDocument]:
        """Every stored document, sorted by name and version.

        Raises:
            CorruptionError: a stored document fails its hash or does not decode.
        """
        meta = self._backend.get_meta()
        found = [decode_document(key, value) for key, value in meta.items() if _is_key(key)]
        return sorted(found, key=lambda d: (d.name, d.version))

    def document(self, name: str, version: int) -> SchemaDocument | None:
        key = document_key(name, version)
        sealed = self._backend.get_meta().get(key)
        return None if sealed is None else decode_document(key, sealed)

    def check(self, schema: Schema) -> None:
        """Refuse `schema` if the vault stored another shape under its (name, version).

        Reads the vault once per (name, version) and handle; writes nothing.

        Raises:
            SchemaError: the fingerprints differ.
        """
        key = (schema.name, schema.version)
        fingerprint = schema.fingerprint
        if self._confirmed.get(key) == fingerprint or self._checked.get(key) == fingerprint:
            return
        stored = self.document(schema.name, schema.version)
        if stored is not None:
            _compare(stored, schema, fingerprint)
            self._confirmed[key] = fingerprint
        else:
            self._checked[key] = fingerprint

    def ensure(self, schema: Schema) -> None:
        """Store `schema`'s document unless the vault has it; refuse a different shape.

        Called before the first commit with a (name, version) in this handle, so every
        stored state's schema is explained by a stored document.

        Raises:
            SchemaError: the vault stored another shape under this (name, version).
        """
        key = (schema.name, schema.version)
        fingerprint = schema.fingerprint
        if self._confirmed.get(key) == fingerprint:
            return
        with self._lock:
            stored = self.document(schema.name, schema.version)
            if stored is None:
                document = document_for(schema)
                self._backend.set_meta(document_key(*key), encode_document(document))
                stored = self.document(schema.name, schema.version)
                assert stored is not None
            _compare(stored, schema, fingerprint)
            self._confirmed[key] = fingerprint


def damaged_documents(backend: Backend) -> list[tuple[str, str]]:
    """(metadata key, what is wrong) for each stored schema document that fails to verify."""
    found = []
    for key, value in backend.get_meta().items():
        if not _is_key(key):
            continue
        try:
            decode_document(key, value)
        except (CorruptionError, UnsupportedFormatError) as exc:
            found.append((key, str(exc)))
    return sorted(found)


def _is_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and key.rpartition(":")[2].isdigit()


def _compare(stored: SchemaDocument, schema: Schema, fingerprint: str) -> None:
    if stored.fingerprint == fingerprint:
        return
    name, version = schema.name, schema.version
    raise SchemaError(
        f"schema {name!r} version {version} differs from the one this vault stored: the "
        f"vault's came from {stored.type_name} (fingerprint {short_digest(stored.fingerprint)}, "
        f"stored {stored.stored_at:%Y-%m-%d %H:%M} UTC), the one registered now from "
        f"{type_name(schema.type)} (fingerprint {short_digest(fingerprint)}). A changed type "
        f"needs a new version: register it as version {version + 1} and add a migration "
        f"(`@vault.migration({name!r}, {version}, {version + 1})`). "
        f"`statevault schema show PATH {name} --version {version}` prints the stored one.",
        schema=name,
        version=version,
    )
