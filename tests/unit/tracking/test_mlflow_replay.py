"""What the orchestrator's tracking thread needs from the MLflow tracker, on a real SQLite store:
the pipeline run's step metrics in one call, the nested run of a replayed attempt found again,
and a store that commits without waiting for the disk twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mlyard.models.tasks import MetricRecord
from mlyard.tracking.mlflow_tracker import MlflowTracker


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("replay") / "mlflow.db"


@pytest.fixture(scope="module")
def tracker(store: Path) -> MlflowTracker:
    tracker = MlflowTracker(f"sqlite:///{store}", "replay-tests")
    tracker.check_reachable()
    tracker.prepare()
    return tracker


@pytest.fixture(scope="module")
def client(tracker: MlflowTracker) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracker.uri)


def test_prepare_opens_the_store_and_the_experiment(tracker: MlflowTracker, client: Any) -> None:
    experiment = client.get_experiment_by_name("replay-tests")
    assert experiment is not None
    assert tracker.experiment_id() == experiment.experiment_id


def test_the_embedded_store_is_write_ahead_logged(tracker: MlflowTracker, store: Path) -> None:
    with sqlite3.connect(store) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_log_metrics_puts_the_step_metrics_on_the_pipeline_run(
    tracker: MlflowTracker, client: Any
) -> None:
    parent = tracker.start_pipeline_run("run-metrics", "scored", {})
    metrics = [
        MetricRecord(key=f"step{i}.m{j}", value=i + j / 10, timestamp_ms=1000 + i)
        for i in range(30)
        for j in range(40)
    ]  # 1200 values: more than one log_batch holds
    tracker.log_metrics(parent, metrics)
    logged = client.get_run(parent).data.metrics
    assert logged == {m.key: m.value for m in metrics}


def test_find_step_run_finds_the_nested_run_of_that_attempt_only(tracker: MlflowTracker) -> None:
    parent = tracker.start_pipeline_run("run-replay", "scored", {})
    other_parent = tracker.start_pipeline_run("run-other", "scored", {})
    created = tracker.start_step_run(parent, "train", "attempt-1")
    tracker.start_step_run(parent, "evaluate", "attempt-2")
    tracker.start_step_run(other_parent, "train", "attempt-3")

    assert tracker.find_step_run(parent, "attempt-1") == created
    assert tracker.find_step_run(parent, "attempt-3") is None  # another parent's
    assert tracker.find_step_run(parent, "attempt-9") is None
