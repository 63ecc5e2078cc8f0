"""What only the directory backend does: its layout, its opening rules, its files.

The protocol itself is covered for every backend by `statevault.testing`.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

import statevault
from statevault.backends.base import Backend, StoredCheckpoint
from statevault.backends.files import (
    LAYOUT_VERSION,
    MARKER_MAGIC,
    MARKER_NAME,
    FilesBackend,
    decode_marker,
    encode_marker,
    run_dir_name,
)
from statevault.backends.fsio import TEMP_PREFIX, FileIO, pid_alive
from statevault.errors import (
    ConflictError,
    CorruptionError,
    NotAVaultError,
    UnsupportedFormatError,
    VaultClosedError,
)

META = {"format": b"1", "vault_id": b"v-test"}
DEAD_PID = 2**22 + 1  # above Linux's largest pid_max, so never alive
SRC = str(Path(statevault.__file__).resolve().parent.parent)

ODD_IDS = [
    "../../etc",
    "../../../../tmp/escape",
    "a/b",
    "a\\b",
    ".",
    "..",
    " ",
    "-rf",
    "--",
    "ÄÖ 名前",
    "A",
    "a",
    "x" * 256,
    "x" * 255 + "y",
    "/absolute",
    "~",
    "a~b",
    "tab\there",
    "emoji 🙂",
]


def open_vault(path: Path, **kwargs: object) -> FilesBackend:
    return FilesBackend(str(path), initial_meta=META, **kwargs)  # type: ignore[arg-type]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its content (None for directories)."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        found[key] = None if path.is_dir() else path.read_bytes()
    return found


def temp_name(pid: int) -> str:
    return f"{TEMP_PREFIX}{pid}-0123456789ab"


def python(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# -- opening ----------------------------------------------------------------------------
def test_creates_missing_directory_with_layout(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "vault"
    backend = open_vault(path)
    assert isinstance(backend, Backend)
    assert backend.location == str(path)
    assert sorted(os.listdir(path)) == [MARKER_NAME, "locks", "objects", "runs", "tmp", "trash"]
    assert decode_marker((path / MARKER_NAME).read_bytes()) == META
    assert backend.get_meta() == META


def test_relative_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    backend = open_vault(Path("rel"))
    assert backend.location == str(tmp_path / "rel")


def test_empty_directory_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    backend = open_vault(tmp_path / "v")
    backend.commit_checkpoint("r", 1, b"one", expected_head=0)
    assert open_vault(tmp_path / "v").read_checkpoint("r", 1) == b"one"


def test_reopen_keeps_meta_and_ignores_new_initial_meta(tmp_path: Path) -> None:
    open_vault(tmp_path / "v").set_meta("dict", b"\x00\xff" * 100)
    again = FilesBackend(str(tmp_path / "v"), initial_meta={"format": b"9", "other": b"x"})
    assert again.get_meta() == {**META, "dict": b"\x00\xff" * 100}


def test_a_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    before = snapshot(tmp_path)
    with pytest.raises(NotAVaultError, match="is a file"):
        open_vault(target)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "layout",
    [
        {"a.txt": b"hello"},
        {"sub/deep.bin": b"\x00\x01", "README": b"x"},
        # Looks like a vault's insides, but nothing says it is one.
        {"objects/ab/abcd": b"?", "runs/x/id": b"x"},
        {f"{TEMP_PREFIX}whatever": b"not our temp name"},
    ],
)
def test_a_foreign_directory_is_refused_and_left_untouched(
    tmp_path: Path, layout: dict[str, bytes]
) -> None:
    root = tmp_path / "data"
    for rel, content in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    before = snapshot(tmp_path)
    with pytest.raises(NotAVaultError, match="without a STATEVAULT"):
        open_vault(root)
    assert snapshot(tmp_path) == before


def test_a_foreign_statevault_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / MARKER_NAME).write_text("somebody else's file\n")
    before = snapshot(tmp_path)
    with pytest.raises(NotAVaultError, match="not a statevault marker"):
        open_vault(tmp_path / "d")
    assert snapshot(tmp_path) == before


def test_create_false_refuses_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(NotAVaultError, match="does not exist"):
        open_vault(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAVaultError, match="create=False"):
        open_vault(tmp_path / "empty", create=False)
    assert os.listdir(tmp_path / "empty") == []
    open_vault(tmp_path / "v")
    assert open_vault(tmp_path / "v", create=False).get_meta() == META


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "empty"])
def test_damaged_marker_in_a_vault_is_corruption(tmp_path: Path, damage: str) -> None:
    open_vault(tmp_path / "v").commit_checkpoint("r", 1, b"x", expected_head=0)
    marker = tmp_path / "v" / MARKER_NAME
    data = bytearray(marker.read_bytes())
    if damage == "flip":
        data[len(MARKER_MAGIC) + 8] ^= 0x40
    elif damage == "truncate":
        del data[-3:]
    elif damage == "magic":
        data[0] ^= 0x01
    else:
        data.clear()
    marker.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    with pytest.raises(CorruptionError, match="marker"):
        open_vault(tmp_path / "v")
    assert snapshot(tmp_path) == before


def test_marker_damaged_after_open_fails_get_meta(tmp_path: Path) -> None:
    backend = open_vault(tmp_path / "v")
    marker = tmp_path / "v" / MARKER_NAME
    marker.write_bytes(marker.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CorruptionError):
        backend.get_meta()


def test_newer_layout_is_refused_unchanged(tmp_path: Path) -> None:
    open_vault(tmp_path / "v")
    body = MARKER_MAGIC + struct.pack(">HI", LAYOUT_VERSION + 1, 0)
    (tmp_path / "v" / MARKER_NAME).write_bytes(body + struct.pack(">I", zlib.crc32(body)))
    before = snapshot(tmp_path)
    with pytest.raises(UnsupportedFormatError, match=f"format {LAYOUT_VERSION + 1}"):
        open_vault(tmp_path / "v")
    assert snapshot(tmp_path) == before


def test_marker_round_trip() -> None:
    meta = {"": b"", "format": b"1", "ünï": b"\x00" * 1000, "k": bytes(range(256))}
    assert decode_marker(encode_marker(meta)) == meta
    assert encode_marker(meta) == encode_marker(dict(reversed(meta.items())))


# -- run ids and names --------------------------------------------------------------------
def test_odd_run_ids_stay_inside_and_never_collide(tmp_path: Path) -> None:
    root = tmp_path / "v"
    backend = open_vault(root)
    for i, run_id in enumerate(ODD_IDS):
        backend.commit_checkpoint(run_id, 1, f"record {i}".encode(), expected_head=0)
    # Nothing was created outside the vault directory.
    assert sorted(os.listdir(tmp_path)) == ["v"]
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(root.resolve())
    names = os.listdir(root / "runs")
    assert len(names) == len(ODD_IDS)
    # Distinct even on a case-insensitive filesystem, and each a plain, short name.
    assert len({name.lower() for name in names}) == len(ODD_IDS)
    for name in names:
        assert name not in {".", ".."}
        assert "/" not in name and "\\" not in name
        assert name.isascii() and len(name) <= 40 + 1 + 24
    assert sorted(os.listdir(root / "locks")) == sorted(names)
    assert backend.list_runs() == sorted(ODD_IDS)
    for i, run_id in enumerate(ODD_IDS):
        assert backend.head(run_id) == 1
        assert backend.read_checkpoint(run_id, 1) == f"record {i}".encode()
        assert (root / "runs" / run_dir_name(run_id) / "id").read_bytes() == run_id.encode()


def test_list_runs_prefix_through_sanitized_names(tmp_path: Path) -> None:
    backend = open_vault(tmp_path / "v")
    ids = ["ä/1", "ä/2", "a/3", "ö", "p" * 50 + "1", "p" * 50 + "2", "p" * 45]
    for run_id in ids:
        backend.commit_checkpoint(run_id, 1, b"x", expected_head=0)
    assert backend.list_runs("ä/") == ["ä/1", "ä/2"]
    assert backend.list_runs("a") == ["a/3"]
    assert backend.list_runs("p" * 50) == ["p" * 50 + "1", "p" * 50 + "2"]
    assert backend.list_runs("p" * 45) == sorted(ids[4:])
    assert backend.list_runs("zz") == []


def test_run_directory_of_another_id_is_corruption(tmp_path: Path) -> None:
    root = tmp_path / "v"
    open_vault(root).commit_checkpoint("victim", 1, b"v", expected_head=0)
    # Someone copies a run directory under another run's name.
    os.rename(root / "runs" / run_dir_name("victim"), root / "runs" / run_dir_name("other"))
    backend = open_vault(root)
    with pytest.raises(CorruptionError, match="belongs to run 'victim'"):
        backend.head("other")
    with pytest.raises(CorruptionError):
        backend.read_checkpoint("other", 1)
    with pytest.raises(CorruptionError):
        backend.commit_checkpoint("other", 2, b"x", expected_head=1)
    with pytest.raises(CorruptionError):
        backend.delete_run("other")
    with pytest.raises(CorruptionError):
        backend.list_runs()
    assert (root / "runs" / run_dir_name("other") / "log").exists()


def test_checkpoints_without_id_file_are_corruption(tmp_path: Path) -> None:
    root = tmp_path / "v"
    open_vault(root).commit_checkpoint("r", 1, b"x", expected_head=0)
    (root / "runs" / run_dir_name("r") / "id").unlink()
    with pytest.raises(CorruptionError, match="no `id` file"):
        open_vault(root).head("r")


def test_half_made_run_directory_is_completed_by_the_next_commit(tmp_path: Path) -> None:
    root = tmp_path / "v"
    backend = open_vault(root)
    (root / "runs" / run_dir_name("r")).mkdir()  # a crash right after the mkdir
    assert backend.head("r") == 0
    assert backend.list_runs() == []
    backend.commit_checkpoint("r", 1, b"x", expected_head=0)
    assert backend.list_runs() == ["r"]


# -- crash leftovers ----------------------------------------------------------------------
def test_open_removes_dead_temps_and_keeps_live_ones(tmp_path: Path) -> None:
    root = tmp_path / "v"
    open_vault(root).commit_checkpoint("r", 1, b"x", expected_head=0)
    assert not pid_alive(DEAD_PID)
    for directory in (root, root / "tmp"):
        (directory / temp_name(DEAD_PID)).write_bytes(b"half")
        (directory / temp_name(os.getpid())).write_bytes(b"in progress")
    (root / "trash" / "r~0123.77-abc" / "ckpt").mkdir(parents=True)
    (root / "trash" / "r~0123.77-abc" / "ckpt" / "1".zfill(20)).write_bytes(b"old")
    backend = open_vault(root)
    for directory in (root, root / "tmp"):
        assert not (directory / temp_name(DEAD_PID)).exists()
        assert (directory / temp_name(os.getpid())).read_bytes() == b"in progress"
    assert os.listdir(root / "trash") == []
    assert backend.read_checkpoint("r", 1) == b"x"


def test_directory_left_by_interrupted_creation_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "v"
    root.mkdir()
    (root / temp_name(DEAD_PID)).write_bytes(encode_marker(META)[:7])
    backend = open_vault(root)
    assert backend.get_meta() == META
    assert not (root / temp_name(DEAD_PID)).exists()


def test_writes_leave_no_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "v"
    backend = open_vault(root)
    backend.commit_checkpoint("r", 1, b"1", expected_head=0, objects=[(b"\x01" * 32, b"o")])
    backend.commit_checkpoint("r", 2, b"2", expected_head=1)
    backend.set_meta("k", b"v")
    backend.delete_run("r")
    assert os.listdir(root / "tmp") == []
    assert os.listdir(root / "trash") == []
    assert not list(root.rglob(f"{TEMP_PREFIX}*"))


# -- objects ------------------------------------------------------------------------------
def test_objects_layout_large_writes_and_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "v"
    backend = open_vault(root)
    big = os.urandom(3 * 2**20 + 5)
    sizes: list[int] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes | memoryview) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", recording_write)
    backend.put_objects([(b"\xab" * 32, big), (b"\x07", b"tiny"), (b"\xab" * 32, big)])
    monkeypatch.undo()
    assert max(sizes) <= 2**20
    assert sum(sizes) == len(big) + 4  # the duplicate in the batch was written once
    path = root / "objects" / "ab" / ("ab" * 32)
    assert path.read_bytes() == big
    assert (root / "objects" / "07" / "07").read_bytes() == b"tiny"
    inode = path.stat().st_ino
    backend.put_objects([(b"\xab" * 32, big)])  # idempotent: not rewritten
    assert path.stat().st_ino == inode
    # Junk in the object tree is not reported as objects.
    (root / "objects" / "ab" / "ab12.partial").write_bytes(b"")
    (root / "objects" / "ab" / "cd").write_bytes(b"")  # in the wrong fan-out directory
    (root / "objects" / "zz").mkdir()
    (root / "objects" / "zz" / "zz").write_bytes(b"")
    assert sorted(backend.scan_objects()) == [b"\x07", b"\xab" * 32]
    backend.delete_objects([b"\x07", b"\x99" * 32])
    assert backend.has_objects([b"\x07", b"\xab" * 32]) == {b"\xab" * 32}
    assert backend.get_objects([b"\x07", b"\xab" * 32]) == {b"\xab" * 32: big}
    with pytest.raises(ValueError):
        backend.put_objects([(b"", b"x")])


def test_present_objects_are_made_durable_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another writer may have linked the object without having fsynced its directory
    # yet; a record committed on top of it must not outlive it in a power loss.
    root = tmp_path / "v"
    backend = open_vault(root)
    backend.put_objects([(b"\xcd" * 32, b"o")])
    synced: list[str] = []
    real = FileIO.fsync_dir

    def recording(self: FileIO, path: str) -> None:
        synced.append(path)
        real(self, path)

    monkeypatch.setattr(FileIO, "fsync_dir", recording)
    backend.commit_checkpoint("r", 1, b"x", expected_head=0, objects=[(b"\xcd" * 32, b"o")])
    assert str(root / "objects" / "cd") in synced


# -- runs ---------------------------------------------------------------------------------
def test_deleted_run_is_not_resurrected_by_a_stale_writer(tmp_path: Path) -> None:
    root = tmp_path / "v"
    writer, deleter = open_vault(root), open_vault(root)
    for seq in (1, 2, 3):
        writer.commit_checkpoint("r", seq, b"%d" % seq, expected_head=seq - 1)
    assert writer.head("r") == 3
    assert deleter.delete_run("r") is True
    assert os.listdir(root / "runs") == []
    assert os.listdir(root / "trash") == []
    assert os.path.exists(root / "locks" / run_dir_name("r"))  # lock files stay
    with pytest.raises(ConflictError) as info:
        writer.commit_checkpoint("r", 4, b"late", expected_head=3)
    assert (info.value.expected, info.value.actual) == (3, 0)
    assert writer.head("r") == 0
    assert writer.read_checkpoints("r") == []
    assert deleter.delete_run("r") is False
    writer.commit_checkpoint("r", 1, b"new", expected_head=0)
    assert deleter.read_checkpoints("r") == [StoredCheckpoint(1, b"new")]


def test_head_seen_by_another_handle_follows_delete_and_recreate(tmp_path: Path) -> None:
    root = tmp_path / "v"
    a, b = open_vault(root), open_vault(root)
    for seq in range(1, 6):
        a.commit_checkpoint("r", seq, b"a%d" % seq, expected_head=seq - 1)
    assert b.head("r") == 5
    a.delete_run("r")
    for seq in range(1, 3):
        a.commit_checkpoint("r", seq, b"b%d" % seq, expected_head=seq - 1)
    assert b.head("r") == 2
    for seq in range(3, 200):  # more than one probe's worth past b's last view
        a.commit_checkpoint("r", seq, b"c", expected_head=seq - 1, objects=())
    assert b.head("r") == 199
    assert [c.seq for c in b.read_checkpoints("r", limit=3)] == [199, 198, 197]


def test_a_gap_in_the_records_is_read_around(tmp_path: Path) -> None:
    # Only a power loss in durability="process" mode can leave a gap; reads stay exact.
    root = tmp_path / "v"
    backend = open_vault(root, durability="process", layout=1)
    for seq in (1, 2, 3):
        backend.commit_checkpoint("r", seq, b"%d" % seq, expected_head=seq - 1)
    (root / "runs" / run_dir_name("r") / "ckpt" / "2".zfill(20)).unlink()
    fresh = open_vault(root)
    assert fresh.head("r") == 3
    assert [c.seq for c in fresh.read_checkpoints("r", limit=3)] == [3, 1]
    assert [c.seq for c in fresh.read_checkpoints("r", newest_first=False)] == [1, 3]


def interrupt_roll_back(root: Path, backend: FilesBackend, keep_through: int) -> None:
    """Leave what a crash in the middle of `roll_back("r", keep_through)` can leave: the
    durable intent, and only the newest record removed."""
    (root / "rollbacks").mkdir(exist_ok=True)
    (root / "rollbacks" / run_dir_name("r")).write_bytes(b"%d" % keep_through)
    ckpt = root / "runs" / run_dir_name("r") / "ckpt"
    (ckpt / str(backend.head("r")).zfill(20)).unlink()


def test_interrupted_roll_back_is_finished_at_open(tmp_path: Path) -> None:
    root = tmp_path / "v"
    backend = open_vault(root, layout=1)
    for seq in range(1, 6):
        backend.commit_checkpoint("r", seq, b"%d" % seq, expected_head=seq - 1)
    interrupt_roll_back(root, backend, 2)
    fresh = open_vault(root)
    assert fresh.head("r") == 2
    assert os.listdir(root / "rollbacks") == []


def test_interrupted_roll_back_is_finished_before_the_next_commit(tmp_path: Path) -> None:
    root = tmp_path / "v"
    backend = open_vault(root, layout=1)
    for seq in range(1, 6):
        backend.commit_checkpoint("r", seq, b"%d" % seq, expected_head=seq - 1)
    other = open_vault(root)
    interrupt_roll_back(root, backend, 2)
    # A writer on the half-removed history would be removed with it later: it must
    # conflict instead, and find the rolled-back head.
    assert other.head("r") == 4
    with pytest.raises(ConflictError):
        other.commit_checkpoint("r", 5, b"lost?", expected_head=4, expected_record=b"4")
    assert other.head("r") == 2
    other.commit_checkpoint("r", 3, b"three", expected_head=2, expected_record=b"2")
    assert [c.record for c in open_vault(root).read_checkpoints("r")] == [b"three", b"2", b"1"]


def test_roll_back_and_quarantine_layout(tmp_path: Path) -> None:
    root = tmp_path / "v"
    backend = open_vault(root)
    assert not (root / "rollbacks").exists()  # made on first use only
    assert not (root / "quarantine").exists()
    backend.commit_checkpoint("r", 1, b"1", expected_head=0, objects=[(b"\xab" * 32, b"obj")])
    backend.commit_checkpoint("r", 2, b"2", expected_head=1)
    assert [c.seq for c in backend.roll_back("r", 1)] == [2]
    assert os.listdir(root / "rollbacks") == []
    assert backend.quarantine_objects([b"\xab" * 32]) == 1
    assert os.listdir(root / "quarantine") == ["ab" * 32]
    assert os.listdir(root / "objects" / "ab") == []
    backend.put_objects([(b"\xab" * 32, b"other bytes")])
    backend.quarantine_objects([b"\xab" * 32])
    assert sorted(os.listdir(root / "quarantine")) == ["ab" * 32, "ab" * 32 + ".1"]


def test_damaged_roll_back_intent_is_corruption(tmp_path: Path) -> None:
    root = tmp_path / "v"
    backend = open_vault(root)
    backend.commit_checkpoint("r", 1, b"1", expected_head=0)
    (root / "rollbacks").mkdir()
    (root / "rollbacks" / run_dir_name("r")).write_bytes(b"\x00garbage")
    with pytest.raises(CorruptionError, match="roll-back intent"):
        backend.commit_checkpoint("r", 2, b"2", expected_head=1)
    assert backend.head("r") == 1
    assert open_vault(root).head("r") == 1  # the vault still opens


def test_commit_argument_checks(tmp_path: Path) -> None:
    backend = open_vault(tmp_path / "v")
    with pytest.raises(ValueError):
        backend.commit_checkpoint("r", 3, b"x", expected_head=0)
    with pytest.raises(ValueError):
        backend.commit_checkpoint("r", 0, b"x", expected_head=-1)
    assert backend.read_checkpoint("r", 0) is None
    assert backend.read_checkpoint("r", 10**30) is None
    assert os.listdir(tmp_path / "v" / "runs") == []


# -- durability modes and closing ---------------------------------------------------------
@pytest.mark.parametrize(("durability", "syncs"), [("fsync", True), ("process", False)])
def test_durability_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str, syncs: bool
) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    backend = open_vault(tmp_path / "v", durability=durability)
    backend.commit_checkpoint("r", 1, b"x", expected_head=0, objects=[(b"\x01" * 32, b"o")])
    backend.set_meta("k", b"v")
    backend.delete_run("r")
    assert bool(calls) is syncs
    monkeypatch.undo()
    again = open_vault(tmp_path / "v")
    assert again.get_meta()["k"] == b"v"
    assert again.get_objects([b"\x01" * 32]) == {b"\x01" * 32: b"o"}


def test_closed_backend_refuses_every_call(tmp_path: Path) -> None:
    backend = open_vault(tmp_path / "v")
    backend.commit_checkpoint("r", 1, b"x", expected_head=0)
    backend.close()
    backend.close()  # idempotent
    calls: list[Callable[[], object]] = [
        backend.get_meta,
        lambda: backend.set_meta("k", b"v"),
        lambda: backend.put_objects([(b"\x01", b"x")]),
        lambda: backend.get_objects([b"\x01"]),
        lambda: backend.has_objects([b"\x01"]),
        lambda: backend.delete_objects([b"\x01"]),
        backend.scan_objects,
        backend.list_runs,
        lambda: backend.head("r"),
        lambda: backend.commit_checkpoint("r", 2, b"y", expected_head=1),
        lambda: backend.read_checkpoint("r", 1),
        lambda: backend.read_checkpoints("r"),
        lambda: backend.delete_run("r"),
    ]
    for call in calls:
        with pytest.raises(VaultClosedError):
            call()
    assert open_vault(tmp_path / "v").read_checkpoints("r") == [StoredCheckpoint(1, b"x")]


# -- concurrency --------------------------------------------------------------------------
WORKER = """
import os, sys, time
from statevault.backends.files import FilesBackend
from statevault.errors import ConflictError

