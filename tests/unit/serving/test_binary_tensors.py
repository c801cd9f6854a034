"""The binary tensor data extension: raw tensor codec, body framing, and the HTTP app using both."""

from __future__ import annotations

import json
import struct
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from mlyard.serving.app import AppOptions, create_app
from mlyard.serving.binary_tensors import array_from_raw, array_to_raw, split_binary_body
from mlyard.serving.model_loading import ServableModel
from mlyard.serving.tensors import V2_TO_NUMPY, TensorError, TensorSpec


@pytest.mark.parametrize("datatype", [d for d in V2_TO_NUMPY if d != "BYTES"])
def test_fixed_size_tensors_round_trip(datatype: str) -> None:
    array = (np.arange(6) % 2).astype(V2_TO_NUMPY[datatype]).reshape(2, 3)
    raw = array_to_raw(array)
    assert len(raw) == array.nbytes
    decoded = array_from_raw("x", datatype, [2, 3], raw)
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_raw_bytes_are_little_endian_row_major() -> None:
    array = np.array([[1, 2], [3, 256]], dtype=">i4")  # big-endian in memory
    assert array_to_raw(array) == struct.pack("<4i", 1, 2, 3, 256)
    assert array_from_raw("x", "INT32", [2, 2], struct.pack("<4i", 1, 2, 3, 256)).tolist() == [
        [1, 2],
        [3, 256],
    ]


def test_bytes_tensors_are_length_prefixed() -> None:
    raw = array_to_raw(np.array(["é", b"\x00\xff", ""], dtype=object))
    assert raw == struct.pack("<I", 2) + "é".encode() + struct.pack("<I", 2) + b"\x00\xff" + (
        struct.pack("<I", 0)
    )
    decoded = array_from_raw("x", "BYTES", [3, 1], raw)
    assert decoded.shape == (3, 1)
    assert decoded.reshape(-1).tolist() == ["é".encode(), b"\x00\xff", b""]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [2, 3], b"\x00" * 20, "carries 20 bytes, but FP32 [2, 3] needs 24"),
        ("FP32", [2, -3], b"", "negative dimension"),
        ("FLOAT", [1], b"\x00" * 4, "datatype 'FLOAT'"),
        ("BOOL", [2], b"\x01\x02", "bytes other than 0 and 1"),
        ("BYTES", [2], struct.pack("<I", 1) + b"a", "ends after 1 of its 2 BYTES elements"),
        ("BYTES", [1], struct.pack("<I", 9) + b"abc", "says 9 bytes, but only 3 are left"),
        ("BYTES", [1], struct.pack("<I", 1) + b"ab", "1 bytes left over"),
    ],
)
def test_raw_tensors_that_do_not_add_up_are_refused(
    datatype: str, shape: list[int], raw: bytes, message: str
) -> None:
    with pytest.raises(TensorError, match=message.replace("[", r"\[").replace("]", r"\]")):
        array_from_raw("x", datatype, shape, raw)


def test_split_binary_body_checks_the_declared_header_length() -> None:
    header, rest = split_binary_body(b'{"a":1}tensor', "7")
    assert (header, bytes(rest)) == (b'{"a":1}', b"tensor")
    with pytest.raises(TensorError, match="the whole body has only 13"):
        split_binary_body(b'{"a":1}tensor', "14")
    with pytest.raises(TensorError, match="must be the length in bytes"):
        split_binary_body(b"{}", "-1")


def _scale(inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    features = inputs["features"]
    return {"total": features.sum(axis=1), "doubled": features * 2}


MODEL = ServableModel(
    name="adder",
    version="1",
    platform="numpy",
    inputs=(TensorSpec("features", "FP32", (-1, 3)),),
    outputs=(TensorSpec("total", "FP32", (-1,)), TensorSpec("doubled", "FP32", (-1, 3))),
    predict=_scale,
    warmup_input={"features": np.zeros((1, 3), dtype=np.float32)},
)
ROWS = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(MODEL, AppOptions(max_request_bytes=4000))) as client:
        deadline = time.monotonic() + 5
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield client


def _binary_request(
    client: TestClient,
    extra: dict[str, Any] | None = None,
    tensor: bytes | None = None,
    declared_size: int | None = None,
    header_length: str | None = None,
) -> Any:
    raw = ROWS.tobytes() if tensor is None else tensor
    size = len(raw) if declared_size is None else declared_size
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": size},
                }
            ],
            **(extra or {}),
        }
    ).encode()
    return client.post(
        "/v2/models/adder/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": header_length or str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )


