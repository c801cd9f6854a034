"""A pipeline run in MLflow as MLflow's own client reads it, and MLflow that cannot keep up.

The parent run carries the run's metrics as ``step.metric`` (on a real ``mlflow server`` from
scripts/services/mlflow.sh and on the embedded SQLite store); a run killed after its steps
finished but before MLflow took them loses nothing after ``mlyard runs resume``; a stalled
MLflow neither fails nor holds a run past its bounded wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceStarter
from tests.e2e.cli import mlyard_json

pytestmark = pytest.mark.integration
SCORED = str(Path(__file__).resolve().parent / "tracking_projects" / "scored.py")
STEPS = ["evaluate", "report", "train"]


def _mlflow_view(uri: str, mlflow_run_id: str) -> tuple[Any, dict[str, list[Any]]]:
    """The parent run and its nested runs by step, read with MLflow's own client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(mlflow_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    by_step: dict[str, list[Any]] = {}
    for child in children:
        by_step.setdefault(child.data.tags["mlyard.step"], []).append(child)
    return parent, by_step


def _assert_parent_carries_the_runs_metrics(uri: str, view: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    parent, children = _mlflow_view(uri, view["mlflow_run_id"])
    assert set(view["metrics"]) == {"train.loss", "evaluate.accuracy", "evaluate.recall"}
    assert parent.data.metrics == view["metrics"]  # the run summary's last values
    assert sorted(children) == STEPS
    assert all(len(runs) == 1 for runs in children.values()), children
    # A metric with a history: the parent has its last value, the step run all of it.
    history = MlflowClient(tracking_uri=uri).get_metric_history(
        children["train"][0].info.run_id, "loss"
    )
    assert [m.step for m in history] == [0, 1, 2]
    assert parent.data.metrics["train.loss"] == max(history, key=lambda m: m.step).value
    assert children["evaluate"][0].data.metrics["accuracy"] == view["metrics"]["evaluate.accuracy"]


def _attempts_tracked() -> dict[str, bool]:
    """Whether each step's latest attempt is marked as taken by MLflow, from mlyard's DB."""
    database = Path(os.environ["MLYARD_HOME"]) / "mlyard.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(
            "SELECT step_runs.name, attempts.tracked FROM attempts"
            " JOIN step_runs ON step_runs.id = attempts.step_run_id ORDER BY attempts.number"
        ).fetchall()
    return {name: bool(tracked) for name, tracked in rows}


def _step_states() -> dict[str, str]:
    database = Path(os.environ["MLYARD_HOME"]) / "mlyard.db"
    if not database.exists():
        return {}
    with (
        contextlib.closing(sqlite3.connect(database, timeout=30)) as connection,
        contextlib.suppress(sqlite3.OperationalError),  # tables not created yet
    ):
        return dict(connection.execute("SELECT name, state FROM step_runs").fetchall())
    return {}


