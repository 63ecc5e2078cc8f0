"""`statevault schema ...`: the schema documents a vault stores, without the code.

Every command here reads through the public API (`Vault.stored_schemas`,
`Vault.stored_schema`) and never creates or changes a vault. `show` prints a document
in one of the formats in `SHOW_FORMATS`; a new format is one more entry there.
"""

from __future__ import annotations

import json as jsonlib
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

import statevault
from statevault.cli.common import clean_errors, fail, open_for_reading, short, stdout

schema_app = typer.Typer(
    name="schema",
    help="List and print the schemas a vault stores (JSON Schema of each version used).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)

VaultArg = Annotated[
    str,
    typer.Argument(
        metavar="PATH",
        help="The vault: a SQLite file (or sqlite:///path) or files:///dir. Never created.",
        show_default=False,
    ),
]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The schema's name.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Write JSON to stdout instead of text.")]


def _json_schema_text(document: statevault.SchemaDocument) -> str:
    return jsonlib.dumps(document.json_schema, indent=2, sort_keys=True)


SHOW_FORMATS: dict[str, Callable[[statevault.SchemaDocument], str]] = {
    "json-schema": _json_schema_text,
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
