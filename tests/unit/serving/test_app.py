"""The HTTP app over a small in-memory model: v2 routes, /predict, errors, limits, auth, metrics."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

with warnings.catch_warnings():
    # Starlette nudges towards httpx2; httpx is what the project depends on.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from mlyard.serving.app import AppOptions, create_app
from mlyard.serving.model_loading import ServableModel
from mlyard.serving.replicas import SharedReadiness
from mlyard.serving.tensors import TensorSpec

TOKEN = "unit-test-token"


def _sum_rows(inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    return {"total": inputs["features"].sum(axis=1)}


MODEL = ServableModel(
    name="adder",
    version="3",
    platform="numpy",
    inputs=(TensorSpec("features", "FP32", (-1, 3)),),
    outputs=(TensorSpec("total", "FP32", (-1,)),),
    predict=_sum_rows,
    warmup_input={"features": np.zeros((1, 3), dtype=np.float32)},
)


def _client(options: AppOptions) -> Iterator[TestClient]:
    with TestClient(create_app(MODEL, options)) as client:
        deadline = time.monotonic() + 5
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "the app never became ready"
            time.sleep(0.01)
        yield client


@pytest.fixture
def client() -> Iterator[TestClient]:
    yield from _client(AppOptions(max_request_bytes=2000))


def _infer_body(data: list[float], shape: list[int], datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": data}]}


def test_health_and_metadata(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/models/adder/ready").status_code == 200
    assert client.get("/v2").json()["name"] == "mlyard"
    metadata = client.get("/v2/models/adder/versions/3").json()
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 3]}]
    assert metadata["platform"] == "numpy"


def test_v2_infer_returns_typed_outputs(client: TestClient) -> None:
    body = {**_infer_body([1, 2, 3, 4, 5, 6], [2, 3]), "id": "req-1"}
    response = client.post("/v2/models/adder/infer", json=body)
    assert response.status_code == 200
    assert response.json() == {
        "model_name": "adder",
        "model_version": "3",
        "id": "req-1",
        "outputs": [{"name": "total", "shape": [2], "datatype": "FP32", "data": [6.0, 15.0]}],
    }


def test_predict_takes_instances_and_inputs(client: TestClient) -> None:
    by_instances = client.post("/predict", json={"instances": [[1, 1, 1], [2, 2, 2]]})
    assert by_instances.json() == {"predictions": [3.0, 6.0]}
    by_inputs = client.post("/predict", json={"inputs": {"features": [[0, 0, 1]]}})
    assert by_inputs.json() == {"predictions": [1.0]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_infer_body([1, 2], [1, 2]), "expects [-1, 3]"),
        (_infer_body([1, 2, 3], [1, 3], "FP64"), "expects FP32"),
        (_infer_body([1, 2, 3], [1, 4]), "needs 4"),
        (
            {"inputs": [{"name": "other", "shape": [1], "datatype": "FP32", "data": [1]}]},
            "no input 'other'",
        ),
        ({"inputs": []}, "invalid request body"),
        (
            {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32"}]},
            "has neither data nor a binary_data_size",
        ),
    ],
)
def test_bad_tensors_get_400_and_the_server_stays_up(
    client: TestClient, body: dict[str, Any], message: str
) -> None:
    response = client.post("/v2/models/adder/infer", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert client.post("/predict", json={"instances": [[1, 2, 3]]}).status_code == 200


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.post("/v2/models/nope/infer", json=_infer_body([1, 2, 3], [1, 3]))
    assert response.status_code == 404
    assert "serves 'adder'" in response.json()["error"]


def test_oversized_body_is_413(client: TestClient) -> None:
    response = client.post("/predict", json={"instances": [[1.0, 2.0, 3.0]] * 200})
    assert response.status_code == 413
    assert "--max-request-bytes" in response.json()["error"]


def test_token_is_required_except_on_health() -> None:
    for client in _client(AppOptions(token=TOKEN)):
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/models/adder").status_code == 401
        wrong = client.get("/v2/models/adder", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.get("/v2/models/adder", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200


def test_metrics_count_requests_by_route_and_status(client: TestClient) -> None:
    client.post("/predict", json={"instances": [[1, 2, 3]]})
    client.post("/predict", json={"instances": [[1, 2]]})
    text = client.get("/metrics").text
    assert 'mlyard_serving_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    assert 'mlyard_serving_errors_total{kind="client",route="/predict"} 1.0' in text
    assert 'mlyard_serving_batch_size_count{model="adder"}' in text
    assert 'mlyard_serving_ready{model="adder"} 1.0' in text


def test_ready_waits_for_every_replica(tmp_path: Path) -> None:
    group = SharedReadiness(tmp_path, expected=2)
    with TestClient(create_app(MODEL, AppOptions(replica_group=group))) as client:
        deadline = time.monotonic() + 5
        while not any(tmp_path.iterdir()):  # this replica records itself once warmed up
            assert time.monotonic() < deadline, "the replica never recorded readiness"
            time.sleep(0.01)
        response = client.get("/v2/health/ready")
        assert response.status_code == 503
        assert "other replicas" in response.json()["error"]
        (tmp_path / "another-replica").touch()
        assert client.get("/v2/health/ready").status_code == 200


def test_requested_outputs_are_checked(client: TestClient) -> None:
    body = {**_infer_body([1, 2, 3], [1, 3]), "outputs": [{"name": "total"}]}
    assert client.post("/v2/models/adder/infer", json=body).json()["outputs"][0]["name"] == "total"
    body["outputs"] = [{"name": "mean"}]
    response = client.post("/v2/models/adder/infer", json=body)
    assert response.status_code == 400
    assert "no output 'mean'" in response.json()["error"]


def test_a_model_failure_is_a_500_with_its_message() -> None:
    def refusing_model(inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        if (inputs["features"] < 0).any():
            raise ValueError("negative features are out of range")
        return _sum_rows(inputs)

    fragile = ServableModel(**{**MODEL.__dict__, "predict": refusing_model})
    with TestClient(create_app(fragile, AppOptions())) as client:
        deadline = time.monotonic() + 5
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        response = client.post("/predict", json={"instances": [[-1, 0, 0]]})
        assert response.status_code == 500
        assert "negative features are out of range" in response.json()["error"]
        assert client.post("/predict", json={"instances": [[1, 0, 0]]}).status_code == 200
