"""The tracker and the registry service against a real `mlflow server` (from mlflow.sh)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlyard.errors import NotFoundError, TrackingError
from mlyard.models.tasks import ArtifactRef, LoggedModel, MetricRecord, Usage
from mlyard.services.models import list_models, resolve_model_uri, show_model
from mlyard.settings import load_settings
from mlyard.tracking.mlflow_tracker import MlflowTracker
from tests.conftest import ServiceStarter

pytestmark = pytest.mark.integration

ARTIFACT = ArtifactRef(digest="sha256:0", materializer="joblib", type_name="x", size_bytes=1)


@pytest.fixture(scope="module")
def server_uri(services: ServiceStarter) -> str:
    return services("mlflow")["MLFLOW_TRACKING_URI"]


def test_server_answers_clients_on_127_0_0_1(server_uri: str) -> None:
    """MLflow 3's host-header and CORS checks admit 127.0.0.1 without extra flags."""
    assert server_uri.startswith("http://127.0.0.1:")
    request = urllib.request.Request(
        f"{server_uri}/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Origin": server_uri},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_round_trip_over_http(server_uri: str, tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    tracker = MlflowTracker(server_uri, "integration")
    tracker.check_reachable()
    client = MlflowClient(tracking_uri=server_uri, registry_uri=server_uri)

    parent = tracker.start_pipeline_run("run-http", "digits", {"c": 1.0})
    tracker.log_params(parent, {"c": 1.0})
    step = tracker.start_step_run(parent, "train", "attempt-http")
    tracker.log_step_data(
        step,
        {},
        [MetricRecord(key="loss", value=1 / (i + 1), step=i, timestamp_ms=i) for i in range(2500)],
        Usage(wall_seconds=3.0, cpu_seconds=2.0, cost=0.5),
    )
    features, labels = load_digits(return_X_y=True)
    classifier = LogisticRegression(max_iter=300).fit(features[:300], labels[:300])
    version = tracker.log_model(
        step, LoggedModel(name="http-digits", flavor="sklearn", artifact=ARTIFACT), classifier
    )
    tracker.end_run(step, "FINISHED")
    tracker.end_run(parent, "FINISHED")

    step_run = client.get_run(step)
    assert step_run.data.tags["mlflow.parentRunId"] == parent
    assert step_run.data.tags["mlyard.attempt_id"] == "attempt-http"
    assert len(client.get_metric_history(step, "loss")) == 2500
    assert step_run.data.metrics["usage.cost"] == 0.5
    assert client.get_run(parent).data.tags["mlyard.run_id"] == "run-http"
    experiment = tracker.experiment_id()
    assert tracker.run_url(step) == f"{server_uri}/#/experiments/{experiment}/runs/{step}"

    assert version == "1"
    settings = load_settings(tracking={"uri": server_uri})
    # The server is shared by the session's tests: other tests register models too.
    assert "http-digits" in [m.name for m in list_models(settings)]
    details = show_model(settings, "http-digits")
    assert [(v.version, v.mlyard_run_id, v.step) for v in details.versions] == [
        ("1", "run-http", "train")
    ]
    client.set_registered_model_alias("http-digits", "champion", version)
    resolved = resolve_model_uri(settings, "models:/http-digits@champion")
    assert (resolved.uri, resolved.flavor) == ("models:/http-digits/1", "sklearn")
    with pytest.raises(NotFoundError) as caught:
        resolve_model_uri(settings, "models:/http-digits@production")
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("Its versions: 1. Its aliases: @champion (v1).")

    # The artifacts went through the server's proxy: the client needs no storage access.
    local = download_artifacts(
        artifact_uri=client.get_model_version_download_uri("http-digits", "1"),
        dst_path=str(tmp_path),
        tracking_uri=server_uri,
    )
    import mlflow.sklearn

    loaded: Any = mlflow.sklearn.load_model(local)
    np.testing.assert_array_equal(
        loaded.predict(features[300:320]), classifier.predict(features[300:320])
    )


def test_closed_port_is_a_tracking_error_that_says_how_to_fix_it() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    tracker = MlflowTracker(uri, "x")
    with pytest.raises(TrackingError) as caught:
        tracker.check_reachable()
    assert caught.value.message.startswith(f"Could not reach the MLflow tracking server at {uri}: ")
    assert "Connection refused" in caught.value.message
    assert caught.value.hint == (
        "Start it, fix tracking.uri in mlyard.toml or MLYARD_TRACKING__URI (or "
        "MLFLOW_TRACKING_URI, used when those are unset), or set tracking.uri to 'none' "
        "to run without tracking."
    )
    with pytest.raises(TrackingError, match=f"Could not reach the MLflow tracking server at {uri}"):
        list_models(load_settings(tracking={"uri": uri}))
