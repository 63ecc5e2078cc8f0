"""The `statevault` command: look inside a vault, check and repair it, and watch a
crash-and-resume demo.

Read commands (`runs`, `log`, `show`, `verify`) never create or change a vault; they
open it with `unknown_types="keep"`, so state written by code that is not importable
here still shows, its records under their stored type names. `repair` opens a vault the
same way and changes it only as `Vault.repair` does.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated, Any

import typer

import statevault
from statevault.cli.common import (
    EXIT_DAMAGE,
    JsonOpt,
    VaultArg,
    clean_errors,
    fail,
    human_size,
    new_app,
    open_for_reading,
    short,
    stdout,
)
from statevault.cli.migrate import migrate
from statevault.cli.schema import schema_app
from statevault.cli.upgrade import upgrade

app = new_app("statevault")

RunArg = Annotated[str, typer.Argument(metavar="RUN", help="The run id.", show_default=False)]

app.add_typer(schema_app)
app.command(name="migrate")(migrate)
app.command(name="upgrade")(upgrade)


def _print_version(value: bool) -> None:
    if value:
        stdout().print(f"statevault {statevault.__version__}", markup=False)
        raise typer.Exit


@app.callback()
def _options(
    *,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Look inside statevault vaults, verify them, and run the crash-and-resume demo."""


def _write_json(value: Any) -> None:
    from statevault.cli.render import to_json  # noqa: PLC0415 - loaded on use

    sys.stdout.write(to_json(value).decode() + "\n")
    sys.stdout.flush()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _meta_text(meta: dict[str, Any], *, note_only: bool = False) -> str:
    """A checkpoint's meta on one line: `key=value` pairs, then its note as plain text."""
    from statevault.cli.render import render  # noqa: PLC0415

    note = meta.get("note")
    if not isinstance(note, str):
        note = None
    if note_only and note is not None:
        return note
    parts = [f"{key}={render(value).plain}" for key, value in meta.items() if key != "note"]
    if note is not None:
        parts.append(note)
    return "  ".join(parts)


def _checkpoint_json(ckpt: statevault.Checkpoint) -> dict[str, Any]:
    return {
        "seq": ckpt.seq,
        "parent": ckpt.parent,
        "kind": ckpt.kind,
        "saved_at": ckpt.created_at,
        "digest": ckpt.digest,
        "raw_bytes": ckpt.raw_bytes,
        "stored_bytes": ckpt.stored_bytes,
        "meta": ckpt.meta,
        "record_hash": ckpt.record_hash,
        "schema": ckpt.schema,
        "schema_version": ckpt.schema_version,
    }