def _wait_for(condition: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextlib.contextmanager
def _stalled(mlflow: dict[str, str]) -> Iterator[None]:
    """The MLflow server stopped (SIGSTOP): connections open, nothing answers."""
    group = int(mlflow["MLFLOW_PID"])
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(group, signal.SIGCONT)


def test_parent_run_carries_the_step_metrics_on_a_server(services: ServiceStarter) -> None:
    uri = services("mlflow")["MLFLOW_TRACKING_URI"]
    view = mlyard_json(
        "run", f"{SCORED}:scored", "-p", "epochs=3", env={"MLYARD_TRACKING__URI": uri}
    )
    assert view["state"] == "SUCCEEDED", view.get("error")
    assert view["warnings"] == []
    _assert_parent_carries_the_runs_metrics(uri, view)


def test_parent_run_carries_the_step_metrics_in_the_embedded_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    view = mlyard_json("run", f"{SCORED}:scored", "-p", "epochs=3")
    assert view["state"] == "SUCCEEDED", view.get("error")
    store = Path(os.environ["MLYARD_HOME"]) / "mlflow.db"
    _assert_parent_carries_the_runs_metrics(f"sqlite:///{store}", view)


def test_a_run_killed_before_mlflow_took_its_steps_loses_nothing_after_resume(
    services: ServiceStarter,
) -> None:
    mlflow = services("mlflow")
    uri = mlflow["MLFLOW_TRACKING_URI"]
    env = {**os.environ, "MLYARD_TRACKING__URI": uri}
    command = [sys.executable, "-m", "mlyard.cli", "run", f"{SCORED}:scored", "--json"]
    orchestrator = subprocess.Popen(
        [*command, "-p", "epochs=3", "-p", "seconds=2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        # The run checked the server's health before its first step: stall MLflow now.
        _wait_for(lambda: _step_states().get("evaluate") == "RUNNING", "evaluate to run")
        with _stalled(mlflow):
            _wait_for(
                lambda: _step_states() == dict.fromkeys(STEPS, "SUCCEEDED"),
                "every step to succeed while MLflow is stalled",
            )
            tracked = _attempts_tracked()
            # The run's end is waiting for MLflow: kill it there.
            assert orchestrator.poll() is None
            orchestrator.send_signal(signal.SIGKILL)
            orchestrator.wait(timeout=30)
        assert not tracked["evaluate"] and not tracked["report"], tracked
    finally:
        if orchestrator.poll() is None:
            orchestrator.kill()
            orchestrator.wait(timeout=30)

    run_id = mlyard_json("runs", "ls", env={"MLYARD_TRACKING__URI": uri})[0]["id"]
    resumed = mlyard_json("runs", "resume", run_id, env={"MLYARD_TRACKING__URI": uri})
    assert resumed["state"] == "SUCCEEDED", resumed.get("error")
    assert _attempts_tracked() == dict.fromkeys(STEPS, True)
    _assert_parent_carries_the_runs_metrics(uri, resumed)


def test_a_stalled_mlflow_holds_the_runs_end_only_as_long_as_allowed(
    services: ServiceStarter,
) -> None:
    from mlyard.orchestration.loading import load_pipeline_file
    from mlyard.services.runs import Workspace, execute_run, prepare_run, show_run
    from mlyard.settings import load_settings

    mlflow = services("mlflow")
    uri = mlflow["MLFLOW_TRACKING_URI"]
    settings = load_settings(tracking={"uri": uri})
    workspace = Workspace.open(settings)
    loaded = load_pipeline_file(Path(SCORED), "scored")
    run_id, backend = prepare_run(workspace, loaded, {"epochs": 3})  # checks MLflow's health
    with _stalled(mlflow):
        view = execute_run(workspace, run_id, backend, tracking_drain_seconds=1.0)
        # Back while MLflow is still stalled: the steps' results are in mlyard's store.
        assert view.state.value == "SUCCEEDED"
        assert sorted(view.metrics) == ["evaluate.accuracy", "evaluate.recall", "train.loss"]
        assert not any(_attempts_tracked().values())
        warning = next(w for w in view.warnings if "did not take the last" in w)
        assert uri in warning and f"mlyard runs resume {run_id}" in warning
    # Once MLflow answers again, this process's tracking thread finishes the job.
    for thread in threading.enumerate():
        if thread.name == "mlyard-tracking":
            thread.join(timeout=120)
    assert _attempts_tracked() == dict.fromkeys(STEPS, True)
    shown = show_run(workspace, run_id).model_dump(mode="json")
    _assert_parent_carries_the_runs_metrics(uri, shown)
    workspace.close()


def test_a_partly_cached_runs_parent_carries_the_cached_steps_metrics_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = mlyard_json("run", f"{SCORED}:scored", "-p", "epochs=3")
    assert first["state"] == "SUCCEEDED", first.get("error")
    # A new `seconds` reruns evaluate only: train is cached from the first run, and report
    # too (its input, the accuracy, is the same value).
    again = mlyard_json("run", f"{SCORED}:scored", "-p", "epochs=3", "-p", "seconds=0.01")
    states = {s["name"]: s["state"] for s in again["steps"]}
    assert states == {"train": "CACHED", "evaluate": "SUCCEEDED", "report": "CACHED"}
    assert again["mlflow_run_id"] != first["mlflow_run_id"]

    store = Path(os.environ["MLYARD_HOME"]) / "mlflow.db"
    parent, children = _mlflow_view(f"sqlite:///{store}", again["mlflow_run_id"])
    assert parent.data.metrics == again["metrics"]
    assert parent.data.metrics["train.loss"] == first["metrics"]["train.loss"]
    assert sorted(children) == ["evaluate"]  # a cached step gets no nested run
