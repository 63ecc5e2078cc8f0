"""Every backend runs the shipped conformance suite: ten lines each."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

from statevault.backends.base import Backend
from statevault.backends.files import FilesBackend
from statevault.backends.memory import MemoryBackend
from statevault.backends.sqlite import SqliteBackend
from statevault.testing import BackendConformance, VaultConformance


class TestSqliteBackend(BackendConformance):
    def open_backend(self, location: pathlib.Path, *, initial_meta: Mapping[str, bytes]) -> Backend:
        return SqliteBackend(str(location), initial_meta=initial_meta)


class TestFilesBackend(BackendConformance):
    def open_backend(self, location: pathlib.Path, *, initial_meta: Mapping[str, bytes]) -> Backend:
        return FilesBackend(str(location), initial_meta=initial_meta)


class TestMemoryBackend(BackendConformance):
    reopens = False

    def open_backend(self, location: pathlib.Path, *, initial_meta: Mapping[str, bytes]) -> Backend:
        return MemoryBackend(initial_meta=initial_meta)


class TestSqliteVault(VaultConformance):
    def vault_url(self, location: pathlib.Path) -> str:
        return f"sqlite://{location}.db"


class TestFilesVault(VaultConformance):
    def vault_url(self, location: pathlib.Path) -> str:
        return f"files://{location}"


class TestMemoryVault(VaultConformance):
    multi_process = False
    persistent = False

    def vault_url(self, location: pathlib.Path) -> str:
        return "memory://"
