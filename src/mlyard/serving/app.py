"""The FastAPI app of the model server: Open Inference Protocol v2, ``/predict`` and ``/metrics``.

``create_app`` wires one loaded model to a dynamic batcher and wraps the routes in three ASGI
layers (outermost first): request metrics, bearer-token auth, request body limit. The model is
warmed up in the background after start; ``/v2/health/ready`` says ready only afterwards. v2
infer takes JSON or the binary tensor extension (``binary_tensors.py``) and answers in kind. With
``grpc_port`` set, the lifespan also runs the v2 gRPC service on the same batcher.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI, Request, Response
from pydantic import ValidationError
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlyard.serving.auth import BearerTokenMiddleware
from mlyard.serving.batching import BatchingConfig, DynamicBatcher, ModelCallError
from mlyard.serving.binary_tensors import HEADER_LENGTH_HEADER, split_binary_body
from mlyard.serving.inference import (
    arrays_to_predictions,
    predict_request_to_arrays,
    v2_request_to_arrays,
    v2_response_body,
)
from mlyard.serving.metrics import ServerMetrics
from mlyard.serving.model_loading import ServableModel
from mlyard.serving.protocol_v2 import InferenceRequest, PredictRequest
from mlyard.serving.request_limits import BodySizeLimitMiddleware
from mlyard.serving.tensors import TensorError

logger = logging.getLogger(__name__)
_Body = TypeVar("_Body", InferenceRequest, PredictRequest)

SERVER_NAME = "mlyard"
#: Protocol extensions named in the server metadata (HTTP and gRPC).
EXTENSIONS = ("binary_tensor_data",)
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
# Distinct request paths remembered with their route template (paths repeat: few models).
_ROUTE_CACHE_SIZE = 1024


@dataclass(frozen=True)
class AppOptions:
    """How the app treats requests; the CLI builds it from its flags."""

    batching: BatchingConfig = field(default_factory=BatchingConfig)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    token: str | None = None
    #: Set when this app is one of several replicas: ready means every replica is ready.
    replica_group: ReplicaGroup | None = None
    #: Where to serve the v2 gRPC service too (``grpc_server.py``); None serves HTTP only.
    grpc_port: int | None = None
    grpc_host: str = "127.0.0.1"
    #: How long in-flight gRPC calls may take to finish at shutdown.
    drain_seconds: float = 30.0


class ReplicaGroup(Protocol):
    """Readiness shared by the replicas of one server."""

    def mark_ready(self) -> None:
        """Record that this replica finished warming up."""

    def all_ready(self) -> bool:
        """Whether every replica finished warming up."""


class _Readiness:
    def __init__(self, group: ReplicaGroup | None) -> None:
        self.ready = False
        self.problem: str | None = "warming up"
        self.group = group

    def mark_ready(self) -> None:
        self.ready, self.problem = True, None
        if self.group is not None:
            self.group.mark_ready()

    def server_ready(self) -> bool:
        return self.ready and (self.group is None or self.group.all_ready())


class HttpError(Exception):
    """An error answered with ``status`` and a v2 error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(model: ServableModel, options: AppOptions) -> ASGIApp:
    """The ASGI app serving ``model``; run it with uvicorn."""
    metrics = ServerMetrics(model.name)
    batcher = DynamicBatcher(model.predict, options.batching, observer=metrics)
    readiness = _Readiness(options.replica_group)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        grpc_server = None
        if options.grpc_port is not None:
            # Imported only when asked for: see grpc_server.py on tritonclient.grpc.
            from mlyard.serving.grpc_server import ServingState, start_grpc_server

            state = ServingState(model, batcher, readiness, metrics, SERVER_NAME, EXTENSIONS)
            grpc_server = await start_grpc_server(
                state,
                options.grpc_host,
                options.grpc_port,
                max_message_bytes=options.max_request_bytes,
                token=options.token,
            )
        warmup = asyncio.create_task(_warm_up(model, batcher, readiness, metrics))
        yield
        warmup.cancel()
        if grpc_server is not None:
            # HTTP has drained by now; gRPC calls in flight finish before the batcher stops.
            await grpc_server.stop(options.drain_seconds)
        readiness.ready = False
        await batcher.stop()

    api = FastAPI(
        title=f"mlyard model server: {model.name}", lifespan=lifespan, docs_url=None, redoc_url=None
    )

    @api.exception_handler(HttpError)
    async def _http_error(_: Request, exc: HttpError) -> Response:
        return _json({"error": exc.message}, exc.status)

    @api.exception_handler(TensorError)
    async def _tensor_error(_: Request, exc: TensorError) -> Response:
        return _json({"error": str(exc)}, 400)

    @api.exception_handler(ModelCallError)
    async def _model_error(_: Request, exc: ModelCallError) -> Response:
        return _json({"error": f"the model failed on this input: {exc}"}, 500)

    @api.get("/v2/health/live")
    async def server_live() -> Response:
        return _json({"live": True})

    @api.get("/v2/health/ready")
    async def server_ready() -> Response:
        if readiness.ready and not readiness.server_ready():
            return _json({"ready": False, "error": "other replicas are still warming up"}, 503)
        return _readiness_response(readiness)

    @api.get("/v2")
    async def server_metadata() -> Response:
        return _json(
            {
                "name": SERVER_NAME,
                "version": package_version("mlyard"),
                "extensions": list(EXTENSIONS),
            }
        )

    @api.get("/v2/models/{name}")
    @api.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> Response:
        _check_model(model, name, version)
        return _json(
            {
                "name": model.name,
                "versions": [model.version],
                "platform": model.platform,
                "inputs": [spec.metadata() for spec in model.inputs],
                "outputs": [spec.metadata() for spec in model.outputs],
            }
        )

    @api.get("/v2/models/{name}/ready")
    @api.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        _check_model(model, name, version)
        return _readiness_response(readiness)

    # The two hot routes are plain Starlette routes: they parse the raw body themselves, so
    # FastAPI's per-request dependency solving would only add latency.
    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        _check_model(model, name, request.path_params.get("version"))
        _check_ready(readiness)
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise HttpError(
                415,
                f"request bodies compressed with {encoding!r} are not supported; send the "
                "request uncompressed",
            )
        raw = await request.body()
        declared = request.headers.get(HEADER_LENGTH_HEADER)
        binary: memoryview | None = None
        if declared is not None:
            header, binary = split_binary_body(raw, declared)
            body = _parse(InferenceRequest, header)
        else:
            body = _parse(InferenceRequest, raw)
        outputs = await batcher.submit(v2_request_to_arrays(model, body, binary))
        content, header_length = v2_response_body(model, body, outputs)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH_HEADER: str(header_length)},
        )

    async def predict(request: Request) -> Response:
        _check_ready(readiness)
        body = _parse(PredictRequest, await request.body())
        outputs = await batcher.submit(predict_request_to_arrays(model, body))
        return _json({"predictions": arrays_to_predictions(outputs)})

    # First in the route table: the router tries routes in order, and these are the busy ones.
    hot_routes = [
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
    ]
    api.router.routes[:0] = hot_routes

    @api.get("/metrics")
    async def scrape() -> Response:
        content, content_type = metrics.exposition()
        return Response(content, media_type=content_type)

    app: ASGIApp = BodySizeLimitMiddleware(api, options.max_request_bytes)
    if options.token is not None:
        app = BearerTokenMiddleware(app, options.token)
    return RequestMetricsMiddleware(app, api, metrics)


