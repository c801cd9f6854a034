"""The quickstart as an MLflow user runs it: ``MLFLOW_TRACKING_URI`` names a real MLflow server
(scripts/services/mlflow.sh), MLflow's own client loads the registered model with its signature,
and a fully cached re-run still reports every gate metric, marked cached."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ServiceStarter
from tests.e2e.cli import EXAMPLES, mlyard, mlyard_json

pytestmark = pytest.mark.e2e
QUICKSTART = str(EXAMPLES / "quickstart" / "pipeline.py")
GATE_METRICS = ("evaluate.accuracy", "evaluate.precision", "evaluate.recall")


def test_mlflow_tracking_uri_is_tried_when_mlyard_sets_none() -> None:
    done = mlyard("run", QUICKSTART, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"})

    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Could not reach the MLflow tracking server at http://127.0.0.1:1" in output
    assert "MLFLOW_TRACKING_URI" in output  # the hint names the variable to fix
    assert "Traceback" not in output


def test_quickstart_on_the_mlflow_server_named_by_mlflow_tracking_uri(
    services: ServiceStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = services("mlflow")["MLFLOW_TRACKING_URI"]
    as_mlflow_user = {"MLFLOW_TRACKING_URI": server}

    first = mlyard_json("run", QUICKSTART, env=as_mlflow_user)

    assert first["state"] == "SUCCEEDED", first.get("error")
    assert first["mlflow_url"].startswith(f"{server}/#/experiments/")
    assert "digits-classifier version 1" in first["models"]
    assert first["cached_metrics"] == {}
    home = Path(os.environ["MLYARD_HOME"])
    assert not (home / "mlflow.db").exists()  # nothing went to the embedded store

    # MLflow's own client, configured the MLflow way, finds the run and loads the model.
    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    parent = MlflowClient().get_run(first["mlflow_run_id"])
    assert parent.data.tags["mlyard.run_id"] == first["id"]
    model = mlflow.pyfunc.load_model("models:/digits-classifier/1")
    signature = model.metadata.signature
    assert [(str(s.type), tuple(s.shape)) for s in signature.inputs.inputs] == [
        ("float32", (-1, 64))
    ]
    assert [str(s.type) for s in signature.outputs.inputs] == ["int64"]
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data[:20] / 16.0).astype(np.float32)
    assert (model.predict(images) == digits.target[:20]).mean() >= 0.8

    # A fully cached re-run: no step runs, yet every gate metric is there, marked cached.
    again = mlyard_json("run", QUICKSTART, env=as_mlflow_user)

    assert {s["state"] for s in again["steps"]} == {"CACHED"}
    for key in GATE_METRICS:
        assert again["metrics"][key] == first["metrics"][key]
        assert again["cached_metrics"][key] == first["id"]
    shown = mlyard_json("runs", "show", again["id"], env=as_mlflow_user)
    assert shown["metrics"] == again["metrics"]
    assert shown["cached_metrics"] == again["cached_metrics"]
    rich = mlyard("runs", "show", again["id"], env=as_mlflow_user)
    assert rich.returncode == 0, rich.stderr
    accuracy_line = next(line for line in rich.stdout.splitlines() if "evaluate.accuracy" in line)
    assert f"cached, from run {first['id']}" in accuracy_line


def test_mlflow_registry_uri_is_where_runs_register_and_serve_loads(
    tmp_path: Path,
) -> None:
    """MLflow's two variables name two stores: the run is tracked in one, its model registered
    in the other, and `mlyard serve` finds the model there."""
    import httpx
    from mlflow.tracking import MlflowClient

    from tests.integration.serving_processes import start_server, stop_server, wait_ready

    runs_store = f"sqlite:///{tmp_path / 'runs.db'}"
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    as_mlflow_user = {"MLFLOW_TRACKING_URI": runs_store, "MLFLOW_REGISTRY_URI": registry}

    first = mlyard_json("run", QUICKSTART, env=as_mlflow_user)

    assert first["state"] == "SUCCEEDED", first.get("error")
    registered = MlflowClient(tracking_uri=runs_store, registry_uri=registry)
    assert registered.get_model_version("digits-classifier", "1").name == "digits-classifier"
    assert (
        MlflowClient(tracking_uri=runs_store, registry_uri=runs_store).search_registered_models()
        == []
    )

    server = start_server(
        tmp_path, "registry", ["models:/digits-classifier/1"], {**os.environ, **as_mlflow_user}
    )
    try:
        wait_ready(server)
        metadata = httpx.get(f"{server.url}/v2/models/digits-classifier", timeout=10).json()
        assert [(i["datatype"], i["shape"]) for i in metadata["inputs"]] == [("FP32", [-1, 64])]
    finally:
        stop_server(server)
