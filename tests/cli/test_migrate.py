"""`statevault migrate`: a module registers the schema; every run is migrated, or not."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import textwrap

import msgspec
import pytest
from typer.testing import CliRunner

import statevault
from statevault.cli.app import app

runner = CliRunner(env={"COLUMNS": "200"})

MODULE = """
import msgspec
import statevault

NAME = "order-" + __name__  # module-level registrations outlive a test: one name each


class OrderV1(msgspec.Struct):
    id: str
    total: float


class OrderV2(msgspec.Struct):
    id: str
    total_cents: int


statevault.schema(NAME, OrderV1, version=1)
statevault.schema(NAME, OrderV2, version=2)


@statevault.migration(NAME, 1, 2)
def cents(state):
    if state["total"] < 0:
        raise ValueError("a negative total")
    state["total_cents"] = round(state.pop("total") * 100)
    return state


def register(vault):
    @vault.migration(NAME, 2, 1)
    def back(state):
        state["total"] = state.pop("total_cents") / 100
        return state
"""


class OrderV1(msgspec.Struct):
    id: str
    total: float


@dataclasses.dataclass(frozen=True)
class Project:
    path: str
    module: str
    schema: str


@pytest.fixture
def project(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Project:
    """A vault with runs at version 1, and the module that migrates them, in the cwd."""
    module = "cli_migrations_" + re.sub(r"\W", "_", request.node.name)
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "v.db")
    schema = f"order-{module}"
    with statevault.open(path) as vault:
        vault.schema(schema, OrderV1, version=1)
        for i, total in enumerate([1.5, 2.25, -1.0]):
            vault.run(f"o-{i}", schema=schema).save(OrderV1(f"o-{i}", total))
    return Project(path, module, schema)


def test_dry_run_then_migrate_then_back(project: Project) -> None:
    args = ["migrate", project.path, project.schema, "--module", project.module]
    result = runner.invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 1, result.output  # one run fails: exit 1, as damage does
    assert "2 would be migrated, 0 already current, 1 failed, 0 skipped" in result.output
    assert "o-2" in result.output
    assert "a negative total" in result.output
    with statevault.open(project.path) as vault:
        assert all(vault.run(r).head.schema_version == 1 for r in vault.runs())  # type: ignore[union-attr]

    result = runner.invoke(app, [*args, "--to", "2", "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.output)
    assert [r["run_id"] for r in summary["migrated"]] == ["o-0", "o-1"]
    assert [r["run_id"] for r in summary["failed"]] == ["o-2"]
    with statevault.open(project.path) as vault:
        assert vault.run("o-0").load() == {"id": "o-0", "total_cents": 150}
        assert vault.run("o-2").load() == {"id": "o-2", "total": -1.0}

    # Down again through the step the module's register(vault) added.
    result = runner.invoke(app, [*args, "--to", "1", "--runs", "o-0"])
    assert result.exit_code == 0, result.output
    assert "1 migrated" in result.output
    with statevault.open(project.path) as vault:
        assert vault.run("o-0").load() == {"id": "o-0", "total": 1.5}

    result = runner.invoke(app, [*args, "--undo", "--runs", "o-1"])
    assert result.exit_code == 0, result.output
    assert "1 restored" in result.output
    with statevault.open(project.path) as vault:
        assert vault.run("o-1").load() == {"id": "o-1", "total": 2.25}


def test_a_module_that_does_not_import_is_a_usage_error(project: Project) -> None:
    result = runner.invoke(
        app, ["migrate", project.path, project.schema, "--module", "no_such_mod_xyz"]
    )
    assert result.exit_code == 2
    assert "cannot import --module 'no_such_mod_xyz'" in result.output


def test_an_unknown_target_version_is_a_usage_error(project: Project) -> None:
    result = runner.invoke(
        app, ["migrate", project.path, project.schema, "--module", project.module, "--to", "9"]
    )
    assert result.exit_code == 2
    assert "no type is registered for schema" in result.output
    assert "version 9" in result.output
