"""kill -9 of real writer processes: the workload, the fork server, and the checker.

How one cycle goes:

1. The test asks the **fork server** (one long-lived process that imported statevault
   once, and never opens a vault itself, so it has no threads or connections a fork
   could copy) to run a workload. The server forks a **worker**.
2. The worker opens the vault, says READY on a pipe, and runs the workload: saves,
   transactions, `run.apply`, folds (explicit and by policy) and run deletions. After
   each call *returns* it writes that op's index to the pipe: an acknowledged commit.
3. The server SIGKILLs the worker at a random moment, or the worker kills itself at a
   named crash point (`STATEVAULT_CRASH_AT`, re-armed in the fork). The server drains
   the pipe and reports which ops were acknowledged.
4. Optionally a **recovery worker** opens the crashed vault and reads it, and is killed
   too: recovery must be idempotent.
5. The test reopens the vault and checks it against the **model** (`Workload`): every
   run's whole history must equal the model after some prefix `p` of the ops with
   `acked <= p <= acked + 1` (one op can be in flight): no acknowledged commit lost, no
   hole, no reordering, no half-applied delta, no duplicate, no deleted run back.

The workload is a pure function of a seed, so the checker and the worker agree on
every op without sending them. Backends are entries of `BACKENDS`. PostgreSQL's vault
for a test directory is a schema named after it (`tests/postgres_support.py`), dropped
by `discard`; it has no copy, so a killed recovery is checked against the model and
against itself run again, not against a recovered copy.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import statevault
from statevault import faults, ops

RUN_IDS = ("alpha", "beta/1", "gamma 🚀")
POLICY_RECORDS = 3
"""Folds by policy every 3 journal entries, so folds happen often and mid-workload."""

HUGE = 17 << 19
"""8.5 MiB of incompressible bytes: more than the tree writer keeps before it writes."""

HERE = Path(__file__).resolve().parent
SRC = Path(statevault.__file__).resolve().parent.parent


# -- the workload and its model -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Op:
    """One step of a workload. `kind`: save, txn, apply, fold or delete."""

    index: int
    kind: str
    run_id: str
    payload: Any = None


def _state_for(index: int, rnd: random.Random) -> dict[str, Any]:
    """A whole state: small (inline in its record) or large (a tree of objects)."""
    size = rnd.choice(("small", "small", "blob", "list"))
    state: dict[str, Any] = {"count": index, "log": [index], "saved_at": index}
    if size == "blob":
        # Incompressible, so it becomes objects of its own.
        state["blob"] = rnd.randbytes(rnd.choice((6_000, 40_000)))
    elif size == "list":
        state["items"] = [
            {"i": i, "text": f"item {i} of save {index} " * rnd.randint(1, 4)}
            for i in range(rnd.randint(100, 400))
        ]
    return state


class Workload:
    """The ops of a seed, and the model: each run's history of states.

    Every `huge_every`-th op is a save of `HUGE` bytes.

    A run's history lists the state after each of its commits that changed the state
    (saves, transactions, applies); folds repeat the state before them and are not in
    it. A deleted run's history is empty.
    """

    def __init__(self, seed: int, *, huge_every: int) -> None:
        self.seed = seed
        self.huge_every = huge_every
        self.ops: list[Op] = []
        self._histories: dict[str, list[Any]] = {run_id: [] for run_id in RUN_IDS}
        # Snapshots of `_histories` (lists of shared, never-mutated states) by op count.
        self._models: list[dict[str, tuple[Any, ...]]] = [self._snapshot()]

    def _snapshot(self) -> dict[str, tuple[Any, ...]]:
        return {run_id: tuple(history) for run_id, history in self._histories.items()}

    def _extend_to(self, count: int) -> None:
        while len(self.ops) < count:
            index = len(self.ops)
            rnd = random.Random(self.seed * 1_000_003 + index)
            run_id = rnd.choice(RUN_IDS)
            history = self._histories[run_id]
            if index % self.huge_every == self.huge_every // 4:
                kind = "huge"
            elif not history:
                kind = rnd.choice(("save", "save", "save", "txn-new"))
            else:
                kind = rnd.choices(
                    ("save", "txn", "apply", "fold", "delete"), weights=(3, 6, 6, 2, 1)
                )[0]
            payload: Any = None
            if kind == "huge":
                # Larger than the tree writer's batch: part of it is stored before its
                # record (`engine.objects.after_early_write`).
                kind, payload = (
                    "save",
                    {"count": index, "log": [index], "huge": rnd.randbytes(HUGE)},
                )
                history.append(payload)
            elif kind == "save":
                payload = _state_for(index, rnd)
                history.append(payload)
            elif kind == "txn-new":
                # A transaction on an empty run commits a whole state (its default).
                kind, payload = "txn", index
                history.append({"count": 1, "log": [index]})
            elif kind in ("txn", "apply"):
                payload = index
                before = history[-1]
                after = dict(before)
                after["count"] = before["count"] + 1
                after["log"] = [*before["log"], index]
                history.append(after)
            elif kind == "delete":
                history.clear()
            self.ops.append(Op(index, kind, run_id, payload))
            self._models.append(self._snapshot())

    def op(self, index: int) -> Op:
        self._extend_to(index + 1)
        return self.ops[index]

    def model(self, count: int) -> dict[str, tuple[Any, ...]]:
        """Each run's history after the first `count` ops."""
        self._extend_to(count)
        return self._models[count]


