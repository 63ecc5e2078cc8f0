"""`statevault upgrade`: bring an older vault to the newest format, on purpose.

Opening never upgrades a vault (it keeps the format it was created with, so the
statevault that made it can still read it); this command does, through
`Vault.upgrade`. `--dry-run` shows what would be rewritten and writes nothing. Safe to
interrupt: run it again and it finishes; on a vault already at the newest format it
does nothing and says so.
"""

from __future__ import annotations

import json as jsonlib
import sys
from typing import Any

import statevault
from statevault.cli.common import (
    DryRunOpt,
    JsonOpt,
    VaultArg,
    clean_errors,
    human_size,
    open_for_reading,
    progress_bar,
    quote,
    stdout,
)


def upgrade(path: VaultArg, *, dry_run: DryRunOpt = False, json: JsonOpt = False) -> None:
    """Upgrade an older vault to the newest format (history, seqs and hashes kept).
    --dry-run shows what would be rewritten; run again to finish an interrupted upgrade."""
    with clean_errors(path), open_for_reading(path) as vault:
        report = _run(vault, dry_run=dry_run)
    if json:
        sys.stdout.write(jsonlib.dumps(_report_json(report), indent=2) + "\n")
    else:
        _print_summary(path, report)


def _run(vault: statevault.Vault, *, dry_run: bool) -> statevault.UpgradeReport:
    from rich.progress import TaskID  # noqa: PLC0415 - loaded on use

    with progress_bar() as bar:
        tasks: dict[str, TaskID] = {}

        def advance(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        return vault.upgrade(dry_run=dry_run, progress=advance)


def _report_json(report: statevault.UpgradeReport) -> dict[str, Any]:
    return {
        "vault": report.location,
        "dry_run": report.dry_run,
        "current": report.current,
        "source_format": report.source,
        "target_format": report.target,
        "runs": report.runs,
        "checkpoints": report.checkpoints,
        "records_rewritten": report.records,
        "bytes_rewritten": report.bytes,
        "seconds": round(report.seconds, 6),
        "steps": [
            {
                "name": s.name,
                "runs": s.runs,
                "records": s.records,
                "bytes": s.bytes,
                "detail": s.detail,
            }
            for s in report.steps
        ],
    }


def _print_summary(path: str, report: statevault.UpgradeReport) -> None:
    console = stdout()

    def line(text: str, style: str | None = None) -> None:
        console.print(text, style=style, soft_wrap=True, markup=False)

    kept = f"{report.runs} runs, {report.checkpoints} checkpoints"
    if report.current:
        line(
            f"{report.location}: already at vault format {report.target} and the backend's "
            f"newest layout, the newest this statevault writes: nothing to do ({kept})."
        )
        return
    # The format may be current while a backend's own layout is not.
    if report.source < report.target:
        what = f"vault format {report.source} -> {report.target}"
    else:
        what = f"vault format {report.target} (current), {', '.join(s.name for s in report.steps)}"
    rewritten = f"{report.records} records ({human_size(report.bytes)}); {kept} kept"
    if report.dry_run:
        line(f"{report.location}: {what} would rewrite {rewritten} (dry run: nothing written)")
    else:
        line(f"{report.location}: upgraded, {what}, in {report.seconds:.2f} s: rewrote {rewritten}")
    for step in report.steps:
        line(
            f"  {step.name}: {step.runs} runs, {step.records} records, "
            f"{human_size(step.bytes)}" + (f"; {step.detail}" if step.detail else "")
        )
    if report.dry_run:
        line(f"Run `statevault upgrade {quote(path)}` to upgrade.", "dim")
    elif report.source < report.target:
        line(
            f"Releases of statevault that read only format {report.source} can no longer "
            f"open it; processes that have it open write format {report.source} until they "
            f"open it again (safe: formats mix).",
            "dim",
        )
