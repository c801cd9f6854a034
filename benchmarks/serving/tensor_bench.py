"""An image-sized tensor (1x3x224x224 FP32) sent to one `mlyard serve` as JSON, binary and gRPC.

The model is what an image classifier's server sees without the classifier's cost: a PyTorch
module returning the mean of each channel (``AdaptiveAvgPool2d(1)`` then ``Flatten``), logged with
its signature. One server serves HTTP and gRPC; the three transports are measured in alternating
rounds (JSON, binary, gRPC, JSON, ...) so that other work on a shared machine slows them alike.
The request bodies are built once, before the clock starts, as a client library would send them:
JSON ``data`` as the flat list of the tensor's float values, binary as the tensor's bytes after a
JSON header (Triton's binary tensor extension), gRPC as a ModelInfer message with
``raw_input_contents``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import numpy as np
from load import LoadResult, run_load, summarize

MODEL_NAME = "channel-means"
SHAPE = (1, 3, 224, 224)
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class Transport:
    label: str
    body: bytes
    headers: dict[str, str]


def build_image_model(experiment: str) -> None:
    """Register the channel-means model in the current MLflow store, with its signature."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    example = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    with torch.inference_mode():
        output = module(torch.from_numpy(example)).numpy()
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pytorch.log_model(
            module,
            name="model",
            signature=infer_signature(example, output),
            registered_model_name=MODEL_NAME,
            pip_requirements=[],  # saves MLflow a process that works them out
            # A pickled module takes any batch size; a pt2 export traced on one image would not.
            serialization_format="pickle",
        )


def transports() -> tuple[list[Transport], bytes, np.ndarray]:
    """The HTTP bodies (JSON, binary), the serialized gRPC request, and the expected output."""
    from mlyard.serving.grpc_v2 import inference_pb2 as pb

    image = np.random.default_rng(1).random(SHAPE, dtype=np.float32)
    expected = image.mean(axis=(2, 3))
    tensor = {"name": "input-0", "shape": list(SHAPE), "datatype": "FP32"}
    as_json = json.dumps({"inputs": [{**tensor, "data": image.reshape(-1).tolist()}]}).encode()
    header = json.dumps(
        {"inputs": [{**tensor, "parameters": {"binary_data_size": image.nbytes}}]}
    ).encode()
    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="input-0", datatype="FP32", shape=list(SHAPE))
    request.raw_input_contents.append(image.tobytes())
    http = [
        Transport("JSON (v2 `data`)", as_json, {}),
        Transport(
            "binary tensor extension (HTTP)",
            header + image.tobytes(),
            {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        ),
    ]
    return http, request.SerializeToString(), expected


def check_answers(
    port: int, grpc_port: int, http: list[Transport], grpc_request: bytes, expected: np.ndarray
) -> None:
    """Each transport gets the right answer before anything is timed."""
    import httpx

    from mlyard.serving.grpc_v2 import inference_pb2 as pb

    for transport in http:
        response = httpx.post(
            f"http://127.0.0.1:{port}{INFER_PATH}",
            content=transport.body,
            headers=transport.headers,
            timeout=30,
        )
        response.raise_for_status()
        data = response.json()["outputs"][0]["data"]
        np.testing.assert_allclose(np.asarray(data).reshape(expected.shape), expected, rtol=1e-5)

    async def one() -> bytes:
        async with _channel(grpc_port) as channel:
            call = channel.unary_unary(MODEL_INFER)
            answer: bytes = await call(grpc_request, timeout=30)
            return answer

    reply = pb.ModelInferResponse.FromString(asyncio.run(one()))
    got = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def measure_transports(
    port: int, grpc_port: int, *, concurrency: int, seconds: float, rounds: int
) -> list[tuple[str, LoadResult]]:
    """Best round of each transport, rounds alternating between them."""
    http, grpc_request, expected = transports()
    check_answers(port, grpc_port, http, grpc_request, expected)
    best: dict[str, LoadResult] = {}
    labels = [t.label for t in http] + ["gRPC ModelInfer (`raw_input_contents`)"]
    for _ in range(rounds):
        results = [
            run_load(
                "127.0.0.1",
                port,
                INFER_PATH,
                t.body,
                concurrency=concurrency,
                seconds=seconds,
                headers=t.headers,
            )
            for t in http
        ]
        results.append(
            run_grpc_load(grpc_port, grpc_request, concurrency=concurrency, seconds=seconds)
        )
        for label, result in zip(labels, results, strict=True):
            if label not in best or result.requests_per_second > best[label].requests_per_second:
                best[label] = result
    return [(label, best[label]) for label in labels]


def run_grpc_load(
    port: int, request: bytes, *, concurrency: int, seconds: float, warmup_seconds: float = 2.0
) -> LoadResult:
    """Closed loop over ``concurrency`` channels, each sending one ModelInfer at a time.

    The request is serialized once and sent as bytes (no serializer), so the client's cost is
    the gRPC call itself, as for the hand-rolled HTTP load.
    """

    async def run() -> LoadResult:
        import grpc

        latencies: list[float] = []
        errors: list[int] = []
        start = time.perf_counter()
        measure_from = start + warmup_seconds
        deadline = measure_from + seconds

        async def connection() -> None:
            async with _channel(port) as channel:
                call = channel.unary_unary(MODEL_INFER)
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    try:
                        await call(request, timeout=30)
                        ok = True
                    except grpc.aio.AioRpcError:
                        ok = False
                    if started >= measure_from:
                        if ok:
                            latencies.append(time.perf_counter() - started)
                        else:
                            errors.append(0)

        await asyncio.gather(*(connection() for _ in range(concurrency)))
        return summarize(latencies, errors, seconds)

    return asyncio.run(run())


def _channel(port: int):  # type: ignore[no-untyped-def]
    import grpc

    # One TCP connection per channel, like one keep-alive connection per HTTP client.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[("grpc.max_receive_message_length", -1), ("grpc.use_local_subchannel_pool", 1)],
    )


def server_command(python: str, launcher: str, port: int, grpc_port: int) -> list[str]:
    """`mlyard serve` for the model on both ports, batching as by default."""
    return [
        python,
        "-c",
        launcher,
        "serve",
        f"models:/{MODEL_NAME}/1",
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
    ]
