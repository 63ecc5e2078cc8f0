"""The conformance suite every backend passes, shipped for third-party backends too.

Use it by subclassing in a test module:

    from statevault.testing import BackendConformance, VaultConformance

    class TestMyBackend(BackendConformance):
        def open_backend(self, location, *, initial_meta):
            return MyBackend(location, initial_meta=initial_meta)

    class TestMyVault(VaultConformance):
        def vault_url(self, location):
            return f"mine://{location}"

`location` is a fresh path (a `pathlib.Path` that does not exist yet) for each test.
Needs pytest; statevault itself does not.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import pathlib
import random
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import statevault
from statevault.backends.base import (
    Backend,
    MappingBackend,
    NotifyingBackend,
    RewritingBackend,
    StoredCheckpoint,
    initial_meta,
)
from statevault.errors import (
    ConflictError,
    InvalidRunIdError,
    LeaseHeld,
    LeaseLost,
    VaultClosedError,
)

ODD_RUN_IDS = [
    "order-42",
    "a/b/c",
    "../../escape",
    "..",
    ".",
    " spaced  id ",
    "ÄÖÜ 名前 🚀",
    "A",
    "a",
    "x" * 256,
    "-leading-dash",
    "tab\tand\nnewline",
    "%2e%2e",
]


def _digest(n: int) -> bytes:
    return n.to_bytes(4, "big") * 8


class BackendConformance:
    """Byte-level behaviour of the `Backend` protocol."""

    def open_backend(self, location: pathlib.Path, *, initial_meta: Mapping[str, bytes]) -> Backend:
        raise NotImplementedError

    reopens = True
    """False for backends whose data dies with the handle (memory)."""

    @pytest.fixture
    def location(self, tmp_path: pathlib.Path) -> pathlib.Path:
        return tmp_path / "vault"

    @pytest.fixture
    def backend(self, location: pathlib.Path) -> Iterator[Backend]:
        backend = self.open_backend(location, initial_meta=initial_meta(1, {"k": b"v"}))
        yield backend
        backend.close()

    # -- metadata ---------------------------------------------------------------------
    def test_initial_meta_written(self, backend: Backend) -> None:
        meta = backend.get_meta()
        assert meta["format"] == b"1"
        assert meta["k"] == b"v"

    def test_set_meta(self, backend: Backend) -> None:
        backend.set_meta("k", b"w")
        backend.set_meta("new", b"\x00\xff")
        assert backend.get_meta()["k"] == b"w"
        assert backend.get_meta()["new"] == b"\x00\xff"

    def test_reopen_keeps_meta_and_ignores_new_initial_meta(
        self, backend: Backend, location: pathlib.Path
    ) -> None:
        if not self.reopens:
            pytest.skip("this backend does not persist")
        backend.set_meta("k", b"kept")
        backend.close()
        again = self.open_backend(location, initial_meta=initial_meta(1, {"k": b"other"}))
        try:
            assert again.get_meta()["k"] == b"kept"
        finally:
            again.close()

    # -- objects ----------------------------------------------------------------------
    def test_put_get_has(self, backend: Backend) -> None:
        items = [(_digest(i), bytes([i]) * (i * 100 + 1)) for i in range(20)]
        backend.put_objects(items)
        got = backend.get_objects([d for d, _ in items] + [_digest(999)])
        assert got == dict(items)
        assert backend.has_objects([_digest(1), _digest(999)]) == {_digest(1)}

    def test_put_is_idempotent_and_first_write_wins(self, backend: Backend) -> None:
        backend.put_objects([(_digest(1), b"first")])
        backend.put_objects([(_digest(1), b"first")])
        backend.put_objects([(_digest(1), b"second")])
        assert backend.get_objects([_digest(1)]) == {_digest(1): b"first"}
        assert list(backend.scan_objects()).count(_digest(1)) == 1

    def test_large_object(self, backend: Backend) -> None:
        data = os.urandom(3 << 20)
        backend.put_objects([(_digest(7), data)])
        assert backend.get_objects([_digest(7)])[_digest(7)] == data

    def test_map_object_gives_the_stored_bytes(self, backend: Backend) -> None:
        if not backend.capabilities.map_objects:
            pytest.skip("this backend does not claim map_objects")
        assert isinstance(backend, MappingBackend)
        data = os.urandom(3 << 20)
        backend.put_objects([(_digest(7), data), (_digest(8), b"")])
        view = backend.map_object(_digest(7))
        assert view is not None and view.readonly and view == data
        with pytest.raises(TypeError):
            view[0] = 0  # read-only: a map never writes the stored object
        empty = backend.map_object(_digest(8))
        assert empty is not None and empty.tobytes() == b"", "an empty object maps to no bytes"
        assert backend.map_object(_digest(9)) is None
        backend.delete_objects([_digest(7)])
        assert view == data, "a map stays readable after its object is deleted"

    def test_delete_and_scan(self, backend: Backend) -> None:
        backend.put_objects([(_digest(i), b"x") for i in range(5)])
        backend.delete_objects([_digest(0), _digest(1), _digest(99)])
        assert sorted(backend.scan_objects()) == sorted(_digest(i) for i in range(2, 5))

    def test_many_objects_in_one_call(self, backend: Backend) -> None:
        items = [(_digest(i), str(i).encode()) for i in range(1200)]
        backend.put_objects(items)
        assert len(backend.get_objects(d for d, _ in items)) == 1200
        assert len(backend.has_objects(d for d, _ in items)) == 1200

    # -- checkpoints and heads --------------------------------------------------------
    def test_empty_run(self, backend: Backend) -> None:
        assert backend.head("none") == 0
        assert backend.read_checkpoint("none", 1) is None
        assert backend.read_checkpoints("none") == []
        assert backend.list_runs() == []
        assert backend.delete_run("none") is False

    def test_commit_sequence(self, backend: Backend) -> None:
        for seq in range(1, 6):
            backend.commit_checkpoint("r", seq, b"rec%d" % seq, expected_head=seq - 1)
        assert backend.head("r") == 5
        assert backend.read_checkpoint("r", 3) == b"rec3"
        newest = backend.read_checkpoints("r")
        assert [c.seq for c in newest] == [5, 4, 3, 2, 1]
        assert [c.record for c in backend.read_checkpoints("r", newest_first=False, limit=2)] == [
            b"rec1",
            b"rec2",
        ]

    def test_commit_writes_objects_with_record(self, backend: Backend) -> None:
        backend.commit_checkpoint("r", 1, b"rec", expected_head=0, objects=[(_digest(5), b"obj")])
        assert backend.get_objects([_digest(5)]) == {_digest(5): b"obj"}

    def test_compare_and_swap(self, backend: Backend) -> None:
        backend.commit_checkpoint("r", 1, b"one", expected_head=0)
        with pytest.raises(ConflictError) as caught:
            backend.commit_checkpoint("r", 1, b"other", expected_head=0)
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        assert backend.read_checkpoint("r", 1) == b"one"
        assert backend.head("r") == 1

    def test_compare_and_swap_checks_the_head_record(self, backend: Backend) -> None:
        backend.commit_checkpoint("r", 1, b"old-1", expected_head=0)
        backend.delete_run("r")
        backend.commit_checkpoint("r", 1, b"new-1", expected_head=0)
        # A writer that saw the deleted history expects head 1 = b"old-1": same seq,
        # different record. It must not append to the new history (the ABA case).
        with pytest.raises(ConflictError):
            backend.commit_checkpoint("r", 2, b"late", expected_head=1, expected_record=b"old-1")
        backend.commit_checkpoint("r", 2, b"new-2", expected_head=1, expected_record=b"new-1")
        assert [c.record for c in backend.read_checkpoints("r")] == [b"new-2", b"new-1"]

    def test_seq_must_follow_expected_head(self, backend: Backend) -> None:
        with pytest.raises(ValueError):
            backend.commit_checkpoint("r", 3, b"x", expected_head=0)

    def test_list_runs_with_prefix(self, backend: Backend) -> None:
        for run_id in ["b", "a", "ab", "abc", "b/1", "é", "\U0010ffff"]:
            backend.commit_checkpoint(run_id, 1, b"x", expected_head=0)
        assert backend.list_runs() == sorted(["b", "a", "ab", "abc", "b/1", "é", "\U0010ffff"])
        assert backend.list_runs("ab") == ["ab", "abc"]
        assert backend.list_runs("b") == ["b", "b/1"]
        assert backend.list_runs("z") == []
        assert backend.list_runs("\U0010ffff") == ["\U0010ffff"]

    def test_delete_run(self, backend: Backend) -> None:
        backend.commit_checkpoint("gone", 1, b"x", expected_head=0)
        backend.commit_checkpoint("gone", 2, b"y", expected_head=1)
        backend.commit_checkpoint("kept", 1, b"z", expected_head=0)
        assert backend.delete_run("gone") is True
        assert backend.head("gone") == 0
        assert backend.list_runs() == ["kept"]
        # A late writer that still believes head 2 must not resurrect the run.
        with pytest.raises(ConflictError):
            backend.commit_checkpoint("gone", 3, b"late", expected_head=2)
        backend.commit_checkpoint("gone", 1, b"fresh", expected_head=0)
        assert backend.read_checkpoint("gone", 1) == b"fresh"

    @pytest.mark.parametrize("run_id", ODD_RUN_IDS)
    def test_odd_run_ids_are_distinct(self, backend: Backend, run_id: str) -> None:
        backend.commit_checkpoint(run_id, 1, run_id.encode(), expected_head=0)
        backend.commit_checkpoint("control", 1, b"c", expected_head=0)
        assert backend.read_checkpoint(run_id, 1) == run_id.encode()
        assert run_id in backend.list_runs()
        assert backend.read_checkpoint("control", 1) == b"c"

    def test_case_variants_do_not_collide(self, backend: Backend) -> None:
        backend.commit_checkpoint("Run", 1, b"upper", expected_head=0)
        backend.commit_checkpoint("run", 1, b"lower", expected_head=0)
        assert backend.read_checkpoint("Run", 1) == b"upper"
        assert backend.read_checkpoint("run", 1) == b"lower"

    @pytest.mark.parametrize("bad", ["", "x" * 257, "nul\x00byte", 42, None])
    def test_invalid_run_ids(self, backend: Backend, bad: Any) -> None:
        with pytest.raises(InvalidRunIdError):
            backend.commit_checkpoint(bad, 1, b"x", expected_head=0)

    def test_persists_across_reopen(self, backend: Backend, location: pathlib.Path) -> None:
        if not self.reopens:
            pytest.skip("this backend does not persist")
        backend.commit_checkpoint("r", 1, b"rec", expected_head=0, objects=[(_digest(1), b"o")])
        backend.close()
        again = self.open_backend(location, initial_meta=initial_meta(1, {}))
        try:
            assert again.read_checkpoint("r", 1) == b"rec"
            assert again.get_objects([_digest(1)]) == {_digest(1): b"o"}
        finally:
            again.close()

    def test_closed_backend_refuses(self, backend: Backend) -> None:
        backend.close()
        with pytest.raises(VaultClosedError):
            backend.head("r")
        with pytest.raises(VaultClosedError):
            backend.put_objects([(_digest(1), b"x")])
        backend.close()  # closing twice is harmless

    # -- repair: roll_back and quarantine --------------------------------------------
    def test_roll_back_removes_the_newest_records(self, backend: Backend) -> None:
        for seq in range(1, 6):
            backend.commit_checkpoint("r", seq, b"rec%d" % seq, expected_head=seq - 1)
        backend.commit_checkpoint("other", 1, b"o1", expected_head=0)
        removed = backend.roll_back("r", 2)
        assert [(c.seq, c.record) for c in removed] == [(3, b"rec3"), (4, b"rec4"), (5, b"rec5")]
        assert backend.head("r") == 2
        assert [c.record for c in backend.read_checkpoints("r")] == [b"rec2", b"rec1"]
        assert backend.read_checkpoint("r", 3) is None
        assert backend.read_checkpoint("other", 1) == b"o1"
        # A writer that saw a removed head must not append to the shorter history...
        with pytest.raises(ConflictError):
            backend.commit_checkpoint("r", 6, b"late", expected_head=5, expected_record=b"rec5")
        # ...while one on the kept head goes on from there.
        backend.commit_checkpoint("r", 3, b"new3", expected_head=2, expected_record=b"rec2")
        assert [c.seq for c in backend.read_checkpoints("r")] == [3, 2, 1]
        assert backend.read_checkpoint("r", 3) == b"new3"

    def test_roll_back_to_zero_removes_the_run(self, backend: Backend) -> None:
        backend.commit_checkpoint("r", 1, b"a", expected_head=0)
        backend.commit_checkpoint("r", 2, b"b", expected_head=1)
        removed = backend.roll_back("r", 0)
        assert [c.record for c in removed] == [b"a", b"b"]
        assert backend.head("r") == 0
        assert backend.list_runs() == []
        assert backend.read_checkpoints("r") == []
        backend.commit_checkpoint("r", 1, b"fresh", expected_head=0)
        assert backend.read_checkpoints("r") == [StoredCheckpoint(1, b"fresh")]

    def test_roll_back_past_the_head_changes_nothing(self, backend: Backend) -> None:
        assert backend.roll_back("none", 0) == []
        backend.commit_checkpoint("r", 1, b"a", expected_head=0)
        assert backend.roll_back("r", 1) == []
        assert backend.roll_back("r", 7) == []
        assert backend.head("r") == 1

    @pytest.mark.parametrize("bad", [-1, True, 1.5, "1", None])
    def test_roll_back_checks_keep_through(self, backend: Backend, bad: Any) -> None:
        backend.commit_checkpoint("r", 1, b"a", expected_head=0)
        with pytest.raises(ValueError):
            backend.roll_back("r", bad)
        assert backend.head("r") == 1

    def test_roll_back_lasts(self, backend: Backend, location: pathlib.Path) -> None:
        if not self.reopens:
            pytest.skip("this backend does not persist")
        for seq in range(1, 4):
            backend.commit_checkpoint("r", seq, b"%d" % seq, expected_head=seq - 1)
        backend.roll_back("r", 1)
        backend.close()
        again = self.open_backend(location, initial_meta=initial_meta(1, {}))
        try:
            assert again.head("r") == 1
            again.commit_checkpoint("r", 2, b"two", expected_head=1, expected_record=b"1")
            assert [c.record for c in again.read_checkpoints("r")] == [b"two", b"1"]
        finally:
            again.close()

    def test_a_head_rewritten_by_another_handle_is_a_conflict(
        self, backend: Backend, location: pathlib.Path
    ) -> None:
        """Another handle rolls the head back and commits the same seq again, with other
        bytes of the same length: a writer that knew the old head must not commit."""
        if not self.reopens:
            pytest.skip("this backend does not persist")
        for seq in range(1, 4):
            backend.commit_checkpoint("r", seq, b"rec%d" % seq, expected_head=seq - 1)
        other = self.open_backend(location, initial_meta=initial_meta(1, {}))
        try:
            other.roll_back("r", 2)
            other.commit_checkpoint("r", 3, b"REC3", expected_head=2, expected_record=b"rec2")
        finally:
            other.close()
        with pytest.raises(ConflictError):
            backend.commit_checkpoint("r", 4, b"rec4", expected_head=3, expected_record=b"rec3")
        backend.commit_checkpoint("r", 4, b"rec4", expected_head=3, expected_record=b"REC3")
        assert [c.record for c in backend.read_checkpoints("r")] == [
            b"rec4",
            b"REC3",
            b"rec2",
            b"rec1",
        ]

    def test_quarantine_moves_objects_aside(self, backend: Backend) -> None:
        backend.put_objects([(_digest(i), b"data%d" % i) for i in range(4)])
        moved = backend.quarantine_objects([_digest(1), _digest(2), _digest(99), _digest(1)])
        assert moved == 2
        assert backend.get_objects([_digest(i) for i in range(4)]) == {
            _digest(0): b"data0",
            _digest(3): b"data3",
        }
        assert backend.has_objects([_digest(1), _digest(2), _digest(3)]) == {_digest(3)}
        assert sorted(backend.scan_objects()) == [_digest(0), _digest(3)]
        assert backend.quarantined_objects() == {_digest(1): b"data1", _digest(2): b"data2"}
        assert backend.quarantine_objects([]) == 0
        assert backend.quarantine_objects([_digest(1)]) == 0  # already aside

    def test_quarantine_never_deletes(self, backend: Backend) -> None:
        backend.put_objects([(_digest(1), b"damaged once")])
        assert backend.quarantine_objects([_digest(1)]) == 1
        # A fresh copy stored after the quarantine is an object like any other...
        backend.put_objects([(_digest(1), b"damaged twice")])
        assert backend.get_objects([_digest(1)]) == {_digest(1): b"damaged twice"}
        # ...and quarantining it keeps both copies; the first is the one reported.
        assert backend.quarantine_objects([_digest(1)]) == 1
        assert backend.quarantined_objects() == {_digest(1): b"damaged once"}
        assert backend.has_objects([_digest(1)]) == set()

    def test_quarantine_lasts(self, backend: Backend, location: pathlib.Path) -> None:
        if not self.reopens:
            pytest.skip("this backend does not persist")
        assert backend.quarantined_objects() == {}
        backend.put_objects([(_digest(1), b"one"), (_digest(2), b"two")])
        backend.quarantine_objects([_digest(2)])
        backend.close()
        again = self.open_backend(location, initial_meta=initial_meta(1, {}))
        try:
            assert again.quarantined_objects() == {_digest(2): b"two"}
            assert list(again.scan_objects()) == [_digest(1)]
        finally:
            again.close()

    def test_threads_race_for_each_seq(self, backend: Backend) -> None:
        wins: list[tuple[int, int]] = []
        errors: list[BaseException] = []

        def writer(ident: int) -> None:
            for _ in range(30):
                head = backend.head("shared")
                try:
                    backend.commit_checkpoint("shared", head + 1, b"%d" % ident, expected_head=head)
                    wins.append((head + 1, ident))
                except ConflictError:
                    continue
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        seqs = sorted(seq for seq, _ in wins)
        assert seqs == list(range(1, len(seqs) + 1)), "one winner per seq, no gaps"
        for seq, ident in wins:
            assert backend.read_checkpoint("shared", seq) == b"%d" % ident

    # -- leases -----------------------------------------------------------------------
    @pytest.fixture
    def leasing(self, backend: Backend) -> Backend:
        if not backend.capabilities.leases:
            pytest.skip("this backend does not claim leases")
        return backend

    def test_lease_grants_and_refuses(self, leasing: Backend) -> None:
        assert leasing.read_lease("r") is None
        grant = leasing.acquire_lease("r", "alice", 30)
        assert (grant.run_id, grant.owner) == ("r", "alice")
        assert grant.expires_at > time.time() + 20
        assert leasing.read_lease("r") == grant
        with pytest.raises(LeaseHeld) as caught:
            leasing.acquire_lease("r", "bob", 30)
        assert caught.value.owner == "alice"
        assert caught.value.expires_at == pytest.approx(grant.expires_at)
        other = leasing.acquire_lease("other-run", "bob", 30)
        assert other.owner == "bob"

    def test_every_grant_gets_a_larger_token(self, leasing: Backend) -> None:
        tokens = []
        for owner in ["a", "a", "b", "a"]:
            grant = leasing.acquire_lease("r", owner, 30)
            tokens.append(grant.token)
            leasing.release_lease("r", grant.token)
        assert tokens == sorted(set(tokens)), tokens
        # The same owner acquiring again gets a new token; its old one is stale.
        first = leasing.acquire_lease("r", "a", 30)
        second = leasing.acquire_lease("r", "a", 30)
        assert second.token > first.token
        with pytest.raises(LeaseLost):
            leasing.renew_lease("r", first.token, 30)
        with pytest.raises(LeaseLost):
            leasing.commit_checkpoint("r", 1, b"x", expected_head=0, lease_token=first.token)
        leasing.commit_checkpoint("r", 1, b"x", expected_head=0, lease_token=second.token)

    def test_writes_are_fenced(self, leasing: Backend) -> None:
        leasing.commit_checkpoint("r", 1, b"free", expected_head=0)
        grant = leasing.acquire_lease("r", "holder", 30)
        with pytest.raises(LeaseHeld):
            leasing.commit_checkpoint("r", 2, b"intruder", expected_head=1)
        with pytest.raises(LeaseHeld):
            leasing.delete_run("r")
        leasing.commit_checkpoint("r", 2, b"held", expected_head=1, lease_token=grant.token)
        with pytest.raises(LeaseLost):
            leasing.commit_checkpoint("r", 3, b"bad", expected_head=2, lease_token=grant.token + 1)
        # The lease is checked with the compare-and-swap: a stale token with a stale head
        # hears of the lease, and a fresh token with a stale head of the conflict.
        with pytest.raises(ConflictError):
            leasing.commit_checkpoint("r", 2, b"late", expected_head=1, lease_token=grant.token)
        leasing.release_lease("r", grant.token)
        with pytest.raises(LeaseLost) as lost:
            leasing.commit_checkpoint("r", 3, b"after", expected_head=2, lease_token=grant.token)
        assert lost.value.token == grant.token
        assert [c.record for c in leasing.read_checkpoints("r")] == [b"held", b"free"]
        leasing.commit_checkpoint("r", 3, b"free again", expected_head=2)
        assert leasing.head("r") == 3

    def test_roll_back_is_fenced(self, leasing: Backend) -> None:
        for seq in (1, 2, 3):
            leasing.commit_checkpoint("r", seq, b"%d" % seq, expected_head=seq - 1)
        grant = leasing.acquire_lease("r", "holder", 30)
        with pytest.raises(LeaseHeld):
            leasing.roll_back("r", 1)
        with pytest.raises(LeaseLost):
            leasing.roll_back("r", 1, lease_token=grant.token + 1)
        assert leasing.head("r") == 3
        assert [c.seq for c in leasing.roll_back("r", 1, lease_token=grant.token)] == [2, 3]
        assert leasing.head("r") == 1

    def test_expired_lease_is_lost_and_free(self, leasing: Backend) -> None:
        stale = leasing.acquire_lease("r", "sleeper", 0.2)
        time.sleep(0.3)
        with pytest.raises(LeaseLost):
            leasing.commit_checkpoint("r", 1, b"late", expected_head=0, lease_token=stale.token)
        with pytest.raises(LeaseLost):
            leasing.renew_lease("r", stale.token, 30)
        successor = leasing.acquire_lease("r", "successor", 30)
        assert successor.token > stale.token
        leasing.release_lease("r", stale.token)  # not current: a no-op
        assert leasing.read_lease("r") == successor
        with pytest.raises(LeaseLost):
            leasing.commit_checkpoint("r", 1, b"late", expected_head=0, lease_token=stale.token)
        assert leasing.head("r") == 0

    def test_renew_extends(self, leasing: Backend) -> None:
        grant = leasing.acquire_lease("r", "a", 0.3)
        renewed = leasing.renew_lease("r", grant.token, 30)
        assert (renewed.token, renewed.owner) == (grant.token, "a")
        assert renewed.expires_at > grant.expires_at
        time.sleep(0.4)
        leasing.commit_checkpoint("r", 1, b"x", expected_head=0, lease_token=grant.token)

    def test_delete_run_is_fenced_and_tokens_outlive_it(
        self, leasing: Backend, location: pathlib.Path
    ) -> None:
        leasing.commit_checkpoint("r", 1, b"x", expected_head=0)
        grant = leasing.acquire_lease("r", "a", 30)
        with pytest.raises(LeaseLost):
            leasing.delete_run("r", lease_token=grant.token + 5)
        assert leasing.delete_run("r", lease_token=grant.token) is True
        leasing.release_lease("r", grant.token)
        after_delete = leasing.acquire_lease("r", "b", 30)
        assert after_delete.token > grant.token
        if not self.reopens:
            return
        leasing.close()
        again = self.open_backend(location, initial_meta=initial_meta(1, {}))
        try:
            with pytest.raises(LeaseHeld):
                again.acquire_lease("r", "c", 30)
            again.release_lease("r", after_delete.token)
            assert again.acquire_lease("r", "c", 30).token > after_delete.token
        finally:
            again.close()

    @pytest.mark.parametrize(("owner", "ttl"), [("", 1), ("a", 0), ("a", -1), ("a", float("inf"))])
    def test_bad_lease_arguments(self, leasing: Backend, owner: str, ttl: float) -> None:
        with pytest.raises(ValueError):
            leasing.acquire_lease("r", owner, ttl)

    def test_threads_race_for_a_lease(self, leasing: Backend) -> None:
        """Holders never overlap, and every grant has a token of its own."""
        grants: list[int] = []
        holding: list[str] = []
        overlaps: list[tuple[str, str]] = []
        errors: list[BaseException] = []

        def worker(ident: int) -> None:
            owner = f"w{ident}"
            for _ in range(10):
                try:
                    grant = leasing.acquire_lease("shared", owner, 30)
                except LeaseHeld:
                    continue
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                    return
                grants.append(grant.token)
                if holding:
                    overlaps.append((holding[0], owner))
                holding.append(owner)
                time.sleep(0.001)
                holding.remove(owner)
                leasing.release_lease("shared", grant.token)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert not overlaps
        assert grants and len(set(grants)) == len(grants)

    # -- rewriting records ---------------------------------------------------------------
    @pytest.fixture
    def rewriting(self, backend: Backend) -> RewritingBackend:
        if not backend.capabilities.rewrite_records:
            pytest.skip("this backend does not claim rewrite_records")
        assert isinstance(backend, RewritingBackend)
        return backend

    def test_rewrite_replaces_records_below_the_head(self, rewriting: RewritingBackend) -> None:
        for seq in range(1, 4):
            rewriting.commit_checkpoint("r", seq, b"old%d" % seq, expected_head=seq - 1)
        done = rewriting.rewrite_records(
            "r",
            [(1, b"old1", b"new1"), (2, b"stale", b"new2"), (3, b"old3", b"new3")],
            objects=[(_digest(7), b"dictionary")],
        )
        # 2: not the bytes the caller read; 3: the head, which writers compare against.
        assert done == 1
        assert [c.record for c in rewriting.read_checkpoints("r", newest_first=False)] == [
            b"new1",
            b"old2",
            b"old3",
        ]
        assert rewriting.get_objects([_digest(7)]) == {_digest(7): b"dictionary"}
        rewriting.commit_checkpoint("r", 4, b"old4", expected_head=3, expected_record=b"old3")
        assert rewriting.rewrite_records("r", [(3, b"old3", b"new3")]) == 1
        assert rewriting.read_checkpoint("r", 3) == b"new3"
        assert rewriting.rewrite_records("missing", [(1, b"x", b"y")]) == 0

    def test_rewrite_lasts(self, rewriting: RewritingBackend, location: pathlib.Path) -> None:
        if not self.reopens:
            pytest.skip("this backend does not persist")
        rewriting.commit_checkpoint("r", 1, b"old1", expected_head=0)
        rewriting.commit_checkpoint("r", 2, b"old2", expected_head=1)
        assert rewriting.rewrite_records("r", [(1, b"old1", b"new1")]) == 1
        rewriting.close()
        reopened = self.open_backend(location, initial_meta={})
        try:
            assert reopened.read_checkpoint("r", 1) == b"new1"
            assert reopened.head("r") == 2
        finally:
            reopened.close()

    def test_rewrite_checks_its_arguments(self, rewriting: RewritingBackend) -> None:
        rewriting.commit_checkpoint("r", 1, b"a", expected_head=0)
        with pytest.raises(ValueError, match="seq"):
            rewriting.rewrite_records("r", [(0, b"a", b"b")])
        with pytest.raises(TypeError):
            rewriting.rewrite_records("r", [(1, "a", b"b")])  # type: ignore[list-item]
        assert rewriting.read_checkpoint("r", 1) == b"a"

    # -- notification -------------------------------------------------------------------
    def test_listeners_wake_on_commit(self, backend: Backend) -> None:
        if not backend.capabilities.notify:
            pytest.skip("this backend does not claim notify")
        assert isinstance(backend, NotifyingBackend)
        listener = backend.listen()
        try:
            assert listener.wait(0.05) is False
            timer = threading.Timer(
                0.05, backend.commit_checkpoint, ("r", 1, b"x"), {"expected_head": 0}
            )
            timer.start()
            started = time.monotonic()
            assert listener.wait(10) is True
            assert time.monotonic() - started < 5
            timer.join()
        finally:
            listener.close()


# -- vault level -----------------------------------------------------------------------

SHARED_RUN = "shared"


def _record_bytes(vault: statevault.Vault, run_id: str, seq: int) -> bytes:
    """A record's stored bytes, read through the vault's backend."""
    record = vault._backend.read_checkpoint(run_id, seq)
    assert record is not None
    return record


def _hammer(url: str, worker: int, saves: int, out: Any) -> None:
    """A worker process: saves to its own run, and appends to the shared run optimistically.

    Reports each acknowledged save on `out` only after `save` returned.
    """
    vault = statevault.open(url)
    try:
        own = vault.run(f"worker-{worker}")
        for i in range(saves):
            checkpoint = own.save({"worker": worker, "i": i})
            out.put(("own", worker, i, checkpoint.seq))
        shared = vault.run(SHARED_RUN)
        for i in range(saves):
            while True:
                state = shared.load(default={"log": []})
                state["log"].append([worker, i])
                try:
                    checkpoint = shared.save(state)
                except statevault.ConflictError:
                    continue
                out.put(("shared", worker, i, checkpoint.seq))
                break
    finally:
        vault.close()
        out.put(("done", worker, 0, 0))


class VaultConformance:
    """Public-API behaviour over a backend, including many processes at once."""

    def vault_url(self, location: pathlib.Path) -> str:
        raise NotImplementedError

    multi_process = True
    """False for backends that cannot be shared between processes (memory)."""

    persistent = True
    """False for backends whose data dies with the vault handle (memory)."""

    processes = 8
    saves_per_process = 12

    @pytest.fixture
    def url(self, tmp_path: pathlib.Path) -> str:
        return self.vault_url(tmp_path / "vault")

    def test_save_load_roundtrip(self, url: str) -> None:
        with statevault.open(url) as vault:
            run = vault.run("order-42")
            first = run.save({"step": 1, "items": ["a"]}, meta={"note": "after fetch"})
            second = run.save({"step": 2, "items": ["a", "b"], "blob": os.urandom(20000)})
            assert (first.seq, second.seq, second.parent) == (1, 2, 1)
            assert first.meta == {"note": "after fetch"}
            assert run.load(at=1) == {"step": 1, "items": ["a"]}
            assert run.load()["step"] == 2
            assert [c.seq for c in run.checkpoints()] == [2, 1]
            assert vault.runs() == ["order-42"]
            assert vault.verify().ok

    def test_stale_lease_holder_is_refused(self, url: str) -> None:
        """A holder whose lease expired while it was paused cannot overwrite its successor."""
        with statevault.open(url) as vault:
            if not vault.capabilities.leases:
                pytest.skip("this backend does not claim leases")
            stale, successor = vault.run("r"), vault.run("r")
            with stale.lease(ttl=0.3, renew=False) as old:
                stale.save({"by": "stale"})
                with pytest.raises(statevault.LeaseHeld):
                    successor.save({"by": "intruder"}, force=True)
                time.sleep(0.5)
                with successor.lease(ttl=30) as new:
                    assert new.token > old.token
                    successor.save({"by": "successor"}, force=True)
                    with pytest.raises(statevault.LeaseLost):
                        stale.save({"by": "stale again"}, force=True)
            assert vault.run("r").load() == {"by": "successor"}

    def test_watch_reports_commits(self, url: str) -> None:
        """`Vault.watch` sees every commit after it started, also from another thread."""
        with statevault.open(url) as vault:
            vault.run("w").save({"i": 0})
            with vault.watch(prefix="w", poll=0.02, timeout=2) as feed:

                def commit() -> None:
                    run = vault.run("w")
                    for i in range(1, 6):
                        run.save({"i": i}, force=True)

                writer = threading.Thread(target=commit)
                writer.start()
                seen = []
                for checkpoint in feed:
                    seen.append(checkpoint.seq)
                    if len(seen) == 5:
                        feed.stop()
                writer.join()
            assert seen == [2, 3, 4, 5, 6]

    def test_conflict_and_force(self, url: str) -> None:
        with statevault.open(url) as vault:
            a = vault.run("r")
            b = vault.run("r")
            a.save({"v": 1})
            with pytest.raises(statevault.ConflictError):
                b.save({"v": "lost?"})
            assert vault.run("r").load() == {"v": 1}
            b.save({"v": 2}, force=True)
            assert vault.run("r").load() == {"v": 2}

    def test_trees_and_journal(self, url: str) -> None:
        """Large states as trees, transactions, deltas, folds and history, end to end."""
        words = ["order", "ship", "agent", "tool", "retry", "queue"]
        state: dict[str, Any] = {
            "messages": [
                {"i": i, "text": " ".join(words[(i * j) % 6] for j in range(50))}
                for i in range(4000)
            ],
            "blob": bytes(range(256)) * 9000,
            "step": 0,
        }
        policy = statevault.CheckpointPolicy(records=5)
        vault = statevault.open(url, policy=policy)
        try:
            run = vault.run("agent")
            first = run.save(state)
            for step in range(1, 13):
                with run.transaction() as s:
                    s["messages"].append({"i": -step, "text": "new"})
                    s["step"] += 1
            second = run.save({**state, "step": 99})
            assert second.stored_bytes < first.stored_bytes / 10, "only changed chunks"
            kinds = [c.kind for c in reversed(run.checkpoints())]
            assert kinds.count("fold") == 2
            assert kinds.count("delta") == 12
            if self.persistent:
                vault.close()
                vault = statevault.open(url, policy=policy)
            run = vault.run("agent")
            assert run.load(at=7)["step"] == 5
            assert run.load(at=7)["messages"][-1] == {"i": -5, "text": "new"}
            assert run.get("messages.3999.i") == 3999
            assert run.get("step") == 99
            assert run.load()["blob"] == state["blob"]
            report = vault.verify()
            assert report.ok, report.problems
        finally:
            vault.close()

    def test_journal_is_relocated_into_its_folds(self, url: str) -> None:
        """Deltas are re-encoded against the fold after them: smaller, same history."""
        words = [
            "order",
            "ship",
            "agent",
            "tool",
            "retry",
            "queue",
            "price",
            "wait",
            "plan",
            "check",
            "send",
            "read",
        ]
        rnd = random.Random(5)
        messages = [
            {"i": i, "text": " ".join(rnd.choice(words) for _ in range(800))} for i in range(30)
        ]
        policy = statevault.CheckpointPolicy(records=10)
        with statevault.open(url, policy=policy) as vault:
            run = vault.run("chat")
            run.save({"messages": [], "step": 0})
            expected: list[dict[str, Any]] = [{"messages": [], "step": 0}]
            before: dict[int, int] = {}
            for message in messages:
                with run.transaction() as s:
                    s["messages"].append(message)
                    s["step"] += 1
                for entry in run.checkpoints(limit=2):
                    if entry.kind == "delta" and entry.seq not in before:
                        before[entry.seq] = len(_record_bytes(vault, "chat", entry.seq))
                expected.append(copy.deepcopy(expected[-1]))
                expected[-1]["messages"].append(message)
                expected[-1]["step"] += 1
            checkpoints = list(reversed(run.checkpoints()))
            folded = {c.seq for c in checkpoints if c.kind == "fold"}
            # Every entry still loads as the state after it; a fold repeats its delta.
            step = 0
            for checkpoint in checkpoints:
                if checkpoint.kind != "fold":
                    step = checkpoint.seq - 1 - sum(1 for f in folded if f < checkpoint.seq)
                assert run.load(at=checkpoint.seq) == expected[step]
            hashes = [c.record_hash for c in checkpoints]
            report = vault.verify()
            assert report.ok, report.problems
            last_fold = max(folded)
            plain = max(before.values())
            relocated = [
                seq
                for seq in before
                if seq < last_fold and len(_record_bytes(vault, "chat", seq)) < plain / 2
            ]
            if vault._backend.capabilities.rewrite_records:
                assert relocated == [seq for seq in before if seq < last_fold]
            assert [c.record_hash for c in reversed(run.checkpoints())] == hashes

    def test_multi_process_no_lost_update(self, url: str) -> None:
        """N processes save to their own runs and race on a shared one.

        Every acknowledged save must be present, in the order of its seq, exactly once.
        """
        if not self.multi_process:
            pytest.skip("this backend is not shared between processes")
        with statevault.open(url) as vault:  # created before the workers race to create it
            assert vault.runs() == []
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        workers = [
            ctx.Process(target=_hammer, args=(url, w, self.saves_per_process, queue))
            for w in range(self.processes)
        ]
        for p in workers:
            p.start()
        acks: list[tuple[str, int, int, int]] = []
        done = 0
        while done < self.processes:
            item = queue.get(timeout=240)
            if item[0] == "done":
                done += 1
            else:
                acks.append(item)
        for p in workers:
            p.join(timeout=60)
            assert p.exitcode == 0
        with statevault.open(url) as vault:
            for worker in range(self.processes):
                run = vault.run(f"worker-{worker}")
                assert run.load() == {"worker": worker, "i": self.saves_per_process - 1}
                assert len(run.checkpoints()) == self.saves_per_process
            shared = vault.run(SHARED_RUN)
            final = shared.load()["log"]
            acked = sorted((seq, w, i) for kind, w, i, seq in acks if kind == "shared")
            assert len(final) == len(acked) == self.processes * self.saves_per_process
            # The log at checkpoint k is the log at k-1 plus exactly the append acked as k.
            assert [tuple(entry) for entry in final] == [(w, i) for _, w, i in acked]
            history = {c.seq for c in shared.checkpoints()}
            assert history == set(range(1, len(acked) + 1))
            report = vault.verify()
            assert report.ok, report.problems
