"""Workloads of public API calls, a plain-dict model of their effect, and the crash check.

A workload is a list of `Step`s (save, transaction, apply, fold, delete). It runs once on
a files vault through a `RecordingFileIO`; the model says what the vault must hold after
each step. Every crash state the recording allows is then written to a fresh directory
and opened with the real `statevault.open()`, and must hold the model's vault after some
prefix of the steps between the last acknowledged one and the last one issued. Recovery
itself is recorded too, crashed at each of its points, and must end where an
uninterrupted recovery ends (`explore`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from diskmodel import MUTATIONS, CrashState, Image, Policy, Recording, RecordingFileIO

import statevault
from statevault import CheckpointPolicy, ops
from statevault.backends.fsio import FileIO

BIG = 66 << 10
"""Above the tree's 64 KiB node size, so each blob is an object of its own."""
SHARED_BLOB = random.Random(-1).randbytes(BIG)

KINDS = ("save", "transaction", "apply", "fold", "delete")
"""The API calls of a workload; long scenarios also have "reopen" (close, open again)."""


def _blob(n: int) -> bytes:
    return random.Random(n).randbytes(BIG)


def saved_state(n: int) -> dict[str, Any]:
    """A state of a root object and two blob objects, one of them shared by every save."""
    return {"step": n, "log": [f"s{n}"], "shared": {"blob": SHARED_BLOB}, "own": {"blob": _blob(n)}}


TRANSACTION_DEFAULT: dict[str, Any] = {"step": 0, "log": []}


@dataclass(frozen=True, slots=True)
class Step:
    """One public API call on run `run`; `n` makes its data unique."""

    kind: str
    run: str = "a"
    n: int = 0

    def __str__(self) -> str:
        return f"{self.kind}({self.run}, {self.n})"


@dataclass(slots=True)
class _RunModel:
    seq: int
    state: Any
    deltas: int = 0
    """Journal entries since the last state entry (0: the head is a state entry)."""


View = dict[str, tuple[int, Any]]
"""What a vault holds, as compared: run id -> (head seq, newest state)."""


@dataclass(slots=True)
class Model:
    """The vault as a plain dict: what each step must leave behind.

    `fold_every`: the vault's `CheckpointPolicy(records=...)`, after which a delta is
    followed, within the same call, by an automatic fold.
    """

    fold_every: int = CheckpointPolicy().records
    runs: dict[str, _RunModel] = field(default_factory=dict)

    def step(self, step: Step, *, fold: bool = True) -> list[View]:
        """Apply `step`; return the views a crash inside it may leave besides the
        ones before and after it (a delta committed, its automatic fold not yet).

        `fold=False`: the step's delta without the automatic fold that follows it.
        """
        run = self.runs.get(step.run)
        if step.kind == "save":
            self.runs[step.run] = _RunModel((run.seq if run else 0) + 1, saved_state(step.n))
        elif step.kind == "transaction" and run is None:
            state = copy.deepcopy(TRANSACTION_DEFAULT)
            _transaction_change(state, step.n)
            self.runs[step.run] = _RunModel(1, state)
        elif step.kind in ("transaction", "apply") and run is not None:
            if step.kind == "transaction":
                _transaction_change(run.state, step.n)
            else:
                _apply_change(run.state, step.n)
            run.seq += 1
            run.deltas += 1
            if fold and run.deltas >= self.fold_every:
                between = self.view()
                run.seq += 1
                run.deltas = 0
                return [between]
        elif step.kind == "fold" and run is not None and run.deltas:
            run.seq += 1
            run.deltas = 0
        elif step.kind == "delete":
            self.runs.pop(step.run, None)
        # Otherwise nothing changes: apply and fold on a missing run raise RunNotFound,
        # a fold of a state entry is a no-op, and so is a reopen.
        return []

    def view(self) -> View:
        return {name: (run.seq, copy.deepcopy(run.state)) for name, run in self.runs.items()}


def _transaction_change(state: Any, n: int) -> None:
    state["step"] = n
    state["log"].append(f"t{n}")


def _apply_change(state: Any, n: int) -> None:
    state["step"] += 1
    state["log"].append(f"a{n}")


def perform(vault: statevault.Vault, step: Step) -> None:
    """Make the API call of `step` (the calls the model describes); not "reopen"."""
    run = vault.run(step.run)
    if step.kind == "save":
        run.save(saved_state(step.n))
    elif step.kind == "transaction":
        with run.transaction(default=TRANSACTION_DEFAULT) as state:
            _transaction_change(state, step.n)
    elif step.kind == "apply":
        with contextlib.suppress(statevault.RunNotFound):
            run.apply([ops.increment("step"), ops.append("log", f"a{step.n}")])
    elif step.kind == "fold":
        with contextlib.suppress(statevault.RunNotFound):
            run.checkpoint()
    elif step.kind == "delete":
        vault.delete_run(step.run)
    else:
        raise ValueError(step.kind)


