"""`statevault schema ...`: the schema documents a vault stores, without the code.

Every command here reads through the public API (`Vault.stored_schemas`,
`Vault.stored_schema`, and `statevault.schema_tools` for what is derived from a
document) and never creates or changes a vault. `show` prints a document in one of
the formats in `SHOW_FORMATS`; a new format is one more entry there. `diff` compares
a stored document with a type in the code and proposes the migration between them.
"""

from __future__ import annotations

import json as jsonlib
import pathlib
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

import statevault
from statevault.cli.common import (
    JsonOpt,
    VaultArg,
    clean_errors,
    fail,
    import_user_module,
    new_app,
    open_for_reading,
    short,
    stdout,
)

schema_app = new_app(
    "schema",
    "List and print the schemas a vault stores (JSON Schema of each version used).",
)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The schema's name.")]


def _json_schema_text(document: statevault.SchemaDocument) -> str:
    return jsonlib.dumps(document.json_schema, indent=2, sort_keys=True)


def _typescript_text(document: statevault.SchemaDocument) -> str:
    from statevault.schema_tools import to_typescript  # noqa: PLC0415 - loaded on use

    return to_typescript(document.json_schema, document.name, version=document.version)


SHOW_FORMATS: dict[str, Callable[[statevault.SchemaDocument], str]] = {
    "json-schema": _json_schema_text,
    "typescript": _typescript_text,
}
"""What `schema show --format F` prints: F -> the text of one stored document."""