def _split_response(response: Any) -> tuple[dict[str, Any], bytes]:
    length = int(response.headers["inference-header-content-length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_binary_request_gets_a_json_answer_by_default(client: TestClient) -> None:
    response = _binary_request(client)
    assert response.status_code == 200, response.text
    assert "inference-header-content-length" not in response.headers
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["total"]["data"] == [6.0, 15.0]


def test_binary_outputs_when_the_request_asks(client: TestClient) -> None:
    response = _binary_request(client, {"parameters": {"binary_data_output": True}})
    assert response.status_code == 200, response.text
    header, raw = _split_response(response)
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert [o["name"] for o in header["outputs"]] == ["total", "doubled"]
    assert sizes == [8, 24] and len(raw) == 32
    assert np.frombuffer(raw[:8], "<f4").tolist() == [6.0, 15.0]
    assert np.frombuffer(raw[8:], "<f4").reshape(2, 3).tolist() == (ROWS * 2).tolist()


def test_each_output_may_choose_binary_or_json(client: TestClient) -> None:
    outputs = [
        {"name": "doubled", "parameters": {"binary_data": True}},
        {"name": "total", "parameters": {"binary_data": False}},
    ]
    response = _binary_request(
        client, {"outputs": outputs, "parameters": {"binary_data_output": True}}
    )
    header, raw = _split_response(response)
    doubled, total = header["outputs"]
    assert doubled["parameters"] == {"binary_data_size": 24} and "data" not in doubled
    assert total["data"] == [6.0, 15.0] and "parameters" not in total
    assert len(raw) == 24
    # A JSON request may ask for binary outputs too.
    json_request = {
        "inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}],
        "outputs": [{"name": "total", "parameters": {"binary_data": True}}],
    }
    header, raw = _split_response(client.post("/v2/models/adder/infer", json=json_request))
    assert np.frombuffer(raw, "<f4").tolist() == [3.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tensor": ROWS.tobytes() + b"pad!", "declared_size": 24}, "add up to 24"),
        ({"declared_size": 20}, "carries 20 bytes, but FP32 [2, 3] needs 24"),
        ({"declared_size": 30}, "only 24 bytes of tensor data are left"),
        ({"tensor": ROWS.tobytes()[:20], "declared_size": 20}, "needs 24"),
        ({"header_length": "100000"}, "the whole body has only"),
        ({"header_length": "12"}, "invalid request body"),
        ({"extra": {"parameters": {"binary_data_output": "yes"}}}, "must be true or false"),
        (
            {"extra": {"outputs": [{"name": "total", "parameters": {"classification": 2}}]}},
            "does not support",
        ),
    ],
)
def test_malformed_binary_requests_get_400_and_the_server_stays_up(
    client: TestClient, kwargs: dict[str, Any], message: str
) -> None:
    response = _binary_request(client, **kwargs)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert _binary_request(client).status_code == 200


def test_binary_data_size_needs_the_header_and_excludes_data(client: TestClient) -> None:
    tensor = {"name": "features", "shape": [1, 3], "datatype": "FP32"}
    without_header = {"inputs": [{**tensor, "parameters": {"binary_data_size": 12}}]}
    response = client.post("/v2/models/adder/infer", json=without_header)
    assert response.status_code == 400
    assert "no Inference-Header-Content-Length header" in response.json()["error"]
    both = json.dumps(
        {"inputs": [{**tensor, "data": [1, 2, 3], "parameters": {"binary_data_size": 12}}]}
    ).encode()
    response = client.post(
        "/v2/models/adder/infer",
        content=both + ROWS.tobytes()[:12],
        headers={"Inference-Header-Content-Length": str(len(both))},
    )
    assert response.status_code == 400
    assert "both data and binary_data_size" in response.json()["error"]


def test_binary_bodies_keep_the_request_size_limit(client: TestClient) -> None:
    response = _binary_request(client, tensor=b"\x00" * 5000, declared_size=5000)
    assert response.status_code == 413


def test_compressed_bodies_are_refused_with_a_clear_error(client: TestClient) -> None:
    response = client.post(
        "/v2/models/adder/infer", content=b"\x1f\x8b...", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 415
    assert "send the request uncompressed" in response.json()["error"]
