"""Models logged with an MLflow signature: from an input example, or from what the model knows.

The tracker logs to a real SQLite store; each model is read back as MLflow's own client does
(``mlflow.pyfunc.load_model``), with its signature and stored example.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlyard.models.tasks import ArtifactRef, LoggedModel
from mlyard.tracking.mlflow_tracker import MlflowTracker
from mlyard.tracking.signatures import signature_from_model

ARTIFACT = ArtifactRef(digest="sha256:0", materializer="joblib", type_name="x", size_bytes=1)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> MlflowTracker:
    store = tmp_path_factory.mktemp("signatures") / "mlflow.db"
    tracker = MlflowTracker(f"sqlite:///{store}", "signatures")
    tracker.check_reachable()
    return tracker


@pytest.fixture(scope="module")
def step_run(tracker: MlflowTracker) -> Iterator[str]:
    parent = tracker.start_pipeline_run("run-signatures", "training", {})
    step = tracker.start_step_run(parent, "register", "attempt-signatures")
    yield step
    tracker.end_run(step, "FINISHED")
    tracker.end_run(parent, "FINISHED")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    return features[:400], labels[:400]


def _log_and_load(
    tracker: MlflowTracker,
    step_run: str,
    tmp_path: Path,
    name: str,
    flavor: str,
    model: object,
    example: object = None,
) -> tuple[Any, Path]:
    """Log ``model``, then load the registered version back with ``mlflow.pyfunc``."""
    import mlflow.pyfunc
    from mlflow.artifacts import download_artifacts
    from mlflow.tracking import MlflowClient

    version = tracker.log_model(
        step_run, LoggedModel(name=name, flavor=flavor, artifact=ARTIFACT), model, example
    )
    client = MlflowClient(tracking_uri=tracker.uri, registry_uri=tracker.uri)
    local = download_artifacts(
        artifact_uri=client.get_model_version_download_uri(name, version),
        dst_path=str(tmp_path),
        tracking_uri=tracker.uri,
        registry_uri=tracker.uri,
    )
    return mlflow.pyfunc.load_model(local), Path(local)


def _tensor(schema: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(str(spec.type), tuple(spec.shape)) for spec in schema.inputs]


def test_sklearn_model_without_example_takes_a_float64_tensor_of_its_feature_count(
    tracker: MlflowTracker, step_run: str, tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    from sklearn.linear_model import LogisticRegression

    features, labels = digits
    classifier = LogisticRegression(max_iter=300).fit(features, labels)

    loaded, path = _log_and_load(tracker, step_run, tmp_path, "sig-digits", "sklearn", classifier)

    signature = loaded.metadata.signature
    assert _tensor(signature.inputs) == [("float64", (-1, 64))]
    assert [(str(s.type), tuple(s.shape)) for s in signature.outputs.inputs] == [("int64", (-1,))]
    assert not (path / "input_example.json").exists()
    np.testing.assert_array_equal(loaded.predict(features[:7]), classifier.predict(features[:7]))


def test_sklearn_model_fitted_on_a_dataframe_takes_its_named_columns(
    tracker: MlflowTracker, step_run: str, tmp_path: Path
) -> None:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    frame = pd.DataFrame({"area": [50.0, 80.0, 120.0, 65.0], "rooms": [2, 3, 5, 2]})
    regressor = LinearRegression().fit(frame, [100.0, 160.0, 250.0, 130.0])

    loaded, _ = _log_and_load(tracker, step_run, tmp_path, "sig-prices", "sklearn", regressor)

    signature = loaded.metadata.signature
    assert [(c.name, c.type.name) for c in signature.inputs.inputs] == [
        ("area", "double"),
        ("rooms", "double"),
    ]
    assert signature.outputs is None  # a regressor's output is not guessed
    predicted = loaded.predict(pd.DataFrame({"area": [90.0], "rooms": [3.0]}))
    assert predicted.shape == (1,)


def test_an_input_example_gives_the_signature_and_is_stored_in_the_model(
    tracker: MlflowTracker, step_run: str, tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    from sklearn.linear_model import LogisticRegression

    features, labels = digits
    classifier = LogisticRegression(max_iter=300).fit(features, labels)
    example = features[:3].astype(np.float32)

    loaded, path = _log_and_load(
        tracker, step_run, tmp_path, "sig-example", "sklearn", classifier, example
    )

    signature = loaded.metadata.signature
    assert _tensor(signature.inputs) == [("float32", (-1, 64))]
    assert [str(s.type) for s in signature.outputs.inputs] == ["int64"]
    np.testing.assert_array_equal(loaded.metadata.load_input_example(str(path)), example)


def test_a_torch_model_gets_its_signature_from_the_example(
    tracker: MlflowTracker, step_run: str, tmp_path: Path
) -> None:
    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    example = np.random.default_rng(0).random((2, 1, 4, 4), dtype=np.float32)

    loaded, _ = _log_and_load(tracker, step_run, tmp_path, "sig-net", "pytorch", network, example)

    signature = loaded.metadata.signature
    assert _tensor(signature.inputs) == [("float32", (-1, 1, 4, 4))]
    assert [(str(s.type), tuple(s.shape)) for s in signature.outputs.inputs] == [
        ("float32", (-1, 3))
    ]
    with torch.no_grad():
        expected = network(torch.from_numpy(example)).numpy()
    np.testing.assert_allclose(loaded.predict(example), expected, rtol=1e-6)


def test_no_signature_is_guessed_where_the_model_does_not_say() -> None:
    import torch
    from sklearn.linear_model import LogisticRegression

    assert signature_from_model("pytorch", torch.nn.Linear(4, 2)) is None
    assert signature_from_model("sklearn", LogisticRegression()) is None  # not fitted


def test_string_labels_leave_the_output_out(digits: tuple[np.ndarray, np.ndarray]) -> None:
    from sklearn.tree import DecisionTreeClassifier

    features, labels = digits
    names = np.array(["even", "odd"])[labels % 2]
    signature = signature_from_model("sklearn", DecisionTreeClassifier().fit(features, names))

    assert signature is not None
    assert _tensor(signature.inputs) == [("float64", (-1, 64))]
    assert signature.outputs is None