def document_json(document: statevault.SchemaDocument) -> dict[str, Any]:
    """A stored document's facts (without its JSON Schema) as JSON-ready values."""
    return {
        "name": document.name,
        "version": document.version,
        "fingerprint": document.fingerprint,
        "kind": document.kind,
        "type": document.type_name,
        "stored_at": document.stored_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


@schema_app.command("list")
def list_schemas(path: VaultArg, *, json: JsonOpt = False) -> None:
    """List the schemas the vault stores: name, version, fingerprint, type, when stored."""
    with clean_errors(path), open_for_reading(path) as vault:
        documents = vault.stored_schemas()
        location = vault.location
    if json:
        out = {"vault": location, "schemas": [document_json(d) for d in documents]}
        sys.stdout.write(jsonlib.dumps(out, indent=2) + "\n")
        return
    console = stdout()
    if not documents:
        console.print(
            f"No schemas stored in {location} (one is stored when a state is first saved with it).",
            style="dim",
            soft_wrap=True,
            markup=False,
        )
        return
    from rich import box  # noqa: PLC0415 - loaded on use
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"schemas in {location}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", overflow="fold")
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("fingerprint", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("type", overflow="fold")
    table.add_column("stored (UTC)", no_wrap=True)
    for d in documents:
        table.add_row(
            d.name,
            str(d.version),
            short(d.fingerprint),
            d.kind,
            d.type_name,
            d.stored_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    console.print(table)


@schema_app.command("show")
def show_schema(
    path: VaultArg,
    name: NameArg,
    *,
    version: Annotated[
        int | None,
        typer.Option("--version", min=1, metavar="N", help="Which version (default: newest)."),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="What to print: " + ", ".join(SHOW_FORMATS) + ".",
        ),
    ] = "json-schema",
) -> None:
    """Print one stored schema (the newest version unless --version is given)."""
    render = SHOW_FORMATS.get(output_format)
    if render is None:
        fail(f"unknown --format {output_format!r}: use one of {', '.join(SHOW_FORMATS)}")
    with clean_errors(path), open_for_reading(path) as vault:
        document = vault.stored_schema(name, version)
    sys.stdout.write(render(document).rstrip("\n") + "\n")


SAMPLE_RUNS = 1000


@schema_app.command("diff")
def diff_schema(
    path: VaultArg,
    name: NameArg,
    *,
    against: Annotated[
        str,
        typer.Option(
            "--against",
            metavar="MODULE:TYPE",
            help="The schema's type in your code, e.g. myapp.models:OrderV3 (imported).",
            show_default=False,
        ),
    ],
    output: Annotated[
        pathlib.Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the migration module to FILE instead of printing it.",
            dir_okay=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
    sample: Annotated[
        int,
        typer.Option(
            "--sample",
            min=0,
            metavar="N",
            help="Check narrowing type changes against the states of at most N runs "
            "stored with the newest version (0: check none).",
        ),
    ] = SAMPLE_RUNS,
) -> None:
    """Propose the migration from the newest stored version of NAME to the code's type.

    Compares the JSON Schema stored for the newest version N with the type's and writes
    a module registering `@statevault.migration(NAME, N, N+1)`: added fields get their
    defaults, removed fields are dropped, safe type changes are converted, and what it
    cannot decide (likely renames, new required fields, unsafe changes) is a TODO that
    raises NotImplementedError until edited. A summary goes to stderr.
    """
    from statevault.schema_tools import (  # noqa: PLC0415 - loaded on use
        collect_field_values,
        diff_schemas,
        propose_migration,
    )

    if output is not None and output.exists() and not force:
        fail(f"{output} exists; pass --force to overwrite it (it may hold edits)")
    cls = _import_type(against)
    with clean_errors(path), open_for_reading(path) as vault:
        stored = vault.stored_schema(name)
        states = _stored_states(vault, name, stored.version, limit=sample)
        new_version = stored.version + 1
        new_schema = statevault.Schema(name, cls, new_version).json_schema
        old_schema = stored.json_schema
        diff = diff_schemas(
            old_schema, new_schema, stored_values=collect_field_values(old_schema, states)
        )
    report = _stderr()
    if diff.unchanged:
        report.print(
            f"{against} accepts the same values as the stored version {stored.version} of "
            f"{name!r}: no migration is needed.",
            markup=False,
        )
        return
    source = propose_migration(name, stored.version, new_version, diff)
    if output is None:
        sys.stdout.write(source)
    else:
        output.write_text(source, encoding="utf-8")
    where = "printed above" if output is None else f"written to {output}"
    checked = f"checked against the states of {_count(len(states), 'run')}"
    report.print(
        f"Migration of {name!r} v{stored.version} -> v{new_version} {where} ({checked}).",
        markup=False,
    )
    todos = diff.todos()
    if not todos:
        report.print("Every step was decided; read it, then register it.", markup=False)
        return
    report.print(
        f"{_count(len(todos), 'step')} to do before it runs (marked TODO(statevault)):",
        markup=False,
    )
    for todo in todos:
        report.print(f"  - {todo}", markup=False, soft_wrap=True)


def _stderr() -> Any:
    from rich.console import Console  # noqa: PLC0415 - loaded on use

    return Console(stderr=True, highlight=False)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _import_type(spec: str) -> type[Any]:
    """The class `module:QualName` names, imported as `python -m` would find it."""
    module_name, _, qualname = spec.partition(":")
    if not module_name or not qualname:
        fail(f"--against takes MODULE:TYPE, e.g. myapp.models:OrderV3; got {spec!r}")
    found: Any = import_user_module(module_name, f"{module_name!r} (from --against {spec})")
    for part in qualname.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            fail(f"module {module_name!r} has no {qualname!r} (from --against {spec})")
    if not isinstance(found, type):
        fail(f"--against {spec} is a {type(found).__name__}, not a class")
    return found


def _stored_states(vault: statevault.Vault, name: str, version: int, *, limit: int) -> list[Any]:
    """The states, as stored, of up to `limit` runs whose newest state is `name` v`version`."""
    states: list[Any] = []
    for run_id in vault.runs():
        if len(states) >= limit:
            break
        run = vault.run(run_id)
        head = run.head
        if head is not None and head.schema == name and head.schema_version == version:
            states.append(run.load())
    return states