def run_op(vault: statevault.Vault, handles: dict[str, statevault.Run], op: Op) -> None:
    """Do one op through the public API; return only when it is committed (or a no-op)."""
    run = handles.get(op.run_id)
    if run is None:
        run = handles[op.run_id] = vault.run(op.run_id)
    if op.kind == "save":
        run.save(op.payload, meta={"op": op.index})
    elif op.kind == "txn":
        with run.transaction(default={"count": 0, "log": []}) as state:
            state["count"] += 1
            state["log"].append(op.payload)
    elif op.kind == "apply":
        run.apply([ops.increment("count"), ops.append("log", op.payload)])
    elif op.kind == "fold":
        run.checkpoint()
    elif op.kind == "delete":
        vault.delete_run(op.run_id)
        del handles[op.run_id]  # its head is gone; a new handle starts from none
    else:  # pragma: no cover - the generator makes no other kind
        raise AssertionError(op.kind)


# -- the worker (a forked child) ---------------------------------------------------------------
def _worker(ack_fd: int, request: dict[str, Any]) -> None:
    faults.rearm(request.get("crash_at"))
    workload = Workload(request["seed"], huge_every=request["huge_every"])
    url = request["url"]
    policy = statevault.CheckpointPolicy(records=POLICY_RECORDS)
    if request["mode"] == "repair":
        with statevault.open(url) as vault:
            os.write(ack_fd, b"R\n")
            vault.repair()
        os.write(ack_fd, b"D\n")
        return
    if request["mode"] == "recover":
        os.write(ack_fd, b"R\n")  # before open: opening is the recovery under test
        with statevault.open(url, policy=policy) as vault:
            for run_id in vault.runs():
                run = vault.run(run_id)
                run.load()
                for checkpoint in run.checkpoints():
                    run.load(at=checkpoint.seq)
        os.write(ack_fd, b"D\n")
        return
    with statevault.open(url, policy=policy) as vault:
        os.write(ack_fd, b"R\n")
        handles: dict[str, statevault.Run] = {}
        for index in range(request["start"], request["start"] + request["count"]):
            run_op(vault, handles, workload.op(index))
            # Only now, after the call returned: this is the acknowledgement.
            os.write(ack_fd, b"A %d\n" % index)
    os.write(ack_fd, b"D\n")


def _run_cycle(request: dict[str, Any]) -> dict[str, Any]:
    """Fork a worker, kill it as asked, and collect what it acknowledged."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        os.close(read_fd)
        code = 0
        try:
            _worker(write_fd, request)
        except BaseException as exc:  # reported to the test, which fails on it
            os.write(write_fd, b"E %s\n" % repr(exc).encode("utf-8", "replace")[:2000])
            code = 1
        os._exit(code)
    os.close(write_fd)
    lines: list[str] = []
    buffer = b""
    started = time.monotonic()
    kill_at: float | None = None
    killed_by_us = False
    deadline = started + request.get("hang_after", 60.0)
    ready = False
    while True:
        now = time.monotonic()
        if kill_at is not None and not killed_by_us and now >= kill_at:
            os.kill(pid, signal.SIGKILL)
            killed_by_us = True
        if now >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.close(read_fd)
            os.waitpid(pid, 0)
            return {"hang": True, "lines": lines}
        wait = deadline - now
        if kill_at is not None and not killed_by_us:
            wait = max(0.0, min(wait, kill_at - now))
        readable, _, _ = select.select([read_fd], [], [], wait)
        if not readable:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break  # every writer end closed: the worker is gone
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            line = raw.decode("utf-8", "replace")
            lines.append(line)
            if line == "R" and not ready:
                ready = True
                if request.get("kill_after") is not None:
                    kill_at = time.monotonic() + request["kill_after"]
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return {
        "hang": False,
        "lines": lines,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "elapsed": time.monotonic() - started,
    }


def serve() -> None:
    """The fork server's loop: one JSON request per stdin line, one JSON reply per line."""
    for line in sys.stdin:
        reply = _run_cycle(json.loads(line))
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


