"""Killed orchestrators, resume, Ctrl-C, retries and timeouts, with real step processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlyard.backends.local.processes import step_processes
from tests.e2e.cli import PROJECTS, mlyard, mlyard_json, runs_of, spawn, stop_spawned

pytestmark = pytest.mark.e2e
COUNTING = str(PROJECTS / "counting" / "counting.py")


def _wait_for_step_state(step: str, state: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = mlyard_json("runs", "ls")
        if runs:
            view = mlyard_json("runs", "show", runs[0]["id"])
            if any(s["name"] == step and s["state"] == state for s in view["steps"]):
                return str(view["id"])
        time.sleep(0.1)
    raise AssertionError(f"step {step} never reached {state}")


def _step_processes() -> list[psutil.Process]:
    """Step processes of this test's runs (found by the pids in their jobs' journals), alive."""
    jobs = Path(os.environ["MLYARD_HOME"]) / "local" / "jobs"
    lines = [line for journal in jobs.glob("*.jsonl") for line in journal.read_text().splitlines()]
    pids = {entry["pid"] for entry in map(json.loads, lines) if "pid" in entry}
    return [p for p in step_processes() if p.pid in pids]


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """A failing test must not leave its orchestrators or steps running for the next one."""
    yield
    stop_spawned()
    for process in _step_processes():
        with contextlib.suppress(psutil.Error):
            process.kill()


def test_sigkilled_run_is_resumed_with_every_step_executed_once(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    orchestrator = spawn(
        "run", f"{COUNTING}:chain", "-p", f"marker_dir={markers}", "-p", "seconds=8"
    )
    run_id = _wait_for_step_state("slow", "RUNNING")
    orchestrator.send_signal(signal.SIGKILL)
    orchestrator.wait(timeout=10)

    resumed = mlyard("runs", "resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    view = mlyard_json("runs", "show", run_id)
    assert view["state"] == "SUCCEEDED"
    assert [runs_of(markers, s) for s in ("first", "slow", "last")] == [1, 1, 1]
    assert view["metrics"]["slow.slept"] == 8
    # "slow" was submitted by the killed orchestrator: its lineage comes from its task document.
    assert _input_lineage(run_id) == {("slow", "value"), ("last", "value")}


def _input_lineage(run_id: str) -> set[tuple[str, str]]:
    """(step, input name) of every artifact input recorded for the run's steps."""
    database = Path(os.environ["MLYARD_HOME"]) / "mlyard.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(
            "SELECT step_runs.name, step_inputs.name FROM step_inputs"
            " JOIN step_runs ON step_runs.id = step_inputs.step_run_id"
            " WHERE step_runs.run_id = ?",
            (run_id,),
        ).fetchall()
    return {(step, name) for step, name in rows}


def test_resume_after_a_failure_does_not_rerun_succeeded_steps(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    failed = mlyard_json(
        "run", f"{COUNTING}:retrying", "-p", f"marker_dir={markers}", "-p", "failures=5"
    )
    assert failed["state"] == "FAILED"
    assert runs_of(markers, "flaky") == 3  # one attempt plus two retries
    assert "flaky failure number 3" in failed["error"]
    flaky = failed["steps"][0]
    assert flaky["attempts"] == 3

    # Three more failures are allowed after resume (fresh retries): the 6th execution succeeds.
    resumed = mlyard_json("runs", "resume", failed["id"])
    assert resumed["state"] == "SUCCEEDED"
    assert runs_of(markers, "flaky") == 6


def test_ctrl_c_cancels_the_run_and_leaves_no_step_process(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    orchestrator = spawn(
        "run", f"{COUNTING}:chain", "-p", f"marker_dir={markers}", "-p", "seconds=60"
    )
    run_id = _wait_for_step_state("slow", "RUNNING")
    deadline = time.monotonic() + 20
    while not _step_processes():  # the step writes its pid file as its first act
        assert time.monotonic() < deadline, "the step process never appeared"
        time.sleep(0.05)
    orchestrator.send_signal(signal.SIGINT)
    assert orchestrator.wait(timeout=30) == 130
    assert _step_processes() == []
    view = mlyard_json("runs", "show", run_id)
    assert view["state"] == "CANCELLED"
    assert {s["name"]: s["state"] for s in view["steps"]}["slow"] == "CANCELLED"


def test_runs_cancel_from_another_process(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    orchestrator = spawn(
        "run", f"{COUNTING}:chain", "-p", f"marker_dir={markers}", "-p", "seconds=60"
    )
    run_id = _wait_for_step_state("slow", "RUNNING")
    cancelled = mlyard_json("runs", "cancel", run_id)
    assert cancelled["state"] == "CANCELLED"
    assert orchestrator.wait(timeout=30) == 1
    assert _step_processes() == []


def test_timeout_fails_the_step_with_the_limit(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    view = mlyard_json("run", f"{COUNTING}:timing_out", "-p", f"marker_dir={markers}")
    assert view["state"] == "FAILED"
    assert "timed out after 1 s" in view["error"]
    assert _step_processes() == []


def test_logs_of_a_step(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    failed = mlyard_json(
        "run", f"{COUNTING}:retrying", "-p", f"marker_dir={markers}", "-p", "failures=5"
    )
    logs = mlyard_json("runs", "logs", failed["id"], "flaky")
    assert any("flaky failure number 3" in line for line in logs["lines"])