class RequestMetricsMiddleware:
    """Counts every response by route template and status, and times it."""

    def __init__(self, app: ASGIApp, api: FastAPI, metrics: ServerMetrics) -> None:
        self.app = app
        self._api = api
        self._metrics = metrics
        self._templates: dict[tuple[str, str], str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._metrics.observe_request(
                    self._route_of(scope), scope["method"], status, time.perf_counter() - started
                )

        await self.app(scope, receive, send_and_observe)

    def _route_of(self, scope: Scope) -> str:
        # Route templates, not raw paths, keep label cardinality bounded.
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return str(route.path)
        key = (scope["method"], scope["path"])
        cached = self._templates.get(key)
        if cached is not None:
            return cached
        template = "unmatched"
        for candidate in self._api.router.routes:
            match, _ = candidate.matches({**scope, "type": "http"})
            if match == Match.FULL and hasattr(candidate, "path"):
                template = str(candidate.path)
                break
        if len(self._templates) < _ROUTE_CACHE_SIZE:
            self._templates[key] = template
        return template


async def _warm_up(
    model: ServableModel, batcher: DynamicBatcher, readiness: _Readiness, metrics: ServerMetrics
) -> None:
    if model.warmup_input is not None:
        try:
            await batcher.run_alone(model.warmup_input)
        except Exception as exc:  # the server stays up and says why it is not ready
            readiness.problem = f"warm-up failed: {exc}"
            logger.error("model %s: %s", model.name, readiness.problem)
            return
    readiness.mark_ready()
    metrics.ready.labels(model.name).set(1)
    logger.info("model %s version %s is ready", model.name, model.version)


def _parse(kind: type[_Body], raw: bytes) -> _Body:
    try:
        return kind.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise HttpError(400, f"invalid request body at {where}: {first['msg']}") from exc


def _check_model(model: ServableModel, name: str, version: str | None) -> None:
    if name != model.name:
        raise HttpError(404, f"unknown model {name!r}; this server serves {model.name!r}")
    if version is not None and version != model.version:
        raise HttpError(
            404, f"model {name!r} has no version {version!r} here; it serves {model.version!r}"
        )


def _check_ready(readiness: _Readiness) -> None:
    if not readiness.ready:
        raise HttpError(503, f"the model is not ready: {readiness.problem}")


def _readiness_response(readiness: _Readiness) -> Response:
    if readiness.ready:
        return _json({"ready": True})
    return _json({"ready": False, "error": readiness.problem}, 503)


def _json(content: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(content, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
    )
