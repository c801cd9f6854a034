"""The Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService`` beside HTTP.

The HTTP app starts it in its lifespan on a port of its own (``mlyard serve --grpc-port``), on the
same event loop, with the same batcher, readiness, Prometheus metrics and token: a ModelInfer call
and an HTTP infer request can ride in one model call. Errors map to status codes as the protocol
expects: a tensor that does not fit the model is INVALID_ARGUMENT, another model NOT_FOUND, a
missing or wrong token UNAUTHENTICATED, a model still warming up UNAVAILABLE, a model that raised
INTERNAL; the server stays up. Tensors come in ``raw_input_contents`` (as Triton's clients send
them) or in the typed ``contents``; outputs always go back in ``raw_output_contents``.

Triton's ``tritonclient.grpc`` registers the same protocol message names (``inference.*``) in
protobuf's default descriptor pool, so it cannot be imported into a process that imports this
module (protobuf refuses the duplicate symbols): test the server from another process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version as package_version
from typing import Any, Protocol, TypeVar

import grpc
import numpy as np
from grpc import aio

from mlyard.errors import ResourceError
from mlyard.serving.auth import OPEN_RPCS, authorization_matches, expected_authorization
from mlyard.serving.batching import DynamicBatcher, ModelCallError
from mlyard.serving.binary_tensors import array_from_raw, array_to_raw, element_count
from mlyard.serving.grpc_v2 import inference_pb2 as pb
from mlyard.serving.grpc_v2.inference_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)
from mlyard.serving.inference import InputCollector, select_outputs
from mlyard.serving.metrics import ServerMetrics
from mlyard.serving.model_loading import NamedArrays, ServableModel
from mlyard.serving.tensors import V2_TO_NUMPY, TensorError, TensorSpec, v2_datatype_of

logger = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"
_Response = TypeVar("_Response")
Context = aio.ServicerContext[Any, Any]

#: The typed field of ``InferTensorContents`` holding each datatype (FP16 has none).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class Readiness(Protocol):
    """What the HTTP app knows about being ready, read by the gRPC health calls."""

    ready: bool
    problem: str | None

    def server_ready(self) -> bool:
        """Whether this replica and every other one finished warming up."""


@dataclass(frozen=True)
class ServingState:
    """The pieces the gRPC service shares with the HTTP app."""

    model: ServableModel
    batcher: DynamicBatcher
    readiness: Readiness
    metrics: ServerMetrics
    server_name: str
    extensions: tuple[str, ...]


class RpcError(Exception):
    """A call answered with ``code`` and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def start_grpc_server(
    state: ServingState, host: str, port: int, *, max_message_bytes: int, token: str | None
) -> aio.Server:
    """Bind ``host:port`` and start serving; the caller stops it (``stop(grace)``) at shutdown."""
    interceptors = [_TokenInterceptor(token, state.metrics)] if token is not None else []
    server = aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            # Replicas share the port, as they share the HTTP one.
            ("grpc.so_reuseport", 1),
        ],
    )
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)  # type: ignore[no-untyped-call]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ResourceError(
            f"Could not bind the gRPC port {address}.",
            hint="Pick another --grpc-port, or stop what is listening there.",
        )
    await server.start()
    return server