path, run_id, worker, target, go = sys.argv[1:]
backend = FilesBackend(path, initial_meta={"format": b"1"})
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
wins = []
while True:
    head = backend.head(run_id)
    if head >= int(target):
        break
    record = (f"{worker}:{head + 1}:".encode()) * 500
    try:
        backend.commit_checkpoint(run_id, head + 1, record, expected_head=head)
    except ConflictError:
        continue
    wins.append(head + 1)
print(" ".join(map(str, wins)), flush=True)
"""


def commit_until(backend: FilesBackend, run_id: str, worker: str, target: int) -> list[int]:
    wins = []
    while (head := backend.head(run_id)) < target:
        record = f"{worker}:{head + 1}:".encode() * 500
        try:
            backend.commit_checkpoint(run_id, head + 1, record, expected_head=head)
        except ConflictError:
            continue
        wins.append(head + 1)
    return wins


@pytest.mark.multiprocess
def test_threads_and_processes_race_on_one_run(tmp_path: Path) -> None:
    root, go, run_id, target = tmp_path / "v", tmp_path / "go", "race/1", 150
    shared = open_vault(root)
    procs = [python(WORKER, str(root), run_id, f"p{i}", str(target), str(go)) for i in range(3)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr and proc.stderr.read()
    claims: dict[str, list[int]] = {}
    threads = [
        threading.Thread(
            target=lambda w=f"t{i}": claims.__setitem__(w, commit_until(shared, run_id, w, target))
        )
        for i in range(3)
    ]
    go.write_bytes(b"")
    for thread in threads:
        thread.start()
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        claims[f"p{i}"] = [int(s) for s in out.split()]
    for thread in threads:
        thread.join(timeout=120)
    won = sorted(seq for seqs in claims.values() for seq in seqs)
    assert won == list(range(1, target + 1))  # exactly one winner per seq
    records = open_vault(root).read_checkpoints(run_id, newest_first=False)
    assert [c.seq for c in records] == list(range(1, target + 1))
    owner = {seq: worker for worker, seqs in claims.items() for seq in seqs}
    for checkpoint in records:
        assert checkpoint.record == f"{owner[checkpoint.seq]}:{checkpoint.seq}:".encode() * 500
    assert os.listdir(root / "tmp") == []


CREATOR = """
import sys
from statevault.backends.files import FilesBackend
backend = FilesBackend(sys.argv[1], initial_meta={"format": b"1", "vault_id": sys.argv[2].encode()})
print(backend.get_meta()["vault_id"].decode(), flush=True)
"""


@pytest.mark.multiprocess
def test_concurrent_creation_agrees_on_one_marker(tmp_path: Path) -> None:
    root = tmp_path / "new" / "vault"
    procs = [python(CREATOR, str(root), f"id-{i}") for i in range(6)]
    seen = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        seen.add(out.strip())
    assert len(seen) == 1
    assert open_vault(root).get_meta()["vault_id"].decode() in seen


def test_threads_on_different_runs_and_meta(tmp_path: Path) -> None:
    backend = open_vault(tmp_path / "v")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for seq in range(1, 21):
                objects = [(bytes([i, seq]) * 16, b"obj")]
                backend.commit_checkpoint(
                    f"run-{i}", seq, b"%d" % seq, expected_head=seq - 1, objects=objects
                )
                backend.set_meta(f"k{i}", b"%d" % seq)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert backend.list_runs() == [f"run-{i}" for i in range(6)]
    # Concurrent set_meta calls on different keys lose nothing.
    assert {k: v for k, v in backend.get_meta().items() if k.startswith("k")} == {
        f"k{i}": b"20" for i in range(6)
    }


KILLED_WRITER = """
import sys
from statevault.backends.files import FilesBackend

