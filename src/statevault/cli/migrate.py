"""`statevault migrate`: bring every run of a schema to one version, with a progress bar.

The command imports the module named by `--module` (from the current directory or the
Python path): schemas and migrations it registers at import through
`statevault.schema(...)` and `@statevault.migration(...)` apply, and a function
`register(vault)` in it, if present, is called with the opened vault. Importing runs
that module's code: name only modules you trust, as with `python -m`.
"""

from __future__ import annotations

import json as jsonlib
import sys
from typing import Annotated, Any

import typer

import statevault
from statevault.cli.common import (
    EXIT_DAMAGE,
    check_exists,
    clean_errors,
    import_user_module,
    progress_bar,
    stdout,
)

_MIGRATE_HELP = """Migrate every run of schema NAME to version --to (default: the newest
registered), each as a new checkpoint, after validating it. Failing runs are left as
they were and listed; run the command again to finish an interrupted migration. The way
back: --to a lower version (through registered down steps), or --undo."""


def migrate(
    path: Annotated[
        str,
        typer.Argument(metavar="PATH", help="The vault (a SQLite file or files:///dir)."),
    ],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The schema's name.")],
    *,
    module: Annotated[
        list[str],
        typer.Option(
            "--module",
            metavar="MODULE",
            help="A module that registers the schema's types and migrations (repeatable).",
        ),
    ],
    to: Annotated[
        int | None,
        typer.Option("--to", min=1, metavar="N", help="Target version (default: newest)."),
    ] = None,
    runs: Annotated[
        str, typer.Option("--runs", metavar="GLOB", help="Only runs whose id matches.")
    ] = "*",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Migrate and validate in memory; write nothing.")
    ] = False,
    undo: Annotated[
        bool,
        typer.Option("--undo", help="Restore the states from before the newest migration of NAME."),
    ] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Runs migrated at once.")] = 8,
    json: Annotated[bool, typer.Option("--json", help="Write the summary as JSON.")] = False,
) -> None:
    check_exists(path)
    _import(module)
    with clean_errors(path), statevault.open(path, create=False) as vault:
        for name_of_module in module:
            register = getattr(sys.modules[name_of_module], "register", None)
            if callable(register):
                register(vault)
        report = _run(vault, name, to=to, runs=runs, dry_run=dry_run, undo=undo, workers=workers)
        location = vault.location
    if json:
        sys.stdout.write(jsonlib.dumps(_report_json(location, report), indent=2) + "\n")
    else:
        _print_summary(location, report, undo=undo)
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGE)


migrate.__doc__ = _MIGRATE_HELP


def _import(modules: list[str]) -> None:
    for name in modules:
        import_user_module(name, f"--module {name!r}")


def _run(
    vault: statevault.Vault,
    name: str,
    *,
    to: int | None,
    runs: str,
    dry_run: bool,
    undo: bool,
    workers: int,
) -> statevault.MigrationReport:
    total = len([r for r in vault.runs() if _matches(r, runs)])
    verb = "checking" if dry_run else ("restoring" if undo else "migrating")
    with progress_bar() as bar:
        task = bar.add_task(f"{verb} {name}", total=total)

        def advance(_: statevault.RunOutcome) -> None:
            bar.advance(task)

        if undo:
            return vault.undo_migration(
                name, runs=runs, dry_run=dry_run, workers=workers, progress=advance
            )
        return vault.migrate(
            name, to=to, runs=runs, dry_run=dry_run, workers=workers, progress=advance
        )


def _matches(run_id: str, pattern: str) -> bool:
    import fnmatch  # noqa: PLC0415

    return pattern == "*" or fnmatch.fnmatchcase(run_id, pattern)


def _report_json(location: str, report: statevault.MigrationReport) -> dict[str, Any]:
    def rows(outcomes: list[statevault.RunOutcome]) -> list[dict[str, Any]]:
        return [
            {
                "run_id": o.run_id,
                "from_version": o.source,
                "to_version": o.target,
                "seq": o.seq,
                "reason": o.reason,
            }
            for o in outcomes
        ]

    return {
        "vault": location,
        "schema": report.schema,
        "target": report.target,
        "dry_run": report.dry_run,
        "migrated": rows(report.migrated),
        "current": rows(report.current),
        "failed": rows(report.failed),
        "skipped": rows(report.skipped),
    }


def _print_summary(location: str, report: statevault.MigrationReport, *, undo: bool) -> None:
    console = stdout()
    done = "restored" if undo else "migrated"
    if report.dry_run:
        done = f"would be {done}"
    target = "" if report.target is None else f" to version {report.target}"
    console.print(
        f"{report.schema!r}{target} in {location}: {len(report.migrated)} {done}, "
        f"{len(report.current)} already current, {len(report.failed)} failed, "
        f"{len(report.skipped)} skipped"
        + (" (dry run: nothing written)" if report.dry_run else ""),
        soft_wrap=True,
        markup=False,
    )
    for outcome in report.failed:
        console.print(
            f"  failed: {outcome.run_id}: {outcome.reason}",
            style="red",
            soft_wrap=True,
            markup=False,
        )
    if report.failed:
        console.print(
            "Failed runs were left as they were; fix the migration and run the command again.",
            style="dim",
            soft_wrap=True,
            markup=False,
        )