# -- the test side -----------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one worker did before it died (or finished)."""

    acked: list[int]
    ready: bool
    done: bool
    signal: int
    elapsed: float
    errors: list[str] = field(default_factory=list)

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL


class ForkServer:
    """The test's handle on the fork server process."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)])}
        env.pop(faults.ENV_VAR, None)  # armed per worker, never in the server
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "import kill_harness; kill_harness.serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def cycle(
        self,
        url: str,
        *,
        seed: int = 0,
        huge_every: int = 1,
        mode: str = "workload",
        start: int = 0,
        count: int = 0,
        crash_at: str | None = None,
        kill_after: float | None = None,
    ) -> Outcome:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        request = {
            "url": url,
            "seed": seed,
            "huge_every": huge_every,
            "mode": mode,
            "start": start,
            "count": count,
            "crash_at": crash_at,
            "kill_after": kill_after,
        }
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        reply = json.loads(self._proc.stdout.readline())
        if reply["hang"]:
            raise AssertionError(f"the worker hung: {request}, said {reply['lines']}")
        lines: list[str] = reply["lines"]
        return Outcome(
            acked=[int(line[2:]) for line in lines if line.startswith("A ")],
            ready="R" in lines,
            done="D" in lines,
            signal=reply["signal"],
            elapsed=reply["elapsed"],
            errors=[line[2:] for line in lines if line.startswith("E ")],
        )

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def observed_history(vault: statevault.Vault, run_id: str) -> list[Any]:
    """A run's history as stored: the state at each seq, folds checked and left out."""
    run = vault.run(run_id)
    checkpoints = list(reversed(run.checkpoints()))
    seqs = [c.seq for c in checkpoints]
    assert seqs == list(range(1, len(seqs) + 1)), f"{run_id}: history has holes: {seqs}"
    history: list[Any] = []
    previous: Any = None
    for checkpoint in checkpoints:
        state = run.load(at=checkpoint.seq)
        if checkpoint.kind == "fold":
            assert checkpoint.seq > 1 and state == previous, (
                f"{run_id}: fold {checkpoint.seq} changed the state"
            )
        else:
            history.append(state)
        previous = state
    if checkpoints:
        assert run.load() == previous
    return history


def check_recovered(url: str, workload: Workload, acked_through: int, issued: int) -> int:
    """Open the vault and find the prefix `p` it equals, `acked_through <= p <= issued`.

    Raises AssertionError naming what differs when no prefix matches.
    """
    with statevault.open(url, policy=statevault.CheckpointPolicy(records=POLICY_RECORDS)) as vault:
        stored_runs = vault.runs()
        histories = {run_id: observed_history(vault, run_id) for run_id in stored_runs}
        report = vault.verify()
        assert report.ok, [str(p) for p in report.problems]
    mismatches: list[str] = []
    for p in range(acked_through, issued + 1):
        model = workload.model(p)
        expected_runs = sorted(run_id for run_id, h in model.items() if h)
        if expected_runs != stored_runs:
            mismatches.append(f"p={p}: runs {stored_runs} != model {expected_runs}")
            continue
        differing = [r for r in stored_runs if tuple(histories[r]) != model[r]]
        if not differing:
            return p
        for run_id in differing:
            got, want = histories[run_id], model[run_id]
            mismatches.append(
                f"p={p}: run {run_id!r}: {len(got)} states stored, model has {len(want)}; "
                f"first difference at {_first_difference(got, want)}"
            )
    raise AssertionError(
        f"no prefix in {acked_through}..{issued} matches the recovered vault:\n"
        + "\n".join(mismatches)
    )


