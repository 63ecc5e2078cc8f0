"""The demo's worker: runs the pipeline against a vault, one checkpoint per step.

`statevault demo` starts it as
`python -m statevault.cli.demo_worker VAULT --seed S --steps N`, kills it mid-step and
starts it again. It resumes from the run's newest checkpoint, whatever happened before.

It reports to the parent on stdout, one JSON object per line:

    {"event": "start", "pid": 123, "seq": 12, "step": 12}    seq 0: no checkpoint yet
    {"event": "begin", "step": 13, "work_ms": 87}            about to work on a step
    {"event": "saved", "step": 13, "seq": 13, "digest": ..., "orders": ..., ...}
    {"event": "done", "seq": 24}

"saved" is written only after `run.save` returned, so a step the parent saw
acknowledged is committed; a step it did not see may or may not be.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import statevault
from statevault.cli import pipeline


def _emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def work(vault_url: str, *, seed: int, steps: int) -> None:
    """Run steps after the newest checkpoint up to `steps`, saving after each."""
    with statevault.open(vault_url) as vault:
        run = vault.run(pipeline.RUN_ID)
        state = run.load(default=None)
        done = 0 if state is None else int(state["step"])
        _emit(event="start", pid=os.getpid(), seq=run.known_seq, step=done)
        for step in range(done + 1, steps + 1):
            seconds = pipeline.work_seconds(seed, step)
            _emit(event="begin", step=step, work_ms=round(seconds * 1000))
            started = time.monotonic()
            state = pipeline.advance(state, seed=seed, step=step)
            # The simulated rest of the step's work: what a kill is meant to interrupt.
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
            _, _, new, shipped, _ = state["batches"][-1]
            note = f"batch {step}: {new} new orders, {shipped} shipped"
            ckpt = run.save(state, meta={"step": step, "note": note})
            _emit(
                event="saved",
                step=step,
                seq=ckpt.seq,
                digest=ckpt.digest,
                **pipeline.summary(state),
            )
        _emit(event="done", seq=run.known_seq)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m statevault.cli.demo_worker",
        description="The worker process of `statevault demo`.",
    )
    parser.add_argument("vault", help="the vault URL or path")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    args = parser.parse_args(argv)
    work(args.vault, seed=args.seed, steps=args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
