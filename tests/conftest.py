"""Shared fixtures: one vault fixture parametrized over every backend."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

import statevault
from postgres_support import drop_pg_schema, pg_schema_for, pg_url, require_postgres

BACKENDS = [
    "sqlite",
    "files",
    "memory",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture
def pg_schema(tmp_path: pathlib.Path) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards; skips when there is no server."""
    require_postgres()
    schema = pg_schema_for(str(tmp_path))
    drop_pg_schema(schema)
    yield schema
    drop_pg_schema(schema)


def url_for(kind: str, location: pathlib.Path) -> str:
    """A vault URL of backend `kind` at `location` (ignored for memory; see `vault_url`
    for postgres, whose schema a fixture makes and drops)."""
    if kind == "sqlite":
        return str(location.with_suffix(".db"))
    if kind == "files":
        return f"files://{location}"
    return "memory://"


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def vault_url(backend_kind: str, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> str:
    if backend_kind == "postgres":
        return pg_url(request.getfixturevalue("pg_schema"))
    return url_for(backend_kind, tmp_path / "vault")


@pytest.fixture
def vault(vault_url: str) -> Iterator[statevault.Vault]:
    with statevault.open(vault_url) as v:
        yield v
