"""Steps that wait for the machine's capacity: the run says why until they start."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.cli import mlyard_json, spawn, stop_spawned

pytestmark = pytest.mark.e2e

PIPELINE = """
import time
from pathlib import Path

from mlyard import pipeline, step

RELEASE = Path(RELEASE_PATH)


@step
def nap(index: int) -> int:
    # Runs until the test has seen the other step queued (a fixed nap raced slow polls).
    deadline = time.monotonic() + 120
    while not RELEASE.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return index


@pipeline
def naps() -> None:
    nap(index=1)
    nap(index=2)
"""


def test_a_step_waiting_for_a_cpu_says_so_until_it_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    # The step runs from a copy of the code: the file it waits for is named by its full path.
    release = project / "release"
    (project / "naps.py").write_text(PIPELINE.replace("RELEASE_PATH", repr(str(release))))
    (project / "mlyard.toml").write_text('[backends.one_cpu]\ntype = "local"\ncpus = 1\n')
    orchestrator = spawn("run", f"{project / 'naps.py'}:naps", "--backend", "one_cpu")
    try:
        seen: set[tuple[str, str | None]] = set()
        both = {("RUNNING", None), ("QUEUED", "waiting for 1 CPU")}
        deadline = time.monotonic() + 90
        while not both <= seen and orchestrator.poll() is None and time.monotonic() < deadline:
            runs = mlyard_json("runs", "ls")
            if runs:
                steps = mlyard_json("runs", "show", runs[0]["id"])["steps"]
                seen |= {(step["state"], step["reason"]) for step in steps}
            time.sleep(0.2)
        release.touch()
        assert orchestrator.wait(timeout=60) == 0
    finally:
        stop_spawned()
    # One step ran while the other waited for the only CPU, and the run said so.
    assert ("RUNNING", None) in seen
    assert ("QUEUED", "waiting for 1 CPU") in seen
    final = mlyard_json("runs", "show", runs[0]["id"])["steps"]
    assert [(step["state"], step["reason"]) for step in final] == [("SUCCEEDED", None)] * 2
