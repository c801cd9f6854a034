"""The MLflow tracker on a real SQLite tracking store: runs, batched metrics, usage, models."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlyard.errors import TrackingError
from mlyard.models.tasks import ArtifactRef, LoggedModel, MetricRecord, Usage
from mlyard.tracking.base import Tracker
from mlyard.tracking.mlflow_tracker import MlflowTracker

ARTIFACT = ArtifactRef(digest="sha256:0", materializer="joblib", type_name="x", size_bytes=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store per module: a fresh one costs MLflow's migrations (~2 s)."""
    return tmp_path_factory.mktemp("tracking") / "state" / "mlflow.db"


@pytest.fixture(scope="module")
def tracker(store: Path) -> MlflowTracker:
    tracker = MlflowTracker(f"sqlite:///{store}", "unit-tests")
    tracker.check_reachable()
    return tracker


@pytest.fixture(scope="module")
def client(tracker: MlflowTracker) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracker.uri, registry_uri=tracker.uri)


@pytest.fixture(scope="module")
def step_run(tracker: MlflowTracker) -> Iterator[str]:
    parent = tracker.start_pipeline_run("run-models", "training", {})
    step = tracker.start_step_run(parent, "train", "attempt-models")
    yield step
    tracker.end_run(step, "FINISHED")
    tracker.end_run(parent, "FINISHED")


def _model(name: str, flavor: str) -> LoggedModel:
    return LoggedModel(name=name, flavor=flavor, artifact=ARTIFACT)


def _download(tracker: MlflowTracker, client: Any, name: str, version: str, to: Path) -> str:
    """The files of a model version, fetched without MLflow's global tracking URI."""
    from mlflow.artifacts import download_artifacts

    return str(
        download_artifacts(
            artifact_uri=client.get_model_version_download_uri(name, version),
            dst_path=str(to),
            tracking_uri=tracker.uri,
            registry_uri=tracker.uri,
        )
    )


def test_it_is_a_tracker(tracker: MlflowTracker) -> None:
    as_port: Tracker = tracker
    assert as_port is tracker


def test_check_reachable_creates_the_store_directory(store: Path) -> None:
    assert store.parent.is_dir()


def test_pipeline_run_is_a_parent_with_nested_step_runs(
    tracker: MlflowTracker, client: Any
) -> None:
    parent = tracker.start_pipeline_run("run-1", "digits", {"lr": 0.1})
    tracker.log_params(parent, {"lr": 0.1, "layers": [1, 2]})
    first = tracker.start_step_run(parent, "train", "attempt-1")
    second = tracker.start_step_run(parent, "train", "attempt-2")
    tracker.end_run(first, "FAILED")
    tracker.end_run(second, "FINISHED")
    tracker.end_run(parent, "FAILED")

    parent_run = client.get_run(parent)
    assert parent_run.data.tags["mlyard.run_id"] == "run-1"
    assert parent_run.data.tags["mlyard.pipeline"] == "digits"
    assert parent_run.data.params == {"lr": "0.1", "layers": "[1, 2]"}
    assert parent_run.info.status == "FAILED"
    assert client.get_experiment(parent_run.info.experiment_id).name == "unit-tests"
    for run_id, attempt, status in (
        (first, "attempt-1", "FAILED"),
        (second, "attempt-2", "FINISHED"),
    ):
        step = client.get_run(run_id)
        assert step.data.tags["mlflow.parentRunId"] == parent
        assert step.data.tags["mlyard.step"] == "train"
        assert step.data.tags["mlyard.attempt_id"] == attempt
        assert step.info.status == status
        assert step.info.experiment_id == parent_run.info.experiment_id


def test_artifacts_live_beside_the_store_not_in_the_working_directory(
    tracker: MlflowTracker, client: Any, store: Path
) -> None:
    experiment = client.get_experiment(tracker.experiment_id())
    location = Path(urllib.parse.urlparse(experiment.artifact_location).path)
    assert location.is_relative_to(store.parent)
    assert not Path(Path.cwd(), "mlruns", tracker.experiment_id()).exists()


