"""Every kind of stored artifact, damaged for real on every persistent backend.

See `corruption_kit` for the cases and the outcomes allowed. The default run samples
positions; `-m slow` flips a bit at every byte of every artifact.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from corruption_kit import (
    Case,
    Tally,
    btree_header_cases,
    build_vault,
    build_wide_vault,
    check_case,
    damage_each,
    files_artifacts,
    sqlite_artifacts,
    write,
)

import statevault
from statevault.backends.seglog import FILLER, HEADER_SIZE

SAMPLES = 40
SLOW_SAMPLES = 100_000  # more than any artifact has bytes: every byte


def restore_sqlite(path: Path, data: bytes) -> None:
    """Put the file back, and drop what opening the damaged copy left beside it."""
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    write(path, data)


def _files(tmp_path: Path, samples: int) -> Tally:
    root = tmp_path / "v"
    url = f"files://{root}"
    expected = build_vault(url)
    artifacts = files_artifacts(root)
    assert {a.kind for a in artifacts} == {"marker", "object", "run-id", "segment", "frame"}
    return damage_each(artifacts, url, expected, samples=samples, seed=1)


def _sqlite(tmp_path: Path, samples: int) -> Tally:
    path = tmp_path / "v.db"
    expected = build_vault(str(path))
    artifacts = sqlite_artifacts(path)
    assert {a.kind for a in artifacts} == {"sqlite-page", "record", "object"}
    return damage_each(
        artifacts, str(path), expected, samples=samples, seed=2, restore=restore_sqlite
    )


@pytest.mark.timeout(120)
def test_previous_versions_read_as_older_history(tmp_path: Path) -> None:
    """A file replaced by its previous version (a restore, a lost rename): the vault
    reads as a valid older history, or refuses; never a mix of old and new."""
    tally = Tally()
    path = tmp_path / "v.db"
    older: dict[str, bytes] = {}
    expected = build_vault(str(path), midway=lambda: older.setdefault("db", path.read_bytes()))
    artifact = sqlite_artifacts(path)[0]
    current = path.read_bytes()
    case = Case(artifact, "replaced by its previous version", older["db"], previous_version=True)
    restore_sqlite(path, case.damaged)
    check_case(case, str(path), expected, tally)
    restore_sqlite(path, current)

    root = tmp_path / "files"
    url = f"files://{root}"
    marker: dict[str, bytes] = {}
    expected = build_vault(
        url, midway=lambda: marker.setdefault("m", (root / "STATEVAULT").read_bytes())
    )
    with statevault.open(url) as vault:
        vault._backend.set_meta("note", b"changed after the snapshot")
    for artifact in files_artifacts(root):
        if artifact.kind == "marker":
            write(artifact.path, marker["m"])
            check_case(Case(artifact, "previous marker", marker["m"], True), url, expected, tally)
        elif artifact.kind == "frame" and artifact.seq == len(expected[artifact.run_id]):
            # The run's newest segment as it was before its last commit: that commit
            # wrote the frame over filler (or made the segment, if it is the first).
            kept = artifact.path.read_bytes()
            if artifact.start == HEADER_SIZE:
                artifact.path.unlink()
            else:
                write(
                    artifact.path,
                    kept[: artifact.start] + bytes([FILLER]) * (len(kept) - artifact.start),
                )
            check_case(Case(artifact, "previous segment", b"", True), url, expected, tally)
            write(artifact.path, kept)
    assert tally.older >= 3 and tally.cases == 5
    print(f"\nprevious versions: {tally}")


@pytest.mark.timeout(600)
def test_files_artifacts(tmp_path: Path) -> None:
    print(f"\nfiles: {_files(tmp_path, SAMPLES)}")


@pytest.mark.timeout(600)
def test_sqlite_artifacts(tmp_path: Path) -> None:
    print(f"\nsqlite: {_sqlite(tmp_path, SAMPLES)}")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_files_artifacts_every_byte(tmp_path: Path) -> None:
    print(f"\nfiles (every byte): {_files(tmp_path, SLOW_SAMPLES)}")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_sqlite_artifacts_every_byte(tmp_path: Path) -> None:
    print(f"\nsqlite (every byte): {_sqlite(tmp_path, SLOW_SAMPLES)}")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_sqlite_btree_headers_every_bit(tmp_path: Path) -> None:
    """All eight bits of each byte that says where a b-tree page's cells are: the damage
    that can hide rows from SQLite without SQLite noticing (the catalog of heads' job)."""
    for name, build in (("small", build_vault), ("wide", build_wide_vault)):
        path = tmp_path / name / "v.db"
        path.parent.mkdir()
        expected = build(str(path))
        original = path.read_bytes()
        tally = Tally()
        for case in btree_header_cases(path):
            restore_sqlite(path, case.damaged)
            try:
                check_case(case, str(path), expected, tally)
            finally:
                restore_sqlite(path, original)
        print(f"\nsqlite b-tree headers, every bit ({name} vault): {tally}")
