"""Named crash points kill the process for real, and only when armed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from statevault import faults

_SCRIPT = """
from statevault import faults
point = faults.register("test.point.reached", "a point for this test")
for i in range(5):
    print(i, flush=True)
    faults.crash_point(point)
print("done", flush=True)
"""


def _run(spec: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV_VAR}
    if spec is not None:
        env[faults.ENV_VAR] = spec
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=False
    )


def test_unarmed_point_does_nothing() -> None:
    result = _run(None)
    assert result.returncode == 0
    assert result.stdout.split() == ["0", "1", "2", "3", "4", "done"]


@pytest.mark.parametrize(
    ("spec", "printed"), [("test.point.reached", 1), ("test.point.reached@3", 3)]
)
def test_armed_point_sends_sigkill(spec: str, printed: int) -> None:
    result = _run(spec)
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.split() == [str(i) for i in range(printed)]


def test_other_point_armed_does_not_fire() -> None:
    result = _run("test.point.elsewhere")
    assert result.returncode == 0


def test_register_records_the_point() -> None:
    name = faults.register("test.point.listed", "listed for tests")
    assert faults.POINTS[name] == "listed for tests"
