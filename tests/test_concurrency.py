"""Concurrency proof: many processes and threads hammer shared and separate runs.

Each worker thread writes through every path at once: optimistic saves that retry on
`ConflictError`, transactions, saves to a run of its own, and writes under leases,
some by holders that pause until their lease has expired. Every write carries a
unique tag and is logged only after its call returned (acknowledged). An independent
checker then reads every run's history checkpoint by checkpoint and proves:

- each checkpoint adds exactly one tag to the state before it (a fold adds none):
  the history is linear and no update was lost or merged away;
- the tags in history are exactly the acknowledged ones: nothing acknowledged is
  missing, nothing unacknowledged (a refused write) is there, no tag twice;
- each writer's tags appear in the order it wrote them;
- under leases, fencing tokens never decrease along history, and every write of a
  holder whose lease expired during its pause was refused with `LeaseLost`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import pytest

import statevault

MULTI_PROCESS_BACKENDS = [
    "sqlite",
    "files",
    pytest.param("postgres", marks=pytest.mark.postgres),
]
"""The backends shared by processes; a new one joins the whole proof with one line."""

OPTIMISTIC = ["opt-0", "opt-1"]
TRANSACTIONAL = ["tx-0", "tx-1"]
LEASED = ["leased-0", "leased-1"]


@dataclass(frozen=True)
class Plan:
    processes: int
    threads: int
    rounds: int
    stale_holders: int
    """How many workers (thread 0 of the first few processes) pause past their lease."""
    ttl: float = 5.0
    stale_ttl: float = 1.0


# -- the workers ---------------------------------------------------------------------------
class _Log:
    """One thread's record of what it was told, appended only after the call returned."""

    def __init__(self, path: pathlib.Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def write(self, **entry: Any) -> None:
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _backoff() -> None:
    time.sleep(random.uniform(0, 0.004))


def _optimistic(vault: statevault.Vault, run_id: str, tag: list[Any], log: _Log) -> None:
    run = vault.run(run_id)
    while True:
        state = run.load(default={"log": []})
        state["log"].append(tag)
        try:
            run.save(state)
        except statevault.ConflictError:
            _backoff()
            continue
        log.write(run=run_id, tag=tag)
        return


def _transaction(vault: statevault.Vault, run_id: str, tag: list[Any], log: _Log) -> None:
    run = vault.run(run_id)
    while True:
        try:
            with run.transaction(default={"log": []}) as state:
                state["log"].append(tag)
        except statevault.ConflictError:
            _backoff()
            continue
        log.write(run=run_id, tag=tag)
        return


def _leased(vault: statevault.Vault, run_id: str, tag: list[Any], log: _Log, plan: Plan) -> None:
    """Two writes in one tenure of the lease; each tag carries the lease's token."""
    run = vault.run(run_id)
    with run.lease(ttl=plan.ttl, wait=300) as lease:
        for part in range(2):
            state = run.load(default={"log": []})
            state["log"].append([*tag, part, lease.token])
            run.save(state)
            log.write(run=run_id, tag=[*tag, part, lease.token])


def _stale(vault: statevault.Vault, run_id: str, tag: list[Any], log: _Log, plan: Plan) -> None:
    """Hold the lease, pause past its expiry (no renewal), then try to write again."""
    run = vault.run(run_id)
    with run.lease(ttl=plan.stale_ttl, wait=300, renew=False) as lease:
        state = run.load(default={"log": []})
        state["log"].append([*tag, 0, lease.token])
        try:
            run.save(state)
        except statevault.LeaseLost:
            log.write(stale=run_id, outcome="lost before the pause")
            return
        log.write(run=run_id, tag=[*tag, 0, lease.token])
        time.sleep(plan.stale_ttl * 1.5)  # the pause
        state["log"].append([*tag, 1, lease.token])
        try:
            run.save(state, force=True)
        except statevault.LeaseLost:
            log.write(stale=run_id, outcome="rejected")
        else:
            log.write(stale=run_id, outcome="ACCEPTED", tag=[*tag, 1, lease.token])


def _thread(url: str, vault: statevault.Vault, w: int, t: int, plan: Plan, out: str) -> None:
    log = _Log(pathlib.Path(out) / f"acks-{w}-{t}.jsonl")
    try:
        own = f"own-{w}-{t}"
        for i in range(plan.rounds):
            tag = [w, t, i]
            # Every round to the same shared runs, so each writer's order is checked there.
            _optimistic(vault, OPTIMISTIC[w % len(OPTIMISTIC)], tag, log)
            _transaction(vault, TRANSACTIONAL[(w + t) % len(TRANSACTIONAL)], tag, log)
            vault.run(own).save({"log": [[w, t, j] for j in range(i + 1)]})
            log.write(run=own, tag=tag)
            leased = LEASED[(w + t + i) % len(LEASED)]
            if t == 0 and i == 0 and w < plan.stale_holders:
                _stale(vault, leased, tag, log, plan)
            else:
                _leased(vault, leased, tag, log, plan)
    except BaseException as exc:
        log.write(error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        log.close()


def _process(url: str, w: int, plan_fields: dict[str, Any], out: str) -> None:
    plan = Plan(**plan_fields)
    random.seed(w)
    with statevault.open(url) as vault:
        threads = [
            threading.Thread(target=_thread, args=(url, vault, w, t, plan, out))
            for t in range(plan.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


# -- the checker ---------------------------------------------------------------------------
def _read_logs(out: pathlib.Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(out.glob("acks-*.jsonl")):
        writer = path.stem
        for line in path.read_text().splitlines():
            entries.append({**json.loads(line), "writer": writer})
    return entries


def check_history(vault: statevault.Vault, run_id: str, acked: list[list[Any]]) -> list[Any]:
    """Prove the run's history is linear and holds exactly the acknowledged tags, in order.

    `acked` lists the run's acknowledged tags, each writer's in the order it wrote them.
    Returns the tags in history order.
    """
    run = vault.run(run_id)
    kinds = {c.seq: c.kind for c in run.checkpoints()}
    assert sorted(kinds) == list(range(1, len(kinds) + 1)), f"{run_id}: gaps in {sorted(kinds)}"
    before: list[Any] = []
    in_history: list[Any] = []
    for seq in range(1, len(kinds) + 1):
        log = run.load(at=seq)["log"]
        if kinds[seq] == "fold":
            assert log == before, f"{run_id} checkpoint {seq}: a fold changed the state"
        else:
            assert log[:-1] == before, f"{run_id} checkpoint {seq}: not one step past {seq - 1}"
            in_history.append(tuple(log[-1]))
        before = log
    assert len(set(in_history)) == len(in_history), f"{run_id}: a write landed twice"
    assert set(in_history) == {tuple(tag) for tag in acked}, (
        f"{run_id}: missing {sorted({tuple(t) for t in acked} - set(in_history))}, "
        f"unacknowledged {sorted(set(in_history) - {tuple(t) for t in acked})}"
    )
    position = {tag: index for index, tag in enumerate(in_history)}
    writers: dict[tuple[Any, ...], list[int]] = {}
    for tag in acked:
        writers.setdefault(tuple(tag[:2]), []).append(position[tuple(tag)])
    for writer, places in writers.items():
        assert places == sorted(places), f"{run_id}: writer {writer} out of order: {places}"
    return in_history


def hammer(url: str, plan: Plan, out: pathlib.Path) -> None:
    with statevault.open(url) as vault:  # created before the workers race to create it
        assert vault.runs() == []
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_process, args=(url, w, asdict(plan), str(out)))
        for w in range(plan.processes)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=600)
    entries = _read_logs(out)
    errors = [e for e in entries if "error" in e]
    assert not errors, errors[:5]
    assert [p.exitcode for p in workers] == [0] * plan.processes

    stale = [e for e in entries if "stale" in e]
    assert len(stale) == plan.stale_holders
    assert all(e["outcome"] != "ACCEPTED" for e in stale), stale
    assert any(e["outcome"] == "rejected" for e in stale), stale

    acked: dict[str, list[list[Any]]] = {}
    for entry in entries:
        if "run" in entry:
            acked.setdefault(entry["run"], []).append(entry["tag"])
    writes = plan.processes * plan.threads * plan.rounds
    assert sum(len(acked.get(r, [])) for r in OPTIMISTIC) == writes
    assert sum(len(acked.get(r, [])) for r in TRANSACTIONAL) == writes
    with statevault.open(url) as vault:
        for run_id, tags in sorted(acked.items()):
            history = check_history(vault, run_id, tags)
            if run_id in LEASED:
                tokens = [tag[-1] for tag in history]
                assert tokens == sorted(tokens), f"{run_id}: a fenced-out write landed"
        report = vault.verify()
        assert report.ok, report.problems


@pytest.mark.multiprocess
@pytest.mark.parametrize("backend_kind", MULTI_PROCESS_BACKENDS)
def test_sixteen_processes_hammer_runs(vault_url: str, tmp_path: pathlib.Path) -> None:
    plan = Plan(processes=16, threads=2, rounds=2, stale_holders=2)
    hammer(vault_url, plan, tmp_path)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("backend_kind", MULTI_PROCESS_BACKENDS)
def test_many_processes_hammer_runs_long(vault_url: str, tmp_path: pathlib.Path) -> None:
    plan = Plan(processes=24, threads=3, rounds=6, stale_holders=6)
    hammer(vault_url, plan, tmp_path)


# -- a real pause: SIGSTOP -----------------------------------------------------------------
_PAUSED_HOLDER = textwrap.dedent(
    """
    import sys, statevault
    vault = statevault.open(sys.argv[1])
    run = vault.run("job")
    holding = run.lease(ttl=float(sys.argv[2]), owner="paused")
    lease = holding.__enter__()
    run.save({"by": "paused", "token": lease.token})
    print("held", lease.token, flush=True)
    sys.stdin.readline()  # stopped (SIGSTOP) here, then resumed and told to go on
    try:
        run.save({"by": "paused again"})
    except statevault.LeaseLost:
        print("lost", flush=True)
    else:
        print("written", flush=True)
    """
)


@pytest.mark.parametrize("backend_kind", MULTI_PROCESS_BACKENDS)
def test_holder_stopped_past_its_lease_is_fenced(vault_url: str) -> None:
    """The whole holder process, renewal thread included, is frozen past its ttl.

    It is stopped right after it reports the lease, well before its first renewal (at
    ttl / 3): stopped in the middle of one, it would hold the run's lock (a flock, or
    SQLite's write lock) while frozen, and block every other writer of the run until
    it resumes, which no lease can prevent.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [sys.executable, "-c", _PAUSED_HOLDER, vault_url, "3.0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            held = holder.stdout.readline().split()
            assert held[0] == "held", held
            holder.send_signal(signal.SIGSTOP)
            with statevault.open(vault_url) as vault:
                run = vault.run("job")
                with run.lease(ttl=30, owner="successor", wait=30) as lease:
                    assert lease.token > int(held[1])
                    run.load()
                    run.save({"by": "successor"})
                    holder.send_signal(signal.SIGCONT)
                    holder.stdin.write("go\n")
                    holder.stdin.flush()
                    assert holder.stdout.readline().strip() == "lost"
                assert run.load() == {"by": "successor"}
                assert [c.seq for c in run.checkpoints()] == [2, 1]
        finally:
            holder.send_signal(signal.SIGCONT)
            holder.kill()
