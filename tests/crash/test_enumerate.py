"""Crash-state enumeration over the files backend: the main crash-safety gate.

Every workload of up to three API calls, from an empty directory and from a populated
vault, is recorded; every crash state the disk model allows is opened with the real
`statevault.open()` and checked against the model, and recovery is crashed once more
(see crash_workloads.py and diskmodel.py). Longer workloads come from Hypothesis, which
shrinks a failing one to a minimal list of steps.

The default run builds fewer subsets per crash point than `-m slow`, which also
covers four-call workloads; both print what they explored (run pytest with `-s`).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from crash_workloads import (
    KINDS,
    RECOVERY_POLICY,
    Explored,
    Step,
    explore,
    record,
    scratch_dir,
)
from diskmodel import Image, Op, Policy, Recording, RecordingFileIO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DEFAULT = Policy(exhaustive_up_to=3, random_subsets=2)
DEFAULT_RECOVERY = Policy(exhaustive_up_to=2, random_subsets=0, singles=False)
THOROUGH = Policy(exhaustive_up_to=8, random_subsets=64)
THOROUGH_RECOVERY = RECOVERY_POLICY


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with scratch_dir() as path:
        yield path


@pytest.fixture(scope="module")
def long_totals() -> Iterator[Explored]:
    """What the Hypothesis scenarios of this module explored, printed at its end."""
    totals = Explored()
    yield totals
    if totals.states:
        _report("long scenarios", totals)


def _report(what: str, explored: Explored) -> None:
    print(
        f"\n{what}: {explored.states} crash states, {explored.recovery_states} more with "
        f"recovery crashed, {explored.distinct} distinct disks opened, "
        f"{len(explored.failures)} failed"
    )


def _assert_none_failed(explored: Explored) -> None:
    shown = "\n\n".join(explored.failures[:3])
    assert not explored.failures, f"{len(explored.failures)} crash states failed:\n\n{shown}"


def _workloads(first: str, length: int) -> Iterator[list[Step]]:
    """Every workload of up to `length` calls on run "a" that starts with `first`."""
    for size in range(length):
        for rest in itertools.product(KINDS, repeat=size):
            yield [Step(kind, "a", 10 + i) for i, kind in enumerate((first, *rest))]


def _explore_all(
    first: str, length: int, populated: bool, scratch: str, policies: tuple[Policy, Policy]
) -> None:
    policy, recovery = policies
    total = Explored()
    for steps in _workloads(first, length):
        total.add(
            explore(steps, populated=populated, scratch=scratch, policy=policy, recovery=recovery)
        )
    start = "populated" if populated else "empty"
    _report(f"workloads of <= {length} calls from {start}, starting with {first}", total)
    _assert_none_failed(total)


@pytest.mark.parametrize("populated", [False, True], ids=["empty", "populated"])
@pytest.mark.parametrize("first", KINDS)
def test_every_short_workload(first: str, populated: bool, scratch: str) -> None:
    _explore_all(first, 3, populated, scratch, (DEFAULT, DEFAULT_RECOVERY))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # up to ~5 min each on a loaded 2-core machine
@pytest.mark.parametrize("populated", [False, True], ids=["empty", "populated"])
@pytest.mark.parametrize("first", KINDS)
def test_every_short_workload_thoroughly(first: str, populated: bool, scratch: str) -> None:
    _explore_all(first, 4, populated, scratch, (THOROUGH, THOROUGH_RECOVERY))


# -- longer scenarios -----------------------------------------------------------------------
STEPS = st.builds(
    Step,
    kind=st.sampled_from([*KINDS, "reopen"]),
    run=st.sampled_from(["a", "b"]),
    n=st.integers(10, 10_000),
)
SCENARIOS = st.tuples(
    st.lists(STEPS, min_size=6, max_size=16), st.booleans(), st.sampled_from([2, 3, 100])
)


def _long(
    scenario: tuple[list[Step], bool, int],
    policies: tuple[Policy, Policy],
    scratch: str,
    totals: Explored,
) -> None:
    steps, populated, fold_every = scenario
    policy, recovery = policies
    explored = explore(
        steps,
        populated=populated,
        scratch=scratch,
        policy=policy,
        recovery=recovery,
        fold_every=fold_every,
    )
    totals.add(explored)
    _assert_none_failed(explored)


@settings(
    max_examples=20,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=SCENARIOS)
def test_long_scenarios(
    scenario: tuple[list[Step], bool, int], scratch: str, long_totals: Explored
) -> None:
    _long(scenario, (DEFAULT, DEFAULT_RECOVERY), scratch, long_totals)


@pytest.mark.slow
@pytest.mark.timeout(7200)  # 300 scenarios: past the default 300 s on any machine
@settings(
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=SCENARIOS)
def test_long_scenarios_thoroughly(
    scenario: tuple[list[Step], bool, int], scratch: str, long_totals: Explored
) -> None:
    _long(scenario, (THOROUGH, THOROUGH_RECOVERY), scratch, long_totals)


# -- the enumerator finds what it is meant to find --------------------------------------------
class _NoDirectorySync(RecordingFileIO):
    def fsync_dir(self, path: str) -> None:
        """A backend that forgets to make new names durable."""


class _NoFileSync(RecordingFileIO):
    def fsync(self, fd: int) -> None:
        """A backend that links data it never flushed."""


@pytest.mark.parametrize("broken", [_NoDirectorySync, _NoFileSync])
def test_a_broken_protocol_is_caught(
    broken: type[RecordingFileIO], scratch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import crash_workloads  # noqa: PLC0415 - the module whose recorder is swapped

    monkeypatch.setattr(crash_workloads, "RecordingFileIO", broken)
    explored = explore(
        [Step("save", "a", 10), Step("transaction", "a", 11)],
        populated=True,
        scratch=scratch,
        policy=DEFAULT,
        recovery=None,
    )
    assert explored.failures
    assert "expected: the model after" in explored.failures[0]


# -- the disk model ---------------------------------------------------------------------------
def _recorded(scratch: str, actions: Callable[[RecordingFileIO, str], None]) -> Recording:
    root = os.path.join(scratch, "model")
    os.makedirs(root)
    io = RecordingFileIO(root)
    actions(io, root)
    recording = Recording(io)
    shutil.rmtree(root)
    return recording


def _visible(recording: Recording, policy: Policy = DEFAULT) -> set[tuple[Any, ...]]:
    """Every (path, content) tree the crash states of `recording` can show."""
    trees = set()
    for point in recording.crash_points():
        for state in recording.states(point, policy):
            image = recording.image(state)
            trees.add(
                tuple(
                    (path, None if is_dir else image.files[inode])
                    for path, inode, is_dir in image.walk()
                )
            )
    return trees


def test_a_new_name_needs_its_directory_flushed(scratch: str) -> None:
    def actions(io: RecordingFileIO, root: str) -> None:
        fd = io.open_file(f"{root}/f", create=True)
        io.write_all(fd, b"data")
        io.fsync(fd)  # the data, not the name
        io.close(fd)

    no_damage = Policy(damage=False)
    assert _visible(_recorded(scratch, actions), no_damage) == {
        (),
        (("f", b""),),
        (("f", b"data"),),
    }


def test_a_flushed_write_and_name_survive_every_crash_after_them(scratch: str) -> None:
    def actions(io: RecordingFileIO, root: str) -> None:
        fd = io.open_file(f"{root}/f", create=True)
        io.write_all(fd, b"x" * 1500)
        io.fsync(fd)
        io.fsync_dir(root)
        io.pwrite_all(fd, b"y" * 1500, 0)  # never flushed: torn at any sector
        io.close(fd)

    recording = _recorded(scratch, actions)
    final = {
        tree
        for state in recording.states(len(recording.ops), DEFAULT)
        for tree in [tuple(recording.image(state).walk())]
    }
    assert final  # the last crash point has states
    contents = {
        recording.image(state).files[recording.image(state).dirs[0]["f"]]
        for state in recording.states(len(recording.ops), DEFAULT)
    }
    assert b"x" * 1500 in contents and b"y" * 1500 in contents
    assert b"y" * 512 + b"x" * 988 in contents  # torn after the first sector
    assert bytes(1500) in contents  # the range zeroed
    assert all(len(content) == 1500 for content in contents)


def test_a_rename_is_atomic_and_needs_the_target_directory_flushed(scratch: str) -> None:
    def actions(io: RecordingFileIO, root: str) -> None:
        io.mkdir(f"{root}/d")
        io.write_atomic(f"{root}/d/f", b"old")
        io.write_atomic(f"{root}/d/f", b"new", sync_dir=False)

    trees = _visible(_recorded(scratch, actions))
    finals = {dict(tree).get("d/f") for tree in trees if ("d", None) in tree}
    # Old or new content, never a missing or partial file once the first replace was made
    # durable; before that, the file may be absent.
    assert finals == {None, b"old", b"new"}


def test_the_recorder_follows_files_across_renames(scratch: str) -> None:
    def actions(io: RecordingFileIO, root: str) -> None:
        io.mkdir(f"{root}/a")
        fd = io.open_file(f"{root}/a/f", create=True)
        io.rename(f"{root}/a", f"{root}/b")
        io.write_all(fd, b"late")
        io.fsync(fd)
        io.close(fd)
        io.fsync_dir(root)

    recording = _recorded(scratch, actions)
    assert [op.kind for op in recording.ops] == [
        "mkdir", "fsync_dir", "creat", "rename", "write", "fsync", "fsync_dir"
    ]  # fmt: skip
    image = recording.image(next(recording.states(len(recording.ops), DEFAULT)))
    assert image.files[image.dirs[image.dirs[0]["b"]]["f"]] == b"late"


def test_scanned_and_materialized_images_agree(scratch: str) -> None:
    root = os.path.join(scratch, "scan")
    image = Image()
    for op in [
        Op("mkdir", 5, 0, "d"),
        Op("creat", 6, 5, "f"),
        Op("write", 6, offset=3, data=b"abc"),
        Op("link", 6, 0, "g"),
    ]:
        image.apply(op)
    image.materialize(root)
    assert os.stat(f"{root}/d/f").st_ino == os.stat(f"{root}/g").st_ino
    again = Image.scan(root)
    assert sorted(p for p, _, _ in again.walk()) == ["d", "d/f", "g"]
    assert {bytes(c) for c in again.files.values()} == {b"\0\0\0abc"}


def test_recorded_views_follow_the_model(scratch: str) -> None:
    steps = [Step("transaction", "b", 1), Step("apply", "b", 2), Step("apply", "b", 3)]
    recorded = record(
        [*steps, Step("delete", "b")],
        populated=False,
        workdir=os.path.join(scratch, "views"),
        fold_every=2,
    )
    assert [view.get("b", (0,))[0] for view in recorded.views] == [0, 1, 2, 4, 0]
    # The second apply makes the second delta (seq 3), which the policy folds at once
    # (seq 4): a crash in between leaves seq 3.
    assert [[view["b"][0] for view in partial] for partial in recorded.partial] == [[], [], [3], []]
    assert recorded.views[3]["b"][1]["log"] == ["t1", "a2", "a3"]
