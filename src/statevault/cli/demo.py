"""`statevault demo`: kill a pipeline mid-step, resume it, and prove nothing was lost.

The parent process starts a worker (`statevault.cli.demo_worker`) that runs the
order-fulfilment pipeline with one checkpoint per step, kills it with SIGKILL while
one step is in progress, starts it again and lets it finish. Then it computes the
same steps without interruption, in this process, and compares the two final states:
equal as values and equal in digest, i.e. byte for byte once encoded.

Everything printed about the worker comes from what the worker reported, not from
what the parent planned: if the kill lands later than intended the timeline says so.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import IO, Any

from rich.console import Console
from rich.text import Text

import statevault
from statevault.cli import pipeline
from statevault.errors import short_digest

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_KILL_MARGIN_MS = 40
_KILL_NAME = "SIGKILL" if os.name == "posix" else "TerminateProcess"


class DemoError(Exception):
    """The demo cannot run as asked (a usage error, not a failed comparison)."""


@dataclass
class _Seen:
    """What one worker reported."""

    start: dict[str, Any] | None = None
    saved: list[int] = field(default_factory=list)
    last_begin: dict[str, Any] | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the demo will do: where, how long, with which seed, and where to kill."""

    location: str
    steps: int
    seed: int
    kill_at: int
    kill_fraction: float


def _default_vault() -> str:
    return os.path.join(tempfile.mkdtemp(prefix="statevault-demo-"), "demo.db")


def _worker_command(vault: str, *, seed: int, steps: int) -> list[str]:
    module = "statevault.cli.demo_worker"
    return [sys.executable, "-m", module, vault, "--seed", str(seed), "--steps", str(steps)]


def _worker_env() -> dict[str, str]:
    # The worker must import this very statevault, installed or not (a source checkout
    # run with PYTHONPATH=src, say), so its location goes first on the worker's path.
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(statevault.__file__)))
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root + (os.pathsep + rest if rest else "")
    return env


def _events(stream: IO[str]) -> Iterator[dict[str, Any]]:
    for line in stream:
        text = line.strip()
        if not text:
            continue
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            continue  # not ours (a library printing to stdout); the protocol is JSON lines
        if isinstance(event, dict):
            yield event


class _Timeline:
    def __init__(self, console: Console) -> None:
        self.console = console

    def line(self, *parts: tuple[str, str] | str) -> None:
        text = Text()
        for part in parts:
            if isinstance(part, tuple):
                text.append(part[0], style=part[1])
            else:
                text.append(part)
        self.console.print(text, soft_wrap=True)

    def saved(self, event: dict[str, Any]) -> None:
        revenue = Decimal(str(event["revenue"]))
        self.line(
            f"  step {event['step']:>3}  ",
            ("✓", "green"),
            f" checkpoint {event['seq']:>3}  ",
            (
                f"{event['orders']:>4} orders, {event['shipped']:>4} shipped, {revenue:>10,} EUR",
                "dim",
            ),
        )


def _run_worker(plan: _Plan, timeline: _Timeline, *, kill: bool) -> tuple[_Seen, int, str]:
    """Run one worker to its end, killing it during step `plan.kill_at` if `kill`.

    Returns what it reported, its exit code and the end of its stderr.
    """
    seen = _Seen()
    pending_kill = kill
    command = _worker_command(plan.location, seed=plan.seed, steps=plan.steps)
    with (
        tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as errors,
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            encoding="utf-8",
            env=_worker_env(),
        ) as proc,
    ):
        assert proc.stdout is not None
        try:
            for event in _events(proc.stdout):
                kind = event.get("event")
                if kind == "start":
                    seen.start = event
                    _announce_start(timeline, event, resumed=not kill)
                elif kind == "begin":
                    seen.last_begin = event
                    if pending_kill and event["step"] == plan.kill_at:
                        # Let the step get some way into its work, then kill without
                        # warning: no handler, no flush, no cleanup runs in the worker.
                        time.sleep(_kill_delay(event["work_ms"], plan.kill_fraction))
                        proc.kill()
                        pending_kill = False
                elif kind == "saved":
                    seen.saved.append(event["step"])
                    timeline.saved(event)
                elif kind == "done":
                    seen.done = True
        except BaseException:
            proc.kill()  # never leave a worker running behind an interrupted parent
            raise
        code = proc.wait()
        errors.seek(0)
        tail = errors.read()[-4000:]
    return seen, code, tail


