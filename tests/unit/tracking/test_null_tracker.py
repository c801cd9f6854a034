"""Tracking off: the null tracker records nothing; the factory picks the tracker asked for."""

from __future__ import annotations

import subprocess
import sys

from mlyard.models.tasks import ArtifactRef, LoggedModel, MetricRecord, Usage
from mlyard.settings import load_settings
from mlyard.tracking.base import Tracker
from mlyard.tracking.factory import create_tracker
from mlyard.tracking.mlflow_tracker import MlflowTracker
from mlyard.tracking.null import NO_VERSION, NullTracker


def test_null_tracker_gives_synthetic_ids_and_records_nothing() -> None:
    tracker: Tracker = NullTracker()
    tracker.check_reachable()
    parent = tracker.start_pipeline_run("run1", "pipe", {"lr": 0.1})
    steps = {tracker.start_step_run(parent, "train", f"attempt{i}") for i in range(3)}
    assert parent == "null-run1"
    assert len(steps) == 3 and all(s.startswith("null-") for s in steps)
    step = next(iter(steps))
    tracker.log_params(step, {"a": 1})
    tracker.log_step_data(
        step, {"b": 2}, [MetricRecord(key="loss", value=1.0, timestamp_ms=0)], Usage()
    )
    artifact = ArtifactRef(digest="sha256:0", materializer="json", type_name="dict", size_bytes=2)
    model = LoggedModel(name="m", flavor="sklearn", artifact=artifact)
    assert tracker.log_model(step, model, object()) == NO_VERSION
    tracker.end_run(step, "FINISHED")
    assert tracker.run_url(parent) is None


def test_factory_returns_null_tracker_when_tracking_is_off() -> None:
    assert isinstance(create_tracker(load_settings(tracking={"uri": "none"})), NullTracker)


def test_factory_returns_mlflow_tracker_on_the_configured_store() -> None:
    settings = load_settings(tracking={"uri": "http://127.0.0.1:5999", "experiment": "exp"})
    tracker = create_tracker(settings)
    assert isinstance(tracker, MlflowTracker)
    assert (tracker.uri, tracker.experiment) == ("http://127.0.0.1:5999", "exp")


def test_default_tracker_uses_sqlite_under_mlyard_home() -> None:
    settings = load_settings()
    tracker = create_tracker(settings)
    assert isinstance(tracker, MlflowTracker)
    assert tracker.uri == f"sqlite:///{settings.home / 'mlflow.db'}"


def test_creating_a_tracker_does_not_import_mlflow() -> None:
    code = (
        "import sys\n"
        "from mlyard.settings import load_settings\n"
        "from mlyard.tracking.factory import create_tracker\n"
        "import mlyard.services.models, mlyard.services.mlflow_ui\n"
        "create_tracker(load_settings())\n"
        "assert 'mlflow' not in sys.modules, 'mlflow was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