backend = FilesBackend(sys.argv[1], initial_meta={"format": b"1"})
print("ready", flush=True)
while True:
    head = backend.head("r")
    seq = head + 1
    blob = seq.to_bytes(4, "big") * (256 * 1024)
    digest = b"obj" + seq.to_bytes(29, "big")
    backend.commit_checkpoint("r", seq, b"%d" % seq, expected_head=head, objects=[(digest, blob)])
"""


@pytest.mark.multiprocess
def test_writers_killed_mid_commit_leave_a_consistent_vault(tmp_path: Path) -> None:
    root = tmp_path / "v"
    open_vault(root)
    for round_ in range(4):
        proc = python(KILLED_WRITER, str(root))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.05 * round_)
        proc.kill()  # SIGKILL: no cleanup runs, and the kernel drops its flock
        proc.communicate(timeout=60)
    backend = open_vault(root)  # sweeps the dead writers' temp files
    assert os.listdir(root / "tmp") == []
    head = backend.head("r")
    assert head > 0
    records = backend.read_checkpoints("r", newest_first=False)
    assert records == [StoredCheckpoint(seq, b"%d" % seq) for seq in range(1, head + 1)]
    # Every record's objects were complete before the record existed.
    digests = [b"obj" + seq.to_bytes(29, "big") for seq in range(1, head + 1)]
    objects = backend.get_objects(digests)
    assert len(objects) == head
    for seq, digest in enumerate(digests, start=1):
        assert objects[digest] == seq.to_bytes(4, "big") * (256 * 1024)
    backend.commit_checkpoint("r", head + 1, b"after", expected_head=head)  # lock not stuck