def _kill_delay(work_ms: int, fraction: float) -> float:
    """Seconds from a step's start to the kill: `fraction` of its work, but at least
    40 ms before its end, so that a busy machine still kills inside the step."""
    return max(0.005, min(work_ms * fraction, work_ms - _KILL_MARGIN_MS)) / 1000


def _announce_start(timeline: _Timeline, event: dict[str, Any], *, resumed: bool) -> None:
    if not resumed:
        timeline.line(("worker started", "bold"), f" (pid {event['pid']}): a new run, step 1")
        return
    if event["seq"] == 0:
        timeline.line(
            ("worker restarted", "bold"),
            f" (pid {event['pid']}): no checkpoint was committed yet, so it starts from "
            f"the beginning",
        )
        return
    timeline.line(
        ("worker restarted", "bold"),
        f" (pid {event['pid']}): ",
        (f"resumed from checkpoint {event['seq']}", "bold cyan"),
        f" (steps 1-{event['step']} done), continuing with step {event['step'] + 1}",
    )


def _reference(*, seed: int, steps: int) -> tuple[dict[str, Any], str]:
    """The uninterrupted result: every step in this process, and its state's digest."""
    state: dict[str, Any] | None = None
    for step in range(1, steps + 1):
        state = pipeline.advance(state, seed=seed, step=step)
    assert state is not None
    with statevault.open("memory://") as scratch:
        ckpt = scratch.run("reference").save(state)
    return state, ckpt.digest


def _plan(*, vault: str | None, steps: int, seed: int | None, kill_at: int | None) -> _Plan:
    if seed is None:
        seed = secrets.randbelow(100_000)
    rng = random.Random(f"statevault-demo-kill:{seed}")  # noqa: S311 - reproducible
    if kill_at is None:
        # Not the first step (so there is a checkpoint to resume from) nor the last.
        kill_at = rng.randint(2, steps - 1)
    if vault is None:
        location = _default_vault()
    elif vault.startswith("memory://"):
        raise DemoError(
            "the demo's worker is another process, which cannot see a memory:// vault; pass a path"
        )
    else:
        location = vault if _SCHEME.match(vault) else os.path.abspath(vault)
    return _Plan(location, steps, seed, kill_at, rng.uniform(0.1, 0.7))


def _prepare(location: str) -> tuple[str, bool]:
    """Open (or create) the vault and delete an earlier demo run.

    Returns the vault's location and whether an earlier run was deleted.
    """
    try:
        prepared = statevault.open(location)
    except statevault.StateVaultError:
        raise
    except ValueError as exc:  # a URL scheme statevault does not know
        raise DemoError(str(exc)) from exc
    with prepared:
        return prepared.location, prepared.delete_run(pipeline.RUN_ID)


def _report_kill(timeline: _Timeline, plan: _Plan, first: _Seen) -> int:
    """Say where the kill landed; returns the step it interrupted."""
    assert first.last_begin is not None
    during = first.last_begin
    step: int = during["step"]
    if step in first.saved:
        timeline.line(
            ("  ✗ killed", "bold red"), f" after step {step} was acknowledged ({_KILL_NAME})"
        )
    else:
        into = round(_kill_delay(during["work_ms"], plan.kill_fraction) * 1000)
        timeline.line(
            ("  ✗ killed during step ", "bold red"),
            (f"{step} ({_KILL_NAME})", "bold red"),
            f", about {into} ms into its {during['work_ms']} ms of work; it was never acknowledged",
        )
    return step