def _first_difference(got: list[Any], want: tuple[Any, ...]) -> int:
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return i
    return min(len(got), len(want))


# -- backends ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KillBackend:
    """A persistent backend as the kill tests see it.

    Attributes:
        name: the parametrize id.
        url: the vault URL for a directory of the test's own.
        copy: copies a crashed vault (closed by every process) to another directory of
            the test's and returns its URL; None when the backend cannot (a server).
        points: the crash-point name prefixes of this backend's own code.
        module: the backend's module, imported to register its crash points.
        discard: removes what the vault of a directory keeps outside it (a server's
            schema); None when the directory holds all of it.
        settle: waits, after a kill, until nothing of the killed process can still
            change the vault (a server finishing its statements); None: nothing can.
    """

    name: str
    url: Callable[[Path], str]
    copy: Callable[[Path, Path], str] | None
    points: tuple[str, ...]
    module: str
    discard: Callable[[Path], None] | None = None
    settle: Callable[[Path], None] | None = None


def _copy_sqlite(source: Path, target: Path) -> str:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        shutil.copy2(item, target / item.name)
    return str(target / "vault.db")


def _copy_files(source: Path, target: Path) -> str:
    shutil.copytree(source / "vault", target / "vault", symlinks=True)
    return f"files://{target / 'vault'}"


def _pg_url(directory: Path) -> str:
    # Imported on use: the fork server's path holds only src and this directory.
    from postgres_support import pg_url  # noqa: PLC0415

    schema, name = _pg_names(directory)
    return pg_url(schema, application_name=name)


def _pg_names(directory: Path) -> tuple[str, str]:
    """The vault's schema, and the application name its connections carry."""
    from postgres_support import pg_schema_for  # noqa: PLC0415

    schema = pg_schema_for(str(directory))
    return schema, f"kill-{schema}"


def _pg_settle(directory: Path) -> None:
    """Wait until the server has ended every session of the vault's killed clients.

    A killed client's statement goes on in its server process until it finishes, and
    commits if it gets there; only then does that process notice the closed socket.
    Checked earlier, the vault could take the commit after the check: the op would
    land after a recovery that had already been judged.
    """
    import psycopg  # noqa: PLC0415

    from postgres_support import PG_DSN  # noqa: PLC0415

    _, name = _pg_names(directory)
    deadline = time.monotonic() + 60
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"sessions of {name} still on the server after 60 s")
            time.sleep(0.005)


def _pg_discard(directory: Path) -> None:
    from postgres_support import drop_pg_schema, pg_schema_for  # noqa: PLC0415

    drop_pg_schema(pg_schema_for(str(directory)))


BACKENDS = {
    "sqlite": KillBackend(
        "sqlite",
        lambda d: str(d / "vault.db"),
        _copy_sqlite,
        ("sqlite.", "engine.", "run."),
        "statevault.backends.sqlite",
    ),
    "files": KillBackend(
        "files",
        lambda d: f"files://{d / 'vault'}",
        _copy_files,
        ("files.", "engine.", "run."),
        "statevault.backends.files",
    ),
    "postgres": KillBackend(
        "postgres",
        _pg_url,
        None,
        ("postgres.", "engine.", "run."),
        "statevault.backends.postgres",
        discard=_pg_discard,
        settle=_pg_settle,
    ),
}


def workload_points(backend: KillBackend) -> list[str]:
    """The crash points this backend's workload can reach (not repair's nor open's)."""
    importlib.import_module(backend.module)  # registers its points

    # Also out of reach: layout 1's record link (new vaults have layout 2), and the wipe
    # of a torn tail, which a killed process never leaves (its page cache survives it;
    # tests/backends/test_seglog.py tears tails by hand).
    skipped = (
        "files.rollback.",
        "files.quarantine.",
        "files.open.",
        "repair.",
        "files.record.after_link",
        "files.segment.after_wipe",
        "files.upgrade.",  # tests/backends/test_files_upgrade.py kills the upgrade there
    )
    return sorted(
        name
        for name in faults.POINTS
        if name.startswith(backend.points) and not name.startswith(skipped)
    )


def seeds(base: int) -> Iterator[int]:
    rnd = random.Random(base)
    while True:
        yield rnd.randrange(1 << 30)