def read_view(vault: statevault.Vault) -> View:
    view: View = {}
    for run_id in vault.runs():
        run = vault.run(run_id)
        state = run.load()
        view[run_id] = (run.known_seq, state)
    return view


POPULATE = (Step("save", "a", 1), Step("transaction", "a", 2), Step("save", "b", 3))
"""What a populated vault holds before a workload starts."""


# -- recording ----------------------------------------------------------------------------
VAULT = "v"


def count_policy(fold_every: int) -> CheckpointPolicy:
    """Folds by count only, as the model does. With the default time limit (300 s), a
    long suite folds on its own: the populated disk is built once, at its start, so
    its newest checkpoint ages while the suite runs."""
    return CheckpointPolicy(records=fold_every, seconds=1e9)


@functools.cache
def _populated() -> tuple[Image, View]:
    """The disk of a vault after `POPULATE` (built once), and its model."""
    model = Model()
    with scratch_dir() as directory:
        with statevault.open(f"files://{os.path.join(directory, VAULT)}") as vault:
            for step in POPULATE:
                perform(vault, step)
                model.step(step)
        return Image.scan(directory), model.view()


@dataclass(slots=True)
class Recorded:
    """A workload's recording, with what the vault must hold around each step.

    `views[p]` is the model after the first p steps, `partial[i]` the views a crash
    inside step i may leave besides those; step i issued ops `spans[i][0]` up to (not
    including) `spans[i][1]`.
    """

    steps: list[Step]
    populated: bool
    recording: Recording
    views: list[View]
    partial: list[list[View]]
    spans: list[tuple[int, int]]

    def allowed(self, point: int) -> tuple[str, list[View]]:
        """What a crash just before op `point` may leave, and a name for it."""
        acked = sum(1 for _, end in self.spans if end <= point)
        issued = max(acked, sum(1 for start, _ in self.spans if start < point))
        views = self.views[acked : issued + 1]
        for i in range(acked, issued):
            views = views + self.partial[i]
        return f"the model after {acked}..{issued} steps", views


def prepare(disk: str, *, populated: bool, fold_every: int | None = None) -> Model:
    """Make `disk` (absent) the start of a workload: an empty directory, or one holding
    the populated vault `VAULT`. Returns the model of what it holds.

    `fold_every`: the vault's `CheckpointPolicy(records=...)` (default: the default).
    """
    model = Model(fold_every=fold_every or CheckpointPolicy().records)
    if populated:
        image, view = _populated()
        image.materialize(disk)
        model.runs = {
            name: _RunModel(seq, copy.deepcopy(state)) for name, (seq, state) in view.items()
        }
        model.runs["a"].deltas = 1  # POPULATE ends run a with a transaction
    else:
        os.makedirs(disk)
    return model


def record(
    steps: Sequence[Step], *, populated: bool, workdir: str, fold_every: int | None = None
) -> Recorded:
    """Run `steps` on a files vault in `workdir` (an empty directory) and record them."""
    disk = os.path.join(workdir, "disk")
    model = prepare(disk, populated=populated, fold_every=fold_every)
    url = f"files://{os.path.join(disk, VAULT)}"
    policy = count_policy(model.fold_every)
    io = RecordingFileIO(disk)
    views, partial, spans = [model.view()], [], []
    vault = statevault.open(url, fileio=io, policy=policy)
    try:
        for step in steps:
            start = len(io.ops)
            if step.kind == "reopen":
                vault.close()
                vault = statevault.open(url, fileio=io, policy=policy)
            else:
                perform(vault, step)
            spans.append((start, len(io.ops)))
            partial.append(model.step(step))
            views.append(model.view())
            assert read_view(vault) == views[-1], f"the vault differs from the model after {step}"
    finally:
        vault.close()
    return Recorded(list(steps), populated, Recording(io), views, partial, spans)


# -- checking -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Outcome:
    """What opening a directory gave: the vault's view, or the error that stopped it."""

    view: View | None
    error: str | None = None

    def __str__(self) -> str:
        if self.error is not None:
            return self.error
        assert self.view is not None
        return summary(self.view)


def summary(view: View) -> str:
    """A view in a line: each run's seq, step and log (the blobs follow from the log)."""
    runs = (
        f"{run}: seq {seq} step {state.get('step')} log {state.get('log')}"
        for run, (seq, state) in sorted(view.items())
    )
    return "{" + "; ".join(runs) + "}"


