"""`mlyard serve` as Triton's own clients see it: tritonclient.http and tritonclient.grpc.

Two real servers on registered MLflow models with signatures, both with the gRPC port on: the
digits classifier (sklearn, FP64 [-1, 64] -> INT64 [-1]) behind a token, and a text model
(pyfunc from code, BYTES in, INT64 and BYTES out). Every call goes through the client a Triton or
KServe user already has: metadata first, then a request built from it, as JSON and as binary
tensors over HTTP, and over gRPC. This module must not import mlyard's gRPC code (see
serving/grpc_server.py): tritonclient.grpc registers the same protobuf names.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcclient_aio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.serving_processes import (
    LAUNCHER,
    Server,
    start_server,
    stop_server,
    wait_ready,
)

pytestmark = pytest.mark.integration

TOKEN = "v2-clients-token-" + os.urandom(8).hex()


def _auth() -> dict[str, str]:
    """A fresh dict per call: tritonclient.http adds its own headers to the dict it is given."""
    return {"authorization": f"Bearer {TOKEN}"}


TEXT_MODEL = """
import numpy as np
import mlflow
from mlflow.pyfunc import PythonModel


class TextStats(PythonModel):
    def predict(self, context, model_input, params=None):
        words = [str(w) for w in np.asarray(model_input["text"]).reshape(-1)]
        return {
            "length": np.array([len(w) for w in words], dtype=np.int64),
            "upper": np.array([w.upper() for w in words], dtype=object),
        }


