"""The worker's Prometheus metrics, as scraped from --metrics-port."""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

import httpx

from mlyard.consumers.decoders import make_decoder
from mlyard.consumers.fetch import ObjectFetcher
from mlyard.consumers.metrics import serve_metrics
from mlyard.consumers.urls import open_sink, open_source
from mlyard.consumers.worker import ConsumerWorker, WorkerOptions
from mlyard.settings import load_settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} is not exported"
    return float(match.group(1))


def test_counters_stage_latencies_and_lag_are_exported(tmp_path: Path) -> None:
    queue = f"sqlite:///{tmp_path / 'q.db'}"
    port = _free_port()
    serve_metrics(port)
    url = f"http://127.0.0.1:{port}/metrics"
    before = httpx.get(url).text
    open_sink(f"{queue}?topic=in").publish(
        [json.dumps({"objects": ["missing.npy"]}).encode(), b"not json"]
    )
    worker = ConsumerWorker(
        source=open_source(f"{queue}?topic=in", "w"),
        sink=open_sink(f"{queue}?topic=out"),
        dead_letters=open_sink(f"{queue}?topic=in.dead"),
        fetcher=ObjectFetcher(load_settings()),
        decode=make_decoder("npy"),
        model_name="noop",
        predict=lambda batch: [0] * len(batch),
        options=WorkerOptions(receive_timeout=0.2),
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    stop.wait(1.0)
    stop.set()
    thread.join(timeout=10)
    after = httpx.get(url).text
    received = "mlyard_consumer_messages_in_total"
    assert _sample(after, received) - _sample(before, received) == 2
    assert 'mlyard_consumer_dead_letters_total{why="malformed message"}' in after
    assert 'mlyard_consumer_dead_letters_total{why="missing object"}' in after
    assert 'mlyard_consumer_stage_seconds_count{stage="fetch"}' in after
    assert _sample(after, "mlyard_consumer_lag") == 0