def test_metrics_are_logged_in_batches_of_1000(
    tracker: MlflowTracker, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tracker.start_step_run(tracker.start_pipeline_run("run-2", "p", {}), "fit", "a")
    batch_sizes: list[int] = []
    real_log_batch = tracker._client.log_batch

    def counting_log_batch(run_id: str, **kwargs: Any) -> None:
        batch_sizes.append(len(kwargs.get("metrics", [])))
        real_log_batch(run_id, **kwargs)

    monkeypatch.setattr(tracker._client, "log_batch", counting_log_batch)
    records = [
        MetricRecord(key="loss" if i % 2 else "accuracy", value=i / 10, step=i, timestamp_ms=i)
        for i in range(2500)
    ]
    tracker.log_step_data(run, {}, records, Usage())

    assert batch_sizes == [1000, 1000, 504]  # the four usage metrics ride in the last request
    history = client.get_metric_history(run, "loss")
    assert len(history) == 1250
    assert sorted(m.step for m in history) == list(range(1, 2500, 2))
    latest = client.get_run(run).data.metrics
    assert {k: v for k, v in latest.items() if not k.startswith("usage.")} == {
        "loss": 249.9,
        "accuracy": 249.8,
    }


def test_usage_becomes_usage_metrics(tracker: MlflowTracker, client: Any) -> None:
    parent = tracker.start_pipeline_run("run-3", "p", {})
    with_cost = tracker.start_step_run(parent, "a", "a1")
    without_cost = tracker.start_step_run(parent, "b", "b1")
    usage = Usage(wall_seconds=2.5, cpu_seconds=1.5, peak_memory_bytes=2**30, gpu_seconds=0.5)
    tracker.log_step_data(with_cost, {}, [], usage.model_copy(update={"cost": 0.25}))
    tracker.log_step_data(without_cost, {}, [], usage)

    assert client.get_run(with_cost).data.metrics == {
        "usage.wall_seconds": 2.5,
        "usage.cpu_seconds": 1.5,
        "usage.peak_memory_bytes": float(2**30),
        "usage.gpu_seconds": 0.5,
        "usage.cost": 0.25,
    }
    assert "usage.cost" not in client.get_run(without_cost).data.metrics


def test_a_steps_params_metrics_and_usage_share_requests(
    tracker: MlflowTracker, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tracker.start_pipeline_run("run-4", "p", {})
    usual = tracker.start_step_run(parent, "usual", "u1")
    large = tracker.start_step_run(parent, "large", "l1")
    requests: list[tuple[int, int]] = []
    real_log_batch = tracker._client.log_batch

    def counting_log_batch(run_id: str, **kwargs: Any) -> None:
        requests.append((len(kwargs.get("params", [])), len(kwargs.get("metrics", []))))
        real_log_batch(run_id, **kwargs)

    monkeypatch.setattr(tracker._client, "log_batch", counting_log_batch)
    usage = Usage(wall_seconds=2.0, cpu_seconds=1.0)
    tracker.log_step_data(
        usual, {"lr": 0.1}, [MetricRecord(key="acc", value=0.9, timestamp_ms=1)], usage
    )
    assert requests == [(1, 5)]  # the metric and the four usage metrics, with the parameter

    requests.clear()
    params = {f"p{i}": i for i in range(150)}
    metrics = [MetricRecord(key="loss", value=i, step=i, timestamp_ms=i) for i in range(1900)]
    tracker.log_step_data(large, params, metrics, usage)
    assert requests == [(100, 900), (50, 950), (0, 54)]  # MLflow: 100 params, 1000 entries

    assert client.get_run(usual).data.params == {"lr": "0.1"}
    assert client.get_run(usual).data.metrics["acc"] == 0.9
    assert client.get_run(usual).data.metrics["usage.wall_seconds"] == 2.0
    assert len(client.get_run(large).data.params) == 150
    assert len(client.get_metric_history(large, "loss")) == 1900
    tags = client.get_run(large).data.tags
    assert tags["mlflow.parentRunId"] == parent and tags["mlyard.step"] == "large"


def test_sklearn_model_is_logged_registered_and_loads_back(
    tracker: MlflowTracker, client: Any, step_run: str, tmp_path: Path
) -> None:
    import mlflow.sklearn
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    features, labels = load_digits(return_X_y=True)
    classifier = LogisticRegression(max_iter=300).fit(features[:300], labels[:300])

    first = tracker.log_model(step_run, _model("unit-digits", "sklearn"), classifier)
    second = tracker.log_model(step_run, _model("unit-digits", "sklearn"), classifier)

    assert (first, second) == ("1", "2")
    version = client.get_model_version("unit-digits", "2")
    assert version.run_id == step_run
    assert version.status == "READY"
    assert version.tags == {
        "mlyard.run_id": "run-models",
        "mlyard.step": "train",
        "mlyard.flavor": "sklearn",
    }
    loaded = mlflow.sklearn.load_model(_download(tracker, client, "unit-digits", "2", tmp_path))
    np.testing.assert_array_equal(
        loaded.predict(features[300:350]), classifier.predict(features[300:350])
    )
    logged_model_ids = {o.model_id for o in client.get_run(step_run).outputs.model_outputs}
    assert len(logged_model_ids) >= 2


def test_torch_model_is_logged_registered_and_loads_back(
    tracker: MlflowTracker, client: Any, step_run: str, tmp_path: Path
) -> None:
    import mlflow.pytorch
    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    version = tracker.log_model(step_run, _model("unit-net", "pytorch"), network)

    assert version == "1"
    assert client.get_model_version("unit-net", "1").tags["mlyard.flavor"] == "pytorch"
    loaded = mlflow.pytorch.load_model(_download(tracker, client, "unit-net", "1", tmp_path))
    inputs = torch.randn(3, 4)
    torch.testing.assert_close(loaded(inputs), network(inputs))


def test_pyfunc_model_needs_a_python_model(
    tracker: MlflowTracker, client: Any, step_run: str
) -> None:
    import mlflow.pyfunc

    class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
        def predict(
            self, context: Any, model_input: list[float], params: Any = None
        ) -> list[float]:
            return [2 * value for value in model_input]

    assert tracker.log_model(step_run, _model("unit-doubler", "pyfunc"), Doubler()) == "1"
    assert client.get_model_version("unit-doubler", "1").tags["mlyard.flavor"] == "python_function"
    with pytest.raises(TrackingError, match=r"must be an mlflow\.pyfunc\.PythonModel"):
        tracker.log_model(step_run, _model("unit-doubler", "pyfunc"), lambda x: x)


def test_unknown_flavor_is_refused_with_the_supported_ones(
    tracker: MlflowTracker, step_run: str
) -> None:
    with pytest.raises(TrackingError, match="flavour 'onnx'") as caught:
        tracker.log_model(step_run, _model("unit-onnx", "onnx"), object())
    assert caught.value.hint is not None and "sklearn, pytorch" in caught.value.hint


def test_refused_values_become_tracking_errors_that_say_so(tracker: MlflowTracker) -> None:
    run = tracker.start_pipeline_run("run-4", "p", {})
    tracker.log_params(run, {"lr": 0.1})
    with pytest.raises(TrackingError, match="failed to log parameters") as caught:
        tracker.log_params(run, {"lr": 0.2})
    assert caught.value.hint is not None and "refused" in caught.value.hint


def test_run_url_of_a_local_store_points_to_mlyard_ui(tracker: MlflowTracker) -> None:
    assert "mlyard ui" in (tracker.run_url("abc") or "")


def test_unreachable_server_is_a_tracking_error_with_the_fix(unused_port: int) -> None:
    uri = f"http://127.0.0.1:{unused_port}"
    with pytest.raises(TrackingError) as caught:
        MlflowTracker(uri, "x").check_reachable()
    assert caught.value.message.startswith(f"Could not reach the MLflow tracking server at {uri}: ")
    assert caught.value.hint == (
        "Start it, fix tracking.uri in mlyard.toml or MLYARD_TRACKING__URI (or "
        "MLFLOW_TRACKING_URI, used when those are unset), or set tracking.uri to 'none' "
        "to run without tracking."
    )


@pytest.fixture
def unused_port() -> int:
    """A port nothing listens on (bound and released; nobody else grabs it that fast)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def double(values: Any) -> Any:
    """A user function inside a model: skops cannot vouch for it."""
    return values * 2


@pytest.mark.parametrize(
    ("name", "expected_format"),
    [("unit-tree", "skops"), ("unit-user-code", "cloudpickle")],
)
def test_sklearn_serialization_is_skops_unless_the_model_holds_user_code(
    tracker: MlflowTracker,
    client: Any,
    step_run: str,
    tmp_path: Path,
    name: str,
    expected_format: str,
) -> None:
    import mlflow.sklearn
    from mlflow.models import Model
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=3).fit([[0, 0], [1, 1], [2, 0]], [0, 1, 0])
    model = tree if expected_format == "skops" else make_pipeline(FunctionTransformer(double), tree)

    version = tracker.log_model(step_run, _model(name, "sklearn"), model)

    local = _download(tracker, client, name, version, tmp_path)
    flavor = Model.load(str(Path(local) / "MLmodel")).flavors["sklearn"]
    assert flavor["serialization_format"] == expected_format
    loaded = mlflow.sklearn.load_model(local)
    assert list(loaded.predict([[1, 1], [2, 0]])) == list(model.predict([[1, 1], [2, 0]]))


TINY_NET_MODULE = """
import torch


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layer(inputs) * 2
"""


def test_a_model_class_from_the_users_code_travels_with_the_model(
    tracker: MlflowTracker,
    client: Any,
    step_run: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib
    import sys

    import mlflow.pytorch
    import torch

    project = tmp_path / "project"
    project.mkdir()
    (project / "tiny_net_for_mlyard.py").write_text(TINY_NET_MODULE)
    monkeypatch.syspath_prepend(str(project))
    network = importlib.import_module("tiny_net_for_mlyard").TinyNet()

    version = tracker.log_model(step_run, _model("unit-tiny-net", "pytorch"), network)

    # Where the model is served, the user's project is not importable.
    monkeypatch.delitem(sys.modules, "tiny_net_for_mlyard")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(project)])
    local = _download(tracker, client, "unit-tiny-net", version, tmp_path / "download")
    loaded = mlflow.pytorch.load_model(local)
    inputs = torch.ones(2, 3)
    torch.testing.assert_close(loaded(inputs), network(inputs))
    assert type(loaded).__module__ == "tiny_net_for_mlyard"


def test_no_global_mlflow_state_is_touched(tracker: MlflowTracker, step_run: str) -> None:
    """Models are logged with the tracker's own client: no global URI, no active run."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    tracker.log_model(step_run, _model("unit-global-state", "sklearn"), model)
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before
    assert before[0] != tracker.uri
    assert mlflow.active_run() is None
