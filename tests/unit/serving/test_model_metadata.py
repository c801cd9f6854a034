"""What the v2 metadata says about a model: from its signature, its framework, or 'unknown'.

Real models saved with MLflow into a temporary directory and loaded the way `mlyard serve` loads
them; no tracking server is needed for a model on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlyard.models.registry import ResolvedModel
from mlyard.serving.inference import v2_request_to_arrays
from mlyard.serving.model_loading import ServableModel, load_servable_model
from mlyard.serving.protocol_v2 import InferenceRequest
from mlyard.serving.tensors import TensorError

# Given, so MLflow does not start a process to work out the model's requirements (seconds each).
NO_REQUIREMENTS: list[str] = []


def _load(path: Path, flavor: str) -> ServableModel:
    return load_servable_model(ResolvedModel(name="m", version="1", uri=str(path), flavor=flavor))


def _metadata(specs: Any) -> list[dict[str, Any]]:
    return [spec.metadata() for spec in specs]


def _request(name: str, datatype: str, shape: list[int], data: list[Any]) -> InferenceRequest:
    return InferenceRequest.model_validate(
        {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}
    )


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    return features[:300], labels[:300]


def test_sklearn_without_signature_is_described_from_the_fitted_model(
    tmp_path: Path, digits: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]
) -> None:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    features, labels = digits
    classifier = LogisticRegression(max_iter=50).fit(features, labels)
    mlflow.sklearn.save_model(classifier, tmp_path / "m", pip_requirements=NO_REQUIREMENTS)
    model = _load(tmp_path / "m", "sklearn")
    (described_input,) = _metadata(model.inputs)
    assert {k: described_input[k] for k in ("name", "datatype", "shape")} == {
        "name": "input-0",
        "datatype": "FP64",
        "shape": [-1, 64],
    }
    assert described_input["parameters"]["shape_known"] is True
    assert "n_features_in_" in described_input["parameters"]["description"]
    assert [(o["name"], o["datatype"], o["shape"]) for o in _metadata(model.outputs)] == [
        ("output-0", "INT64", [-1])
    ]
    # What the metadata says is also what requests are held to.
    with pytest.raises(TensorError, match=r"expects \[-1, 64\]"):
        v2_request_to_arrays(model, _request("input-0", "FP64", [1, 3], [0.0, 1.0, 2.0]))
    arrays = v2_request_to_arrays(model, _request("input-0", "FP64", [1, 64], [0.0] * 64))
    assert model.predict(arrays)["output-0"].shape == (1,)


def test_column_signature_maps_column_types_to_v2_datatypes(tmp_path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class Echo(mlflow.pyfunc.PythonModel):
        # No type hints: MLflow would read them as the model's input schema.
        def predict(self, context, model_input, params=None):
            return model_input["name"].str.len()

    frame = pd.DataFrame(
        {
            "name": ["ab", "c"],
            "score": [1.5, 2.5],
            "count": np.array([1, 2], dtype=np.int32),
            "flag": [True, False],
            "when": pd.to_datetime(["2024-01-01", "2024-02-01"]),
        }
    )
    signature = infer_signature(frame, pd.Series([2, 1]))
    mlflow.pyfunc.save_model(
        tmp_path / "m", python_model=Echo(), signature=signature, pip_requirements=NO_REQUIREMENTS
    )
    model = _load(tmp_path / "m", "python_function")
    described = {d["name"]: d for d in _metadata(model.inputs)}
    assert {n: (d["datatype"], d["shape"]) for n, d in described.items()} == {
        "name": ("BYTES", [-1]),
        "score": ("FP64", [-1]),
        "count": ("INT32", [-1]),
        "flag": ("BOOL", [-1]),
        "when": ("BYTES", [-1]),
    }
    assert "ISO 8601" in described["when"]["parameters"]["description"]
    assert "parameters" not in described["score"]  # straight from the signature
    assert [(o["name"], o["datatype"]) for o in _metadata(model.outputs)] == [("output-0", "INT64")]


def test_tensor_signature_names_the_outputs_the_model_returns(tmp_path: Path) -> None:
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    class Means(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.asarray(model_input["image"]).mean(axis=(2, 3))

    images = np.zeros((2, 3, 4, 4), dtype=np.float32)
    signature = infer_signature(
        {"image": images}, {"channel_means": np.zeros((2, 3), dtype=np.float32)}
    )
    mlflow.pyfunc.save_model(
        tmp_path / "m", python_model=Means(), signature=signature, pip_requirements=NO_REQUIREMENTS
    )
    model = _load(tmp_path / "m", "python_function")
    assert _metadata(model.inputs) == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 3, 4, 4]}
    ]
    assert _metadata(model.outputs) == [
        {"name": "channel_means", "datatype": "FP32", "shape": [-1, 3]}
    ]
    outputs = model.predict({"image": np.ones((1, 3, 4, 4), dtype=np.float32)})
    assert list(outputs) == ["channel_means"]  # not "output-0": the metadata's name


def test_torch_without_signature_says_the_shape_is_unknown(tmp_path: Path) -> None:
    import mlflow.pytorch
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(4, 2))
    mlflow.pytorch.save_model(
        module, tmp_path / "m", serialization_format="pickle", pip_requirements=NO_REQUIREMENTS
    )
    model = _load(tmp_path / "m", "pytorch")
    (described_input,) = _metadata(model.inputs)
    (described_output,) = _metadata(model.outputs)
    for described in (described_input, described_output):
        assert described["shape"] == [-1]
        assert described["parameters"]["shape_known"] is False
        assert "does not say" in described["parameters"]["description"]
    assert model.checked_inputs == ()
    # Nothing is known, so nothing is refused: any name and shape reaches the model.
    arrays = v2_request_to_arrays(model, _request("x", "FP32", [1, 4], [1.0, 2.0, 3.0, 4.0]))
    assert model.predict(arrays)["output-0"].shape == (1, 2)
