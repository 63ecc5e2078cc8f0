"""Shared fixtures: one vault fixture parametrized over every backend."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

import statevault

BACKENDS = ["sqlite", "files", "memory"]


def url_for(kind: str, location: pathlib.Path) -> str:
    """A vault URL of backend `kind` at `location` (ignored for memory)."""
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
def vault_url(backend_kind: str, tmp_path: pathlib.Path) -> str:
    return url_for(backend_kind, tmp_path / "vault")


@pytest.fixture
def vault(vault_url: str) -> Iterator[statevault.Vault]:
    with statevault.open(vault_url) as v:
        yield v
