"""Every backend runs the shipped conformance suite: ten lines each."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Mapping

import pytest

from postgres_support import drop_pg_schema, pg_schema_for, pg_url, require_postgres
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


class TestFilesLayout1Backend(BackendConformance):
    """Vaults made by releases before files layout 2 keep being read and written as they are."""

    def open_backend(self, location: pathlib.Path, *, initial_meta: Mapping[str, bytes]) -> Backend:
        return FilesBackend(str(location), initial_meta=initial_meta, layout=1)


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


@pytest.mark.postgres
class TestPostgresBackend(BackendConformance):
    @pytest.fixture
    def location(self, tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
        require_postgres()
        location = tmp_path / "vault"
        yield location
        drop_pg_schema(pg_schema_for(str(location)))

    def open_backend(self, location: pathlib.Path, *, initial_meta: Mapping[str, bytes]) -> Backend:
        from statevault.backends.postgres import PostgresBackend  # noqa: PLC0415 - optional

        return PostgresBackend(pg_url(pg_schema_for(str(location))), initial_meta=initial_meta)


@pytest.mark.postgres
class TestPostgresVault(VaultConformance):
    @pytest.fixture
    def url(self, pg_schema: str) -> str:
        return pg_url(pg_schema)

    def vault_url(self, location: pathlib.Path) -> str:
        raise AssertionError("the url fixture gives each test a schema of its own")
