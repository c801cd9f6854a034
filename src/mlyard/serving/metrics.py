"""Prometheus metrics of the model server: requests, errors, latency, batch sizes, queue depth.

With several replicas the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` before they start, and
``/metrics`` on any replica then reports the sum over all of them (prometheus-client's
multiprocess mode), so a scrape that lands on one replica still sees the whole server.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
#: gRPC status codes counted as the server's fault (the others are the client's).
_SERVER_CODES = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE", "UNIMPLEMENTED"})


class ServerMetrics:
    """The server's metric families, registered in a registry of their own."""

    def __init__(self, model_name: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mlyard_serving_requests",
            "Requests by route (HTTP) or method (gRPC, method label GRPC) and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "mlyard_serving_errors",
            "Requests that ended in an error, by route and kind (client or server).",
            ["route", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlyard_serving_request_duration_seconds",
            "Time from request received to response sent, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "mlyard_serving_batch_size",
            "Rows per model call after dynamic batching.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "mlyard_serving_batch_requests",
            "Requests merged into one model call.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mlyard_serving_queue_depth",
            "Requests waiting for the model.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.ready = Gauge(
            "mlyard_serving_ready",
            "1 when the model is loaded and warmed up.",
            ["model"],
            registry=self.registry,
            multiprocess_mode="livemin",
        )
        self._request_children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        self._batch_rows = self.batch_rows.labels(model_name)
        self._batch_requests = self.batch_requests.labels(model_name)
        self._queue_depth = self.queue_depth.labels(model_name)

    def observe_batch(self, rows: int, requests: int) -> None:
        """Record one model call of ``rows`` rows merged from ``requests`` requests."""
        self._batch_rows.observe(rows)
        self._batch_requests.observe(requests)

    def set_queue_depth(self, depth: int) -> None:
        """Record how many requests wait for the model now."""
        self._queue_depth.set(depth)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Record one finished HTTP request."""
        kind = None if status < 400 else "client" if status < 500 else "server"
        self._observe(route, method, str(status), kind, seconds)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        """Record one finished gRPC call: ``method`` is its full path, ``code`` its status name."""
        kind = None if code == "OK" else "server" if code in _SERVER_CODES else "client"
        self._observe(method, "GRPC", code, kind, seconds)

    def _observe(
        self, route: str, method: str, status: str, kind: str | None, seconds: float
    ) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:  # labels() costs a lock and a dict lookup; do it once per series
            children = (
                self.requests.labels(route, method, status),
                self.latency.labels(route),
                self.errors.labels(route, kind) if kind is not None else None,
            )
            self._request_children[key] = children
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text to answer a scrape with, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry: CollectorRegistry = self.registry
        if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