def _compare(timeline: _Timeline, plan: _Plan, *, elapsed: float) -> bool:
    """Compare the vault's final state with an uninterrupted run; print the verdict."""
    with statevault.open(plan.location) as reopened:
        run = reopened.run(pipeline.RUN_ID)
        final = run.load()
        history = run.checkpoints()
    reference, reference_digest = _reference(seed=plan.seed, steps=plan.steps)
    head = history[0]
    steps = plan.steps
    one_per_step = [c.meta.get("step") for c in reversed(history)] == list(range(1, steps + 1))
    timeline.line("")
    timeline.line(
        f"{steps} steps, {len(history)} checkpoints"
        + (" (one per step: none lost, none repeated)" if one_per_step else "")
        + f", 1 kill, 1 resume, {elapsed:.1f} s"
    )
    same_state = final == reference
    same_digest = head.digest == reference_digest
    if same_state and same_digest and one_per_step:
        timeline.line(
            ("✓ final state equals an uninterrupted run", "bold green"),
            f" (digest {short_digest(head.digest)})",
        )
        return True
    timeline.line(
        ("✗ the resumed run differs from an uninterrupted one", "bold red"),
        f": state {'equal' if same_state else 'different'}, digest "
        f"{short_digest(head.digest)} vs {short_digest(reference_digest)}, checkpoints "
        f"{'one per step' if one_per_step else 'not one per step'}",
    )
    return False


def _hints(timeline: _Timeline, plan: _Plan) -> None:
    where = shlex.quote(plan.location)
    run_id = pipeline.RUN_ID
    before_kill = max(1, plan.kill_at - 1)
    timeline.line("")
    timeline.line("Look inside the vault:")
    for command in (
        f"statevault log {where} {run_id}",
        f"statevault show {where} {run_id} --path totals",
        f"statevault show {where} {run_id} --at {before_kill} --path 'outbox[-1]'",
        f"statevault verify {where}",
    ):
        timeline.line("  ", (command, "cyan"))


def run_demo(
    *,
    vault: str | None,
    steps: int,
    seed: int | None,
    kill_at: int | None,
    console: Console,
) -> bool:
    """Run the demo, printing its timeline. Returns True when the results are equal.

    Args:
        vault: where to keep the run (default: a new SQLite file in a temporary
            directory, left in place to be inspected).
        steps: the pipeline's length.
        seed: the seed for the pipeline's data and for the kill (default: random).
        kill_at: the step to kill the worker in (default: chosen by the seed).
        console: where to print.

    Raises:
        DemoError: `vault` is a memory:// URL (a worker process cannot see it) or a URL
            statevault does not know.
        StateVaultError: the vault cannot be opened (for example, it is not a vault).
    """
    started = time.monotonic()
    timeline = _Timeline(console)
    plan = _plan(vault=vault, steps=steps, seed=seed, kill_at=kill_at)
    location, replaced = _prepare(plan.location)
    plan = replace(plan, location=location)
    timeline.line(
        ("statevault demo", "bold"),
        f" · {pipeline.PIPELINE} pipeline · {steps} steps · seed {plan.seed}",
        "" if seed is not None else f" (random; --seed {plan.seed} repeats this run)",
    )
    timeline.line("vault  ", (plan.location, "cyan"), f" (run {pipeline.RUN_ID!r})")
    if replaced:
        timeline.line("       (the previous demo run in this vault was deleted first)")
    timeline.line(f"plan   {_KILL_NAME} the worker during step {plan.kill_at}, then restart it")
    timeline.line("")

    first, code, errors = _run_worker(plan, timeline, kill=True)
    if first.done or first.last_begin is None:
        return _worker_failed(timeline, "the worker ended before it could be killed", code, errors)
    killed_in = _report_kill(timeline, plan, first)

    second, code, errors = _run_worker(plan, timeline, kill=False)
    if not second.done or code != 0 or second.start is None:
        return _worker_failed(timeline, "the restarted worker did not finish", code, errors)
    if second.start["seq"] >= killed_in and killed_in not in first.saved:
        timeline.line(
            ("  note: ", "yellow"),
            f"step {killed_in} had committed just before the kill; only its "
            f"acknowledgement was lost",
        )

    ok = _compare(timeline, plan, elapsed=time.monotonic() - started)
    _hints(timeline, plan)
    return ok


def _worker_failed(timeline: _Timeline, what: str, code: int, errors: str) -> bool:
    timeline.line(("✗ ", "bold red"), (f"{what} (exit code {code})", "red"))
    if errors.strip():
        timeline.line(("worker's stderr:", "dim"))
        timeline.line(errors.rstrip())
    return False