class InferenceServicer(GRPCInferenceServiceServicer):
    """The v2 RPCs over one served model."""

    def __init__(self, state: ServingState) -> None:
        self._state = state
        self._model = state.model

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> Any:  # noqa: N802
        """Always live while the process answers."""
        return await self._observed(
            "ServerLive", context, _constant(pb.ServerLiveResponse(live=True))
        )

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> Any:  # noqa: N802
        """Ready once every replica warmed up its model."""

        async def answer() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self._state.readiness.server_ready())

        return await self._observed("ServerReady", context, answer)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> Any:  # noqa: N802
        """Ready once this replica warmed up the model; NOT_FOUND for another model."""

        async def answer() -> pb.ModelReadyResponse:
            self._check_model(request.name, request.version)
            return pb.ModelReadyResponse(ready=self._state.readiness.ready)

        return await self._observed("ModelReady", context, answer)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Context) -> Any:  # noqa: N802
        """Server name, version and protocol extensions, as over HTTP."""
        response = pb.ServerMetadataResponse(
            name=self._state.server_name,
            version=package_version("mlyard"),
            extensions=list(self._state.extensions),
        )
        return await self._observed("ServerMetadata", context, _constant(response))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> Any:  # noqa: N802
        """The model's inputs and outputs: names, datatypes, shapes (-1 = variable)."""

        async def answer() -> pb.ModelMetadataResponse:
            self._check_model(request.name, request.version)
            return pb.ModelMetadataResponse(
                name=self._model.name,
                versions=[self._model.version],
                platform=self._model.platform,
                inputs=[_tensor_metadata(spec) for spec in self._model.inputs],
                outputs=[_tensor_metadata(spec) for spec in self._model.outputs],
            )

        return await self._observed("ModelMetadata", context, answer)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> Any:  # noqa: N802
        """Run the model through the shared batcher; outputs in ``raw_output_contents``."""

        async def answer() -> pb.ModelInferResponse:
            self._check_model(request.model_name, request.model_version)
            if not self._state.readiness.ready:
                raise RpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the model is not ready: {self._state.readiness.problem}",
                )
            arrays = infer_request_to_arrays(self._model, request)
            outputs = await self._state.batcher.submit(arrays)
            return infer_response(self._model, request, outputs)

        return await self._observed("ModelInfer", context, answer)

    def _check_model(self, name: str, version: str) -> None:
        if name != self._model.name:
            raise RpcError(
                grpc.StatusCode.NOT_FOUND,
                f"unknown model {name!r}; this server serves {self._model.name!r}",
            )
        if version and version != self._model.version:
            raise RpcError(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} has no version {version!r} here; it serves "
                f"{self._model.version!r}",
            )

    async def _observed(
        self, method: str, context: Context, answer: Callable[[], Awaitable[_Response]]
    ) -> _Response:
        """Run ``answer``, turn mlyard's errors into status codes, and count the call."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        message = ""
        try:
            return await answer()
        except RpcError as exc:
            code, message = exc.code, exc.message
        except TensorError as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except ModelCallError as exc:
            code, message = grpc.StatusCode.INTERNAL, f"the model failed on this input: {exc}"
        except asyncio.CancelledError:  # the client went away
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:  # a bug here: answer it, keep serving, log the traceback
            logger.exception("gRPC %s failed", method)
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {exc!r}"
        finally:
            self._state.metrics.observe_rpc(
                f"/{SERVICE}/{method}", code.name, time.perf_counter() - started
            )
        return await context.abort(code, message)


def infer_request_to_arrays(model: ServableModel, request: pb.ModelInferRequest) -> NamedArrays:
    """The named arrays of a ModelInfer request, checked against the model like HTTP requests."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise TensorError(
            f"the request has {len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
            "send one per input, in the order of the inputs"
        )
    collector = InputCollector(model)
    for index, tensor in enumerate(request.inputs):
        collector.expect(tensor.name, tensor.datatype)
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise TensorError(
                    f"input {tensor.name!r} has contents although the request sends "
                    "raw_input_contents; use one or the other"
                )
            array = array_from_raw(tensor.name, tensor.datatype, shape, raw[index])
        else:
            array = _array_from_contents(tensor.name, tensor.datatype, shape, tensor.contents)
        collector.add(tensor.name, array)
    return collector.arrays()


def infer_response(
    model: ServableModel, request: pb.ModelInferRequest, outputs: NamedArrays
) -> pb.ModelInferResponse:
    """The ModelInfer response: the requested outputs (all when none named), raw contents."""
    for wanted in request.outputs:
        if "classification" in wanted.parameters:
            raise TensorError(
                f"output {wanted.name!r} asks for classification, which this server does not "
                "support; ask for the output itself"
            )
    requested = [wanted.name for wanted in request.outputs] or None
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request.id
    )
    for name, array in select_outputs(outputs, requested).items():
        response.outputs.add(name=name, datatype=v2_datatype_of(array.dtype), shape=array.shape)
        response.raw_output_contents.append(array_to_raw(array))
    return response


def _array_from_contents(
    name: str, datatype: str, shape: list[int], contents: pb.InferTensorContents
) -> np.ndarray[Any, Any]:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        if datatype in V2_TO_NUMPY:  # FP16: no typed field in the protocol
            raise TensorError(f"input {name!r} is {datatype}: send it in raw_input_contents")
        raise TensorError(
            f"input {name!r} has datatype {datatype!r}; use one of {', '.join(V2_TO_NUMPY)}"
        )
    values = getattr(contents, field)
    count = element_count(name, shape)
    if len(values) != count:
        raise TensorError(
            f"input {name!r} has {len(values)} elements in contents.{field}, but shape "
            f"{shape} needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
    else:
        array = np.asarray(values, dtype=V2_TO_NUMPY[datatype])
    return array.reshape(tuple(shape))


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    # The gRPC message has no parameters: an unknown shape shows as [-1] (and HTTP says more).
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=list(spec.shape)
    )


def _constant(response: _Response) -> Callable[[], Awaitable[_Response]]:
    async def answer() -> _Response:
        return response

    return answer


class _TokenInterceptor(aio.ServerInterceptor):
    """Refuses every call but the health ones unless it carries the bearer token."""

    def __init__(self, token: str, metrics: ServerMetrics) -> None:
        self._expected = expected_authorization(token)
        self._metrics = metrics

        async def deny(request: Any, context: Context) -> None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token; send the metadata 'authorization: Bearer <token>'",
            )

        self._deny: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        if method in OPEN_RPCS:
            return await continuation(handler_call_details)
        presented: bytes = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value.encode() if isinstance(value, str) else value
                break
        if authorization_matches(presented, self._expected):
            return await continuation(handler_call_details)
        self._metrics.observe_rpc(method, "UNAUTHENTICATED", 0.0)
        return self._deny