@app.command()
def runs(
    path: VaultArg,
    *,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Only runs whose id starts with this.")
    ] = "",
    json: JsonOpt = False,
) -> None:
    """List the runs: head checkpoint, when it was saved, sizes and its note.

    "state" is the size of the newest state, encoded, before compression; "stored" is
    what all of the run's checkpoints added to storage (shared objects count once, for
    the checkpoint that first stored them).
    """
    rows: list[dict[str, Any]] = []
    with clean_errors(path), open_for_reading(path) as vault:
        for run_id in vault.runs(prefix):
            history = vault.run(run_id).checkpoints()
            if not history:  # deleted between the listing and this read
                continue
            head = history[0]
            rows.append(
                {
                    "run_id": run_id,
                    "head_seq": head.seq,
                    "checkpoints": len(history),
                    "saved_at": head.created_at,
                    "digest": head.digest,
                    "state_raw_bytes": head.raw_bytes,
                    "stored_bytes_total": sum(c.stored_bytes for c in history),
                    "meta": head.meta,
                }
            )
        location = vault.location
    if json:
        _write_json({"vault": location, "runs": rows})
        return
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = stdout()
    if not rows:
        which = f" starting with {prefix!r}" if prefix else ""
        console.print(f"No runs{which} in {location}.", style="dim", soft_wrap=True)
        return
    table = Table(
        title=f"{_count(len(rows), 'run')} in {location}", box=box.SIMPLE_HEAD, pad_edge=False
    )
    # Ids stay whole up to 24 characters (people copy them into `statevault log`).
    table.add_column("run", overflow="fold", min_width=min(24, max(len(r["run_id"]) for r in rows)))
    table.add_column("head", justify="right", no_wrap=True)
    table.add_column("saved (UTC)", no_wrap=True)
    table.add_column("state", justify="right", no_wrap=True)
    table.add_column("stored", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    for row in rows:
        table.add_row(
            row["run_id"],
            str(row["head_seq"]),
            _time(row["saved_at"]),
            human_size(row["state_raw_bytes"]),
            human_size(row["stored_bytes_total"]),
            _meta_text(row["meta"], note_only=True),
        )
    console.print(table)


@app.command()
def log(
    path: VaultArg,
    run: RunArg,
    *,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Show at most N checkpoints.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """List a run's checkpoints, newest first."""
    with clean_errors(path), open_for_reading(path) as vault:
        handle = vault.run(run)
        history = handle.checkpoints(limit=limit)
        if not history:
            raise statevault.RunNotFound(run)
        lease = handle.current_lease()
        location = vault.location
    if json:
        _write_json(
            {
                "vault": location,
                "run_id": run,
                "lease": None
                if lease is None
                else {"owner": lease.owner, "token": lease.token, "expires_at": lease.expires_at},
                "checkpoints": [_checkpoint_json(c) for c in history],
            }
        )
        return
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(
        title=f"run {run!r} in {location}, newest first", box=box.SIMPLE_HEAD, pad_edge=False
    )
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("saved (UTC)", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("digest", no_wrap=True)
    table.add_column("state", justify="right", no_wrap=True)
    table.add_column("stored", justify="right", no_wrap=True)
    table.add_column("meta", overflow="fold")
    for ckpt in history:
        table.add_row(
            str(ckpt.seq),
            _time(ckpt.created_at),
            ckpt.kind,
            short(ckpt.digest) if ckpt.digest else "",
            human_size(ckpt.raw_bytes),
            human_size(ckpt.stored_bytes),
            _meta_text(ckpt.meta),
        )
    stdout().print(table)
    if lease is not None:
        until = dt.datetime.fromtimestamp(lease.expires_at, tz=dt.UTC)
        stdout().print(
            f"leased by {lease.owner!r} (fencing token {lease.token}) until "
            f"{_time(until)} UTC unless renewed; other writers are refused meanwhile",
            soft_wrap=True,
        )


@app.command()
def show(
    path: VaultArg,
    run: RunArg,
    *,
    at: Annotated[
        int | None,
        typer.Option("--at", min=1, metavar="SEQ", help="Show checkpoint SEQ (default: newest)."),
    ] = None,
    value_path: Annotated[
        str,
        typer.Option(
            "--path",
            metavar="PATH",
            help='Show only this part of the state: a.b.0, jobs[3]["x.y"].',
        ),
    ] = "",
    max_items: Annotated[
        int,
        typer.Option("--max-items", min=0, help="Items shown per container (0: all)."),
    ] = 100,
    json: JsonOpt = False,
) -> None:
    """Print a run's state (newest, or checkpoint --at), or the part at --path.

    Types show as they are: (1, 2) is a tuple, {1, 2} a set, datetimes carry their
    offset, Decimals their digits; bytes and arrays are summarized. Records of classes
    not importable here show under their stored type name.
    """
    from statevault import paths  # noqa: PLC0415

    with clean_errors(path), open_for_reading(path) as vault:
        handle = vault.run(run)
        if at is None:
            head = handle.head
            if head is None:
                raise statevault.RunNotFound(run)
            at = head.seq
        ckpt = handle.checkpoint_at(at)
        keys = paths.parse(value_path)
        try:
            # Reads only the objects on the path: one field of a large state is cheap.
            value = handle.get(keys, at=at)
        except KeyError as exc:
            message = exc.args[0] if exc.args else str(exc)
            fail(f"run {run!r} checkpoint {at} has no {value_path!r}: {message}")
    if json:
        _write_json(value)
        return
    from statevault.cli.render import STYLE_DIM, render  # noqa: PLC0415

    console = stdout()
    where = f" at {paths.format_path(keys)}" if keys else ""
    console.print(
        f"run {run!r} checkpoint {ckpt.seq} ({ckpt.kind}){where} · saved "
        f"{_time(ckpt.created_at)} UTC"
        + (f" · digest {short(ckpt.digest)}" if ckpt.digest else ""),
        style=STYLE_DIM,
        soft_wrap=True,
        markup=False,
    )
    console.print(render(value, width=console.width, max_items=max_items), soft_wrap=True)


@app.command()
def verify(path: VaultArg, *, json: JsonOpt = False) -> None:
    """Read and check every record and object; exit 1 if any damage is found."""
    with clean_errors(path), open_for_reading(path) as vault:
        report = vault.verify()
        location = vault.location
    if json:
        _write_json(
            {
                "vault": location,
                "ok": report.ok,
                "runs": report.runs,
                "checkpoints": report.checkpoints,
                "objects": report.objects,
                "bytes_read": report.bytes_read,
                "unreferenced_objects": report.unreferenced_objects,
                "problems": [_problem_json(p) for p in report.problems],
            }
        )
    else:
        from rich.text import Text  # noqa: PLC0415

        console = stdout()
        console.print(
            f"Checked {location}: {_count(report.runs, 'run')}, "
            f"{_count(report.checkpoints, 'checkpoint')}, {_count(report.objects, 'object')}, "
            f"{human_size(report.bytes_read)} read.",
            soft_wrap=True,
            markup=False,
        )
        if report.unreferenced_objects:
            console.print(
                f"{_count(report.unreferenced_objects, 'object')} not used by any checkpoint "
                f"(left by deleted runs or unfinished saves; harmless).",
                style="dim",
                markup=False,
            )
        if report.ok:
            console.print(Text("✓ no damage found", style="bold green"))
        else:
            count = len(report.problems)
            console.print(Text(f"✗ {_count(count, 'problem')} found:", style="bold red"))
            _print_problems(report.problems)
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGE)


def _problem_json(problem: statevault.Problem) -> dict[str, Any]:
    return {
        "kind": problem.kind,
        "message": problem.message,
        "run_id": problem.run_id,
        "seq": problem.seq,
        "digest": problem.digest,
        "consequence": problem.consequence,
    }


def _print_problems(problems: list[statevault.Problem]) -> None:
    from rich.text import Text  # noqa: PLC0415

    console = stdout()
    for problem in problems:
        line = Text(f"  [{problem.kind}] ", style="red")
        line.append(str(problem))
        console.print(line, soft_wrap=True)


def _seq_list(seqs: list[int]) -> str:
    """`4-9` for a contiguous list, else the seqs with commas."""
    if len(seqs) > 1 and seqs == list(range(seqs[0], seqs[-1] + 1)):
        return f"{seqs[0]}-{seqs[-1]}"
    return ", ".join(map(str, seqs))


@app.command()
def repair(
    path: VaultArg,
    *,
    run: Annotated[
        str | None,
        typer.Option("--run", metavar="RUN", help="Repair only this run.", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Change nothing; show what would be done.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Roll damaged runs back to their newest verified checkpoint; quarantine damaged
    objects. Nothing is deleted. Exit 1 if damage remains (or, with --dry-run, is found)."""
    # Opened as the read commands open it (never created, unknown types kept): what
    # repair writes is made of stored bytes only.
    with clean_errors(path), open_for_reading(path) as vault:
        report = vault.repair(run, dry_run=dry_run)
        location = vault.location
    if json:
        _write_json(
            {
                "vault": location,
                "dry_run": report.dry_run,
                "ok": report.ok,
                "problems": [_problem_json(p) for p in report.problems],
                "rolled_back": [
                    {
                        "run_id": r.run_id,
                        "head": r.head,
                        "kept_through": r.kept_through,
                        "lost": r.lost,
                        "reason": r.reason,
                    }
                    for r in report.rolled_back
                ],
                "quarantined_objects": report.quarantined_objects,
                "records_set_aside": report.records_set_aside,
                "unrepaired": [_problem_json(p) for p in report.unrepaired],
                "remaining": [_problem_json(p) for p in report.remaining],
            }
        )
    else:
        _print_repair(location, report)
    if not report.ok or (dry_run and report.problems):
        raise typer.Exit(EXIT_DAMAGE)


def _print_repair(location: str, report: statevault.RepairReport) -> None:
    from rich.text import Text  # noqa: PLC0415

    console = stdout()
    if not report.problems:
        console.print(f"Checked {location}: nothing to repair.", markup=False, soft_wrap=True)
        console.print(Text("✓ no damage found", style="bold green"))
        return
    console.print(
        f"Checked {location}: {_count(len(report.problems), 'problem')} found:",
        markup=False,
        soft_wrap=True,
    )
    _print_problems(report.problems)
    would = "would be " if report.dry_run else ""
    for rolled in report.rolled_back:
        if rolled.kept_through:
            what = f"rolled back from checkpoint {rolled.head} to {rolled.kept_through}"
        else:
            what = f"removed whole (no checkpoint verifies; it had {rolled.head})"
        console.print(
            f"run {rolled.run_id!r} {would}{what}: checkpoints {_seq_list(rolled.lost)} "
            f"{would or 'are '}lost (set aside in quarantine)",
            markup=False,
            soft_wrap=True,
        )
    if report.quarantined_objects:
        console.print(
            f"{_count(len(report.quarantined_objects), 'damaged object')} {would or ''}"
            f"moved to quarantine: " + ", ".join(short(d) for d in report.quarantined_objects),
            markup=False,
            soft_wrap=True,
        )
    if report.unrepaired:
        console.print(Text("Not repaired:", style="bold red"))
        _print_problems(report.unrepaired)
    if report.dry_run:
        console.print("Dry run: nothing was changed.", style="dim", markup=False)
    elif report.ok:
        console.print(Text("✓ repaired: the vault verifies", style="bold green"))
    if report.remaining and not report.dry_run:
        console.print(
            Text(f"✗ {_count(len(report.remaining), 'problem')} remain:", style="bold red")
        )
        _print_problems(report.remaining)


@app.command()
def demo(
    *,
    vault: Annotated[
        str | None,
        typer.Option(
            "--vault",
            metavar="PATH",
            help="The SQLite vault to use (default: a new one in a temporary directory).",
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=20, help="Steps in the pipeline (at least 20).")
    ] = 24,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed for the pipeline's data and the kill (default: random)."),
    ] = None,
    kill_at: Annotated[
        int | None,
        typer.Option(
            "--kill-at",
            metavar="STEP",
            min=1,
            help="Kill the worker during this step (default: one chosen by the seed).",
        ),
    ] = None,
) -> None:
    """Run a multi-step pipeline in a worker process, SIGKILL it mid-step, resume it, and
    check that the result equals an uninterrupted run."""
    if kill_at is not None and kill_at > steps:
        raise typer.BadParameter(f"must be between 1 and --steps ({steps})", param_hint="--kill-at")
    from statevault.cli.demo import DemoError, run_demo  # noqa: PLC0415

    try:
        with clean_errors(vault or "the demo vault"):
            ok = run_demo(vault=vault, steps=steps, seed=seed, kill_at=kill_at, console=stdout())
    except DemoError as exc:
        fail(str(exc))
    if not ok:
        raise typer.Exit(EXIT_DAMAGE)