def recover(directory: str, *, fileio: FileIO | None = None) -> Outcome:
    """Open the vault in `directory` as a user would after the crash, read it all, verify it."""
    try:
        with statevault.open(f"files://{os.path.join(directory, VAULT)}", fileio=fileio) as vault:
            view = read_view(vault)
            report = vault.verify()
    except statevault.StateVaultError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # an untyped error is a failure of its own kind
        return Outcome(None, f"untyped {type(exc).__name__}: {exc}")
    if not report.ok:
        return Outcome(None, "verify: " + "; ".join(str(p) for p in report.problems))
    return Outcome(view)


@dataclass(slots=True)
class Explored:
    """What `explore` did: states built and checked, and the failures found."""

    states: int = 0
    distinct: int = 0
    recovery_states: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: Explored) -> None:
        self.states += other.states
        self.distinct += other.distinct
        self.recovery_states += other.recovery_states
        self.failures += other.failures


RECOVERY_POLICY = Policy(exhaustive_up_to=3, random_subsets=4, singles=True, damage=True)


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    """A directory for materialized states: on tmpfs when there is one (fast, no fsync cost)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = tempfile.mkdtemp(prefix="statevault-crash-", dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Explorer:
    """Checks crash states of one recording, opening each distinct disk image once.

    Each image is opened through a `RecordingFileIO`, so what recovery itself wrote is
    known without a second open; its crash states are then checked too: opening any of
    them must end exactly where the uninterrupted recovery ended (recovery is
    idempotent, and a crash inside it loses nothing).
    """

    def __init__(
        self, recorded: Recorded, scratch: str, *, policy: Policy, recovery: Policy | None
    ) -> None:
        self.recorded = recorded
        self.scratch = scratch
        self.policy = policy
        self.recovery = recovery
        self.outcomes: dict[int, tuple[Outcome, Recording | None]] = {}
        self.result = Explored()
        self._count = 0

    def outcome(self, image: Image) -> tuple[Outcome, Recording | None, bool]:
        """What opening `image` gives, how recovery got there, and whether this is new."""
        digest = image.digest()
        found = self.outcomes.get(digest)
        if found is not None:
            return (*found, False)
        self._count += 1
        target = os.path.join(self.scratch, str(self._count))
        image.materialize(target)
        # Recovery is recorded only when its own crashes are to be checked.
        io = RecordingFileIO(target, start=image) if self.recovery is not None else None
        outcome = recover(target, fileio=io)
        shutil.rmtree(target)
        self.result.distinct += 1
        self.outcomes[digest] = (outcome, Recording(io) if io is not None else None)
        return (*self.outcomes[digest], True)

    def run(self) -> Explored:
        recording = self.recorded.recording
        for point in recording.crash_points():
            expected, allowed = self.recorded.allowed(point)
            for state in recording.states(point, self.policy):
                self.result.states += 1
                outcome, recovery, new = self.outcome(recording.image(state))
                if outcome.view is None or outcome.view not in allowed:
                    self._fail(state, outcome, expected)
                elif new and recovery is not None and self.recovery is not None:
                    self._crash_recovery(recovery, outcome, state, self.recovery)
        return self.result

    def _crash_recovery(
        self, recovery: Recording, expected: Outcome, origin: CrashState, policy: Policy
    ) -> None:
        if not any(op.kind in MUTATIONS for op in recovery.ops):
            return  # recovery changed nothing: nothing to crash
        for point in recovery.crash_points():
            for state in recovery.states(point, policy):
                self.result.recovery_states += 1
                again, _, _ = self.outcome(recovery.image(state))
                if again != expected:
                    detail = recovery.explain(state).replace("\n", "\n    ")
                    self._fail(
                        origin, again, f"{expected}, as without a crash in recovery:\n    {detail}"
                    )

    def _fail(self, state: CrashState, outcome: Outcome, expected: str) -> None:
        recorded = self.recorded
        start = "a populated vault" if recorded.populated else "an empty directory"
        self.result.failures.append(
            f"workload from {start}: {', '.join(map(str, recorded.steps))}\n"
            f"{recorded.recording.explain(state)}\n"
            f"  recovered: {outcome}\n  expected: {expected}"
        )


def explore(
    steps: Sequence[Step],
    *,
    populated: bool,
    scratch: str,
    policy: Policy,
    recovery: Policy | None = RECOVERY_POLICY,
    fold_every: int | None = None,
) -> Explored:
    """Record `steps` and check every crash state the policies build from the recording.

    `recovery`: the states built when recovery itself crashes (None: not checked).
    """
    workdir = tempfile.mkdtemp(prefix="rec-", dir=scratch)
    try:
        recorded = record(steps, populated=populated, workdir=workdir, fold_every=fold_every)
        return Explorer(recorded, scratch, policy=policy, recovery=recovery).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
