"""Run.lease(): exclusive ownership of a run, fenced writes, renewal, waiting, expiry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import statevault
from statevault import ops


def test_holder_writes_and_others_are_refused(vault: statevault.Vault) -> None:
    run = vault.run("job")
    other = vault.run("job")
    with run.lease(ttl=10, owner="worker-a") as lease:
        assert (lease.owner, lease.run_id) == ("worker-a", "job")
        run.save({"n": 1})
        with run.transaction() as s:
            s["n"] += 1
        run.apply([ops.increment("n")])
        with pytest.raises(statevault.LeaseHeld) as held:
            other.save({"n": "intruder"}, force=True)
        assert held.value.owner == "worker-a"
        assert "worker-a" in str(held.value)
        with pytest.raises(statevault.LeaseHeld):
            vault.delete_run("job")
        with pytest.raises(statevault.LeaseHeld):
            vault.run("job").lease(ttl=10).__enter__()
    assert not lease.active
    assert other.load() == {"n": 3}
    other.save({"n": 4})


def test_second_worker_waits_for_release(vault: statevault.Vault) -> None:
    holder = vault.run("job")
    acquired = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.lease(ttl=10, owner="first"):
            acquired.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    acquired.wait(10)
    threading.Timer(0.2, release.set).start()
    started = time.monotonic()
    with vault.run("job").lease(ttl=10, owner="second", wait=10) as second:
        waited = time.monotonic() - started
        assert second.owner == "second"
    thread.join()
    assert 0.1 < waited < 5


def test_wait_gives_up_with_lease_held(vault: statevault.Vault) -> None:
    with vault.run("job").lease(ttl=10, owner="first") as first:
        started = time.monotonic()
        with pytest.raises(statevault.LeaseHeld) as held:
            vault.run("job").lease(ttl=10, wait=0.3).__enter__()
        assert time.monotonic() - started >= 0.3
        assert held.value.owner == "first"
        assert held.value.expires_at == pytest.approx(first.expires_at, abs=5)
        assert held.value.waited >= 0.3


def test_background_renewal_outlives_ttl(vault: statevault.Vault) -> None:
    run = vault.run("job")
    with run.lease(ttl=0.3) as lease:
        first_expiry = lease.expires_at
        time.sleep(1.0)
        run.save({"still": "mine"})
        assert lease.expires_at > first_expiry
        assert not lease.lost


def test_stale_holder_gets_lease_lost(vault: statevault.Vault) -> None:
    """A holder that slept past its lease cannot overwrite its successor."""
    stale = vault.run("job")
    successor = vault.run("job")
    with stale.lease(ttl=0.3, renew=False) as old:
        stale.save({"by": "stale", "n": 1})
        time.sleep(0.5)  # the pause: no renewal, the lease expires
        with successor.lease(ttl=10) as new:
            assert new.token > old.token
            successor.load()
            successor.save({"by": "successor", "n": 2})
            for write in (
                lambda: stale.save({"by": "stale", "n": 99}, force=True),
                lambda: stale.apply([ops.set("by", "stale")]),
            ):
                with pytest.raises(statevault.LeaseLost) as lost:
                    write()
                assert lost.value.token == old.token
            with pytest.raises(statevault.LeaseLost), stale.transaction() as s:
                s["by"] = "stale"
            with pytest.raises(statevault.LeaseLost):
                old.renew()
            assert old.lost
    assert vault.run("job").load() == {"by": "successor", "n": 2}
    assert [c.seq for c in vault.run("job").checkpoints()] == [2, 1]


def test_tokens_keep_growing(vault: statevault.Vault) -> None:
    run = vault.run("job")
    tokens = []
    for _ in range(3):
        with run.lease(ttl=10) as lease:
            tokens.append(lease.token)
            run.save({"t": lease.token}, force=True)
    with run.lease(ttl=10) as lease:
        assert vault.delete_run("job", lease=lease) is True
        tokens.append(lease.token)
    with run.lease(ttl=10) as lease:
        tokens.append(lease.token)
    assert tokens == sorted(set(tokens))


def test_leases_do_not_nest(vault: statevault.Vault) -> None:
    run = vault.run("job")
    with run.lease(ttl=10, owner="me"), pytest.raises(RuntimeError, match="do not nest"):
        run.lease(ttl=10, owner="me").__enter__()
    # The refused inner lease was released, and so was the outer one.
    with vault.run("job").lease(ttl=10, owner="someone else"):
        pass


def test_bad_arguments(vault: statevault.Vault) -> None:
    run = vault.run("job")
    with pytest.raises(ValueError):
        run.lease(ttl=0).__enter__()
    with pytest.raises(ValueError):
        run.lease(ttl=1, wait=-1).__enter__()
    with pytest.raises(ValueError):
        run.lease(ttl=1, owner="").__enter__()


_HOLDER = textwrap.dedent(
    """
    import sys, time, statevault
    vault = statevault.open(sys.argv[1])
    run = vault.run("job")
    held = run.lease(ttl=float(sys.argv[2]), owner="doomed")
    lease = held.__enter__()
    run.save({"by": "doomed"})
    print("held", lease.token, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize(
    "backend_kind", ["sqlite", "files", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_crashed_holder_lease_expires(vault_url: str) -> None:
    """A SIGKILLed holder needs no unlock: its lease ends after ttl and the run moves on."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, vault_url, "3.0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as holder:
        try:
            assert holder.stdout is not None
            line = holder.stdout.readline().split()
            assert line[0] == "held", line
            doomed_token = int(line[1])
        finally:
            holder.send_signal(signal.SIGKILL)
    with statevault.open(vault_url) as vault:
        run = vault.run("job")
        with pytest.raises(statevault.LeaseHeld):
            run.save({"by": "too early"}, force=True)
        with run.lease(ttl=10, wait=10) as lease:
            assert lease.token > doomed_token
            assert run.load() == {"by": "doomed"}
            run.save({"by": "successor"})


def test_at_exit_the_renewer_finishes_its_renewal_and_starts_no_other(
    vault: statevault.Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renewer is a daemon thread, which the interpreter freezes where it stands at
    exit: frozen inside a renewal, it would keep the run's lock (a flock on files) and
    hang the exiting process, and every process waiting on that lock, forever. So at
    exit (`atexit`) it is stopped, and the renewal under way is waited for."""
    from statevault.engine import leases  # noqa: PLC0415 - the renewer under test

    renewer = leases._Renewer()
    monkeypatch.setattr(leases, "_RENEWER", renewer)
    inside, finish = threading.Event(), threading.Event()
    renewals: list[float] = []
    backend = vault._backend
    renew = backend.renew_lease

    def slow_renew(run_id: str, token: int, ttl: float) -> statevault.LeaseGrant:
        renewals.append(time.monotonic())
        inside.set()
        finish.wait(10)
        return renew(run_id, token, ttl)

    monkeypatch.setattr(backend, "renew_lease", slow_renew)
    with vault.run("job").lease(ttl=0.3):
        assert inside.wait(5), "a renewal started"
        stopping = threading.Thread(target=renewer.stop)
        stopping.start()
        stopping.join(0.3)
        assert stopping.is_alive(), "stop waits for the renewal under way"
        finish.set()
        stopping.join(5)
        assert not stopping.is_alive()
        time.sleep(0.4)  # past the next renewal's time
    assert len(renewals) == 1, "no renewal after stop"