mlflow.models.set_model(TextStats())
"""


def _register_models(directory: Path) -> str:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{directory / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("v2", artifact_location=str(directory / "art"))
    features, labels = load_digits(return_X_y=True)
    classifier = LogisticRegression(max_iter=200).fit(features, labels)
    with mlflow.start_run(experiment_id=experiment):
        mlflow.sklearn.log_model(
            classifier,
            name="model",
            registered_model_name="digits",
            signature=infer_signature(features, classifier.predict(features)),
            pip_requirements=[],  # saves MLflow a process that works them out
        )
    code = directory / "text_model.py"
    code.write_text(TEXT_MODEL)
    words = np.array(["ab", "c"])
    signature = infer_signature(
        {"text": words},
        {"length": np.array([2, 1]), "upper": np.array(["AB", "C"])},
    )
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            signature=signature,
            registered_model_name="texts",
            pip_requirements=[],
        )
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("v2-clients")
    uri = _register_models(directory)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLYARD_")}
    env.update(MLYARD_HOME=str(directory / "home"), MLYARD_TRACKING__URI=uri)
    return directory, env


@pytest.fixture(scope="module")
def servers(store: tuple[Path, dict[str, str]]) -> Iterator[dict[str, Server]]:
    directory, env = store
    started = {
        # A 100 ms queue delay lets an HTTP and a gRPC request sent together share a batch.
        "digits": start_server(
            directory,
            "digits",
            ["models:/digits/1", "--max-queue-delay-ms", "100"],
            {**env, "MLYARD_SERVE_TOKEN": TOKEN},
            grpc=True,
        ),
        "texts": start_server(directory, "texts", ["models:/texts/1"], env, grpc=True),
    }
    try:
        for server in started.values():
            wait_ready(server)
        yield started
    finally:
        for server in started.values():
            stop_server(server)


@pytest.fixture(scope="module")
def digits_http(servers: dict[str, Server]) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(servers["digits"].url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def digits_grpc(servers: dict[str, Server]) -> Iterator[grpcclient.InferenceServerClient]:
    address = servers["digits"].grpc_address
    assert address is not None
    client = grpcclient.InferenceServerClient(address)
    yield client
    client.close()


def _digits(count: int) -> tuple[np.ndarray[Any, Any], list[int]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data[:count], [int(label) for label in data.target[:count]]


def _inputs_from_metadata(
    module: Any, metadata: dict[str, Any], array: np.ndarray[Any, Any], **binary: bool
) -> list[Any]:
    (described,) = metadata["inputs"]
    tensor = module.InferInput(described["name"], list(array.shape), described["datatype"])
    tensor.set_data_from_numpy(array.astype(np.float64), **binary)
    return [tensor]


def test_http_metadata_then_json_and_binary_infer(
    digits_http: httpclient.InferenceServerClient,
) -> None:
    assert digits_http.is_server_live()
    assert digits_http.is_model_ready("digits", headers=_auth())
    assert "binary_tensor_data" in digits_http.get_server_metadata(headers=_auth())["extensions"]
    metadata = digits_http.get_model_metadata("digits", headers=_auth())
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 64]}]
    assert metadata["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    rows, labels = _digits(3)

    as_json = digits_http.infer(
        "digits",
        _inputs_from_metadata(httpclient, metadata, rows, binary_data=False),
        outputs=[httpclient.InferRequestedOutput("output-0", binary_data=False)],
        headers=_auth(),
    )
    assert as_json.as_numpy("output-0").tolist() == labels
    assert "data" in as_json.get_output("output-0")

    # The client's defaults: binary inputs, and binary outputs for a request naming none.
    as_binary = digits_http.infer(
        "digits", _inputs_from_metadata(httpclient, metadata, rows), headers=_auth()
    )
    assert as_binary.as_numpy("output-0").tolist() == labels
    assert as_binary.get_output("output-0")["parameters"] == {"binary_data_size": 3 * 8}
    # A version in the path, and a JSON output asked for on a binary request.
    mixed = digits_http.infer(
        "digits",
        _inputs_from_metadata(httpclient, metadata, rows),
        model_version="1",
        outputs=[httpclient.InferRequestedOutput("output-0", binary_data=False)],
        headers=_auth(),
    )
    assert mixed.get_output("output-0")["data"] == labels


def test_grpc_metadata_then_infer(digits_grpc: grpcclient.InferenceServerClient) -> None:
    assert digits_grpc.is_server_live()
    assert digits_grpc.is_server_ready()
    assert digits_grpc.is_model_ready("digits", headers=_auth())
    server = digits_grpc.get_server_metadata(headers=_auth(), as_json=True)
    assert server["name"] == "mlyard"
    metadata = digits_grpc.get_model_metadata("digits", headers=_auth(), as_json=True)
    assert metadata["platform"] == "sklearn"
    assert metadata["versions"] == ["1"]
    # Protobuf's JSON form writes int64 values as strings.
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": ["-1", "64"]}]
    assert metadata["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": ["-1"]}]
    rows, labels = _digits(4)
    result = digits_grpc.infer(
        "digits",
        _inputs_from_metadata(grpcclient, metadata, rows),
        request_id="req-7",
        headers=_auth(),
    )
    assert result.as_numpy("output-0").tolist() == labels
    response = result.get_response()
    assert response.id == "req-7"
    assert response.model_version == "1"


def test_bytes_tensors_over_http_json_binary_and_grpc(servers: dict[str, Server]) -> None:
    words = np.array(["héllo".encode(), b"ab", b""], dtype=np.object_)
    expected_upper = ["HÉLLO".encode(), b"AB", b""]
    http = httpclient.InferenceServerClient(servers["texts"].url.removeprefix("http://"))
    metadata = http.get_model_metadata("texts")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {
        "length": "INT64",
        "upper": "BYTES",
    }
    for binary in (False, True):
        tensor = httpclient.InferInput("text", [3], "BYTES")
        tensor.set_data_from_numpy(words, binary_data=binary)
        result = http.infer(
            "texts",
            [tensor],
            outputs=[
                httpclient.InferRequestedOutput("length", binary_data=binary),
                httpclient.InferRequestedOutput("upper", binary_data=binary),
            ],
        )
        assert result.as_numpy("length").tolist() == [5, 2, 0]
        upper = result.as_numpy("upper").tolist()
        # JSON carries strings, binary carries bytes; both hold the same text.
        assert [u if isinstance(u, bytes) else u.encode() for u in upper] == expected_upper
    http.close()

    address = servers["texts"].grpc_address
    assert address is not None
    grpc = grpcclient.InferenceServerClient(address)
    tensor = grpcclient.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(words)
    result = grpc.infer("texts", [tensor], outputs=[grpcclient.InferRequestedOutput("upper")])
    assert result.as_numpy("upper").tolist() == expected_upper
    assert result.as_numpy("length") is None  # only the output asked for comes back
    grpc.close()


def test_wrong_shape_and_datatype_get_v2_errors_and_the_server_stays_up(
    digits_http: httpclient.InferenceServerClient,
    digits_grpc: grpcclient.InferenceServerClient,
) -> None:
    rows, labels = _digits(1)
    wrong = [
        (np.zeros((1, 3)), "FP64", "expects [-1, 64]"),
        (np.zeros((1, 64), dtype=np.int32), "INT32", "expects FP64"),
    ]
    for array, datatype, message in wrong:
        for binary in (False, True):
            tensor = httpclient.InferInput("input-0", list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=binary)
            with pytest.raises(InferenceServerException) as http_error:
                digits_http.infer("digits", [tensor], headers=_auth())
            assert http_error.value.status() == "400"
            assert message in http_error.value.message()
        tensor = grpcclient.InferInput("input-0", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as grpc_error:
            digits_grpc.infer("digits", [tensor], headers=_auth())
        assert grpc_error.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert message in grpc_error.value.message()
    good = grpcclient.InferInput("input-0", [1, 64], "FP64")
    good.set_data_from_numpy(rows)
    assert digits_grpc.infer("digits", [good], headers=_auth()).as_numpy("output-0").tolist() == (
        labels
    )
    good_http = httpclient.InferInput("input-0", [1, 64], "FP64")
    good_http.set_data_from_numpy(rows)
    assert digits_http.infer("digits", [good_http], headers=_auth()).as_numpy(
        "output-0"
    ).tolist() == (labels)


def test_unknown_model_is_404_and_not_found(
    digits_http: httpclient.InferenceServerClient,
    digits_grpc: grpcclient.InferenceServerClient,
) -> None:
    rows, _ = _digits(1)
    with pytest.raises(InferenceServerException) as http_error:
        digits_http.get_model_metadata("nope", headers=_auth())
    assert http_error.value.status() == "404"
    for call in (
        lambda: digits_grpc.get_model_metadata("nope", headers=_auth()),
        lambda: digits_grpc.get_model_metadata("digits", model_version="9", headers=_auth()),
        lambda: digits_grpc.infer(
            "nope", _inputs_from_metadata(grpcclient, _DIGITS_METADATA, rows), headers=_auth()
        ),
    ):
        with pytest.raises(InferenceServerException) as grpc_error:
            call()
        assert grpc_error.value.status() == "StatusCode.NOT_FOUND"
        assert "serves" in grpc_error.value.message()


_DIGITS_METADATA = {"inputs": [{"name": "input-0", "datatype": "FP64"}]}


def test_grpc_token_is_checked_on_every_call_but_health(servers: dict[str, Server]) -> None:
    address = servers["digits"].grpc_address
    assert address is not None
    client = grpcclient.InferenceServerClient(address)
    assert client.is_server_live()
    assert client.is_server_ready()
    rows, _ = _digits(1)
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        for call in (
            lambda h=headers: client.get_model_metadata("digits", headers=h),
            lambda h=headers: client.infer(
                "digits", _inputs_from_metadata(grpcclient, _DIGITS_METADATA, rows), headers=h
            ),
        ):
            with pytest.raises(InferenceServerException) as error:
                call()
            assert error.value.status() == "StatusCode.UNAUTHENTICATED"
            assert "bearer token" in error.value.message()
    client.close()


def test_malformed_binary_bodies_get_400(servers: dict[str, Server]) -> None:
    url = f"{servers['digits'].url}/v2/models/digits/infer"
    header = (
        b'{"inputs":[{"name":"input-0","shape":[1,64],"datatype":"FP64",'
        b'"parameters":{"binary_data_size":512}}]}'
    )
    tensor = np.zeros(64).tobytes()
    cases = [
        (str(len(header) + 600), header + tensor, "the whole body has only"),
        (str(len(header)), header + tensor[:-8], "only 504 bytes of tensor data are left"),
        (str(len(header)), header + tensor + b"xx", "add up to 512"),
        ("ten", header + tensor, "Inference-Header-Content-Length header is 'ten'"),
    ]
    for declared, body, message in cases:
        response = httpx.post(
            url,
            content=body,
            headers={**_auth(), "Inference-Header-Content-Length": declared},
        )
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]
    assert httpx.get(f"{servers['digits'].url}/v2/health/ready").status_code == 200


def test_http_and_grpc_share_the_batcher_and_the_metrics(servers: dict[str, Server]) -> None:
    server = servers["digits"]
    address = server.grpc_address
    assert address is not None
    before = httpx.get(f"{server.url}/metrics", headers=_auth()).text
    rows, labels = _digits(2)

    async def both() -> tuple[list[int], list[int]]:
        async with grpcclient_aio.InferenceServerClient(address) as grpc:
            tensor = grpcclient_aio.InferInput("input-0", [1, 64], "FP64")
            tensor.set_data_from_numpy(rows[:1])
            async with httpx.AsyncClient(headers=_auth()) as http:
                body = {
                    "inputs": [
                        {
                            "name": "input-0",
                            "shape": [1, 64],
                            "datatype": "FP64",
                            "data": rows[1].tolist(),
                        }
                    ]
                }
                # Connect both first, so the two requests leave at the same moment.
                assert await grpc.is_server_live()
                assert (await http.get(f"{server.url}/v2/health/live")).status_code == 200
                by_grpc, by_http = await asyncio.gather(
                    grpc.infer("digits", [tensor], headers=_auth()),
                    http.post(f"{server.url}/v2/models/digits/infer", json=body),
                )
        return by_grpc.as_numpy("output-0").tolist(), by_http.json()["outputs"][0]["data"]

    assert asyncio.run(both()) == ([labels[0]], [labels[1]])
    after = httpx.get(f"{server.url}/metrics", headers=_auth()).text
    # One more model call, carrying both requests (the 100 ms queue delay let them meet).
    calls = 'mlyard_serving_batch_requests_count{model="digits"}'
    merged = 'mlyard_serving_batch_requests_sum{model="digits"}'
    assert _metric(after, calls) - _metric(before, calls) == 1
    assert _metric(after, merged) - _metric(before, merged) == 2
    infer_ok = (
        'mlyard_serving_requests_total{method="GRPC",'
        'route="/inference.GRPCInferenceService/ModelInfer",status="OK"}'
    )
    assert _metric(after, infer_ok) - _metric(before, infer_ok) == 1


def _metric(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_a_taken_grpc_port_is_a_clear_error(
    store: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    # A home of its own: the running digits server holds the service name in the shared one.
    env = {**store[1], "MLYARD_HOME": str(tmp_path / "home")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = ["serve", "models:/digits/1", "--port", "0", "--grpc-port", str(port)]
        result = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *serve],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert f"Could not bind 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
