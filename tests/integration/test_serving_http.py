"""`mlyard serve` end to end: real models in a SQLite MLflow store, real servers, real HTTP.

Three servers start once for the module (in parallel, they take seconds each to import MLflow):
the digits classifier (sklearn) with batching, the same model with a long queue delay to catch a
request in flight for the SIGTERM drain test, and a tiny torch module on two replicas sharing
the HTTP and the gRPC port.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.integration.serving_processes import (
    LAUNCHER,
    Server,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = pytest.mark.integration

TOKEN = "integration-token-" + os.urandom(8).hex()


@dataclass(frozen=True)
class Store:
    env: dict[str, str]
    directory: Path


def _register_models(directory: Path) -> str:
    import mlflow
    import torch
    from mlflow.models import infer_signature
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{directory / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("serving", artifact_location=str(directory / "art"))
    features, labels = load_digits(return_X_y=True)
    classifier = LogisticRegression(max_iter=200).fit(features, labels)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.sklearn.log_model(
            classifier,
            name="model",
            registered_model_name="digits",
            pip_requirements=[],  # saves MLflow a process that works them out
            signature=infer_signature(features, classifier.predict(features)),
        )
    mlflow.MlflowClient().set_registered_model_alias("digits", "champion", "1")

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 2))
    example = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pytorch.log_model(
            module,
            name="model",
            input_example=example,
            registered_model_name="tiny",
            pip_requirements=[],
        )
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    directory = tmp_path_factory.mktemp("serving-store")
    uri = _register_models(directory)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLYARD_")}
    env.update(MLYARD_HOME=str(directory / "home"), MLYARD_TRACKING__URI=uri)
    return Store(env, directory)


def _start(
    store: Store,
    name: str,
    args: list[str],
    env: dict[str, str] | None = None,
    *,
    grpc: bool = False,
) -> Server:
    return start_server(store.directory, name, args, {**store.env, **(env or {})}, grpc=grpc)


@pytest.fixture(scope="module")
def servers(store: Store) -> Iterator[dict[str, Server]]:
    started = {
        "digits": _start(
            store,
            "digits",
            [
                "models:/digits@champion",
                "--max-queue-delay-ms",
                "20",
                "--max-request-bytes",
                "200000",
            ],
            env={"MLYARD_SERVE_TOKEN": TOKEN},
        ),
        "slow": _start(store, "slow", ["models:/digits/1", "--max-queue-delay-ms", "1500"]),
        "tiny": _start(store, "tiny", ["models:/tiny/1", "--workers", "2"], grpc=True),
    }
    try:
        for server in started.values():
            wait_ready(server)
        yield started
    finally:
        for server in started.values():
            stop_server(server)


@pytest.fixture(scope="module")
def digits(servers: dict[str, Server]) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=servers["digits"].url, headers=headers, timeout=30) as client:
        yield client


def _digit_rows(count: int) -> list[list[float]]:
    from sklearn.datasets import load_digits

    return [[float(v) for v in row] for row in load_digits().data[:count]]


def test_v2_health_metadata_and_infer(digits: httpx.Client) -> None:
    assert digits.get("/v2/health/live").status_code == 200
    assert digits.get("/v2/models/digits/ready").json() == {"ready": True}
    metadata = digits.get("/v2/models/digits").json()
    assert metadata["platform"] == "sklearn"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 64]}]
    rows = _digit_rows(3)
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [3, 64],
                "datatype": "FP64",
                "data": [v for row in rows for v in row],
            }
        ]
    }
    response = digits.post("/v2/models/digits/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["shape"] == [3]
    assert output["datatype"] == "INT64"
    assert output["data"] == [0, 1, 2]  # the first three digits of the data set


def test_predict_endpoint(digits: httpx.Client) -> None:
    response = digits.post("/predict", json={"instances": _digit_rows(2)})
    assert response.json() == {"predictions": [0, 1]}


def test_concurrent_requests_are_batched(digits: httpx.Client, servers: dict[str, Server]) -> None:
    rows = _digit_rows(48)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=servers["digits"].url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as client:
            return await asyncio.gather(
                *(client.post("/predict", json={"instances": [row]}) for row in rows)
            )

    expected = digits.post("/predict", json={"instances": rows}).json()["predictions"]
    responses = asyncio.run(fire())
    # Each request gets its own row's answer back, whatever batch it rode in.
    assert [r.json()["predictions"] for r in responses] == [[label] for label in expected]
    metrics = digits.get("/metrics").text
    single = _metric(metrics, 'mlyard_serving_batch_requests_bucket{le="1.0",model="digits"}')
    total = _metric(metrics, 'mlyard_serving_batch_requests_count{model="digits"}')
    rows_sum = _metric(metrics, 'mlyard_serving_batch_size_sum{model="digits"}')
    assert total > single, f"no model call served more than one request:\n{metrics}"
    assert rows_sum >= 48
    assert (
        _metric(
            metrics, 'mlyard_serving_requests_total{method="POST",route="/predict",status="200"}'
        )
        >= 48
    )


def test_wrong_shape_and_datatype_get_400_and_server_stays_up(digits: httpx.Client) -> None:
    wrong_shape = {
        "inputs": [
            {"name": "input-0", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}
        ]
    }
    response = digits.post("/v2/models/digits/infer", json=wrong_shape)
    assert response.status_code == 400
    assert "expects [-1, 64]" in response.json()["error"]
    wrong_type = {
        "inputs": [{"name": "input-0", "shape": [1, 64], "datatype": "INT32", "data": [1] * 64}]
    }
    response = digits.post("/v2/models/digits/infer", json=wrong_type)
    assert response.status_code == 400
    assert "expects FP64" in response.json()["error"]
    assert digits.post("/predict", json={"instances": _digit_rows(1)}).status_code == 200


def test_oversized_request_gets_413(digits: httpx.Client) -> None:
    response = digits.post("/predict", json={"instances": _digit_rows(1) * 1000})
    assert response.status_code == 413
    assert digits.get("/v2/health/ready").status_code == 200


def test_token_is_checked_on_every_route_but_health(servers: dict[str, Server]) -> None:
    url = servers["digits"].url
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    for path in ("/v2", "/v2/models/digits", "/metrics"):
        assert httpx.get(f"{url}{path}").status_code == 401
    wrong = httpx.post(
        f"{url}/predict",
        json={"instances": _digit_rows(1)},
        headers={"Authorization": "Bearer wrong"},
    )
    assert wrong.status_code == 401


def test_non_loopback_bind_without_token_refuses_to_start(store: Store) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "serve", "models:/digits/1", "--host", "0.0.0.0"],
        env=store.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "without a token" in result.stderr


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("models:/digitz@champion", "Registered models: digits, tiny"),
        ("models:/digits@prod", "@champion (v1)"),
        ("models:/digits/9", "Its versions: 1"),
    ],
)
def test_unknown_model_lists_what_exists(store: Store, reference: str, expected: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "serve", reference],
        env=store.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert expected in result.stderr


def test_torch_model_on_two_replicas_over_http_and_grpc_that_drain_together(
    servers: dict[str, Server],
) -> None:
    url = servers["tiny"].url
    body = {
        "inputs": [
            {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [0.0] * 4 + [1.0] * 4}
        ]
    }
    outputs = {
        tuple(httpx.post(f"{url}/v2/models/tiny/infer", json=body).json()["outputs"][0]["data"])
        for _ in range(8)
    }
    assert len(outputs) == 1  # every replica serves the same model
    assert len(next(iter(outputs))) == 4
    # The replicas share the gRPC port too: a connection of its own for each client.
    rows = np.array([[0.0] * 4, [1.0] * 4], dtype=np.float32)
    for _ in range(8):
        client = grpcclient.InferenceServerClient(
            servers["tiny"].grpc_address, channel_args=[("grpc.use_local_subchannel_pool", 1)]
        )
        tensor = grpcclient.InferInput("input-0", [2, 4], "FP32")
        tensor.set_data_from_numpy(rows)
        by_grpc = client.infer("tiny", [tensor]).as_numpy("output-0")
        np.testing.assert_allclose(by_grpc.reshape(-1), next(iter(outputs)), rtol=1e-6)
        client.close()
    # Replicas share one port and report metrics together.
    metrics = httpx.get(f"{url}/metrics").text
    assert (
        _metric(
            metrics,
            'mlyard_serving_requests_total{method="POST",'
            'route="/v2/models/{name}/infer",status="200"}',
        )
        == 8
    )
    assert (
        _metric(
            metrics,
            'mlyard_serving_requests_total{method="GRPC",'
            'route="/inference.GRPCInferenceService/ModelInfer",status="OK"}',
        )
        == 8
    )
    # SIGTERM to the supervisor drains every replica; all exit 0.
    server = servers["tiny"]
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0, server.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/health/live")


def test_sigterm_drains_in_flight_requests_and_exits_zero(servers: dict[str, Server]) -> None:
    server = servers["slow"]

    async def request_then_terminate() -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            in_flight = asyncio.ensure_future(
                client.post("/predict", json={"instances": _digit_rows(1)})
            )
            await asyncio.sleep(0.5)  # the request now waits 1.5 s in the batching queue
            server.process.send_signal(signal.SIGTERM)
            return await in_flight

    response = asyncio.run(request_then_terminate())
    assert response.status_code == 200
    assert response.json() == {"predictions": [0]}
    assert server.process.wait(timeout=30) == 0, server.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")


def _metric(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert match is not None, f"{series} not in metrics"
    return float(match.group(1))
