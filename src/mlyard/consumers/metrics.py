"""Prometheus metrics of a consumer worker (served on 127.0.0.1 with --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES_IN = Counter("mlyard_consumer_messages_in_total", "Messages received.")
MESSAGES_OUT = Counter("mlyard_consumer_results_out_total", "Results published.")
DEAD_LETTERS = Counter(
    "mlyard_consumer_dead_letters_total", "Messages sent to the dead-letter destination.", ["why"]
)
BATCH_SIZE = Histogram(
    "mlyard_consumer_batch_size", "Inputs per model call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
STAGE_SECONDS = Histogram("mlyard_consumer_stage_seconds", "Time per stage of a batch.", ["stage"])
LAG = Gauge("mlyard_consumer_lag", "Messages waiting for the consumer group.")
OVERDUE_BATCHES = Counter(
    "mlyard_consumer_overdue_batches_total",
    "Batches that took longer than the source's visibility: their messages may have been "
    "delivered again to another worker.",
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose the metrics on host:port (loopback unless told; a pod binds its own IP)."""
    start_http_server(port, addr=host)
