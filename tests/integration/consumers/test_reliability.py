"""10,000 messages through three `mlyard consume` processes that are SIGKILLed at random
moments: every message gets a result, and duplicates stay within what at-least-once allows
(at most the batch in flight of each killed process). And a worker whose broker goes away
mid-run: it backs off, carries on when the broker is back, and loses nothing."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.consumers.decoders import make_decoder
from mlyard.consumers.fetch import ObjectFetcher
from mlyard.consumers.urls import open_sink, open_source
from mlyard.consumers.worker import ConsumerWorker, WorkerOptions
from mlyard.settings import load_settings
from tests.integration.consumers.test_brokers import closed_port
from tests.servicekit import start_service, stop_service

pytestmark = pytest.mark.integration
MESSAGES = 10_000
BATCH = 64
KILLS = 5


def _consumer(queue: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlyard.cli",
            "consume",
            "--source",
            f"{queue}?topic=in&visibility=2",
            "--sink",
            f"{queue}?topic=out",
            "--model",
            "noop",
            "--decoder",
            "tests.integration.consumers.slow_decoder:decode",
            "--batch-size",
            str(BATCH),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
    )


def test_every_message_gets_a_result_despite_sigkills(tmp_path: Path) -> None:
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    store = ArtifactStore.from_settings(load_settings())
    buffer = io.BytesIO()
    np.save(buffer, np.arange(4))
    keys = [
        store.write_key(f"objects/{i}.npy", buffer.getvalue()) and f"objects/{i}.npy"
        for i in range(50)
    ]
    open_sink(f"{queue}?topic=in").publish(
        [json.dumps({"id": str(i), "objects": [keys[i % 50]]}).encode() for i in range(MESSAGES)]
    )
    rng = random.Random(7)
    consumers = [_consumer(queue) for _ in range(3)]
    source = open_source(f"{queue}?topic=in", "observer")
    kills = 0
    deadline = time.monotonic() + 300
    try:
        while (source.lag() or 0) > 0:
            assert time.monotonic() < deadline, "the consumers did not finish in time"
            time.sleep(rng.uniform(0.3, 1.2))
            if kills < KILLS and (source.lag() or 0) > 0:
                victim = rng.randrange(len(consumers))
                consumers[victim].send_signal(signal.SIGKILL)
                consumers[victim].wait()
                consumers[victim] = _consumer(queue)
                kills += 1
    finally:
        for consumer in consumers:
            consumer.send_signal(signal.SIGTERM)
        for consumer in consumers:
            assert consumer.wait(timeout=60) == 0, consumer.stderr.read() if consumer.stderr else ""

    results = open_source(f"{queue}?topic=out", "reader")
    seen: Counter[str] = Counter()
    while batch := results.receive(5000, 0.2):
        seen.update(json.loads(d.payload)["data"]["id"] for d in batch)
        results.acknowledge(batch)
    assert kills == KILLS
    assert set(seen) == {str(i) for i in range(MESSAGES)}
    duplicates = sum(seen.values()) - MESSAGES
    assert duplicates <= KILLS * BATCH


@pytest.mark.brokers
def test_a_worker_rides_out_a_broker_restart_without_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    count = 600
    # NATS JetStream keeps its streams on disk (the Redis script runs without persistence).
    monkeypatch.setenv("NATS_PORT", str(closed_port()))  # the same address after the restart
    state = tmp_path / "nats"
    env = start_service("nats", state)
    base = env["NATS_URL"]
    options = "reconnect_window=1&visibility=3"
    fetcher = ObjectFetcher(load_settings())
    buffer = io.BytesIO()
    np.save(buffer, np.arange(4))
    fetcher.store.write_key("restart/a.npy", buffer.getvalue())
    open_sink(f"{base}?stream=IN&subject=in").publish(
        [json.dumps({"id": str(i), "objects": ["restart/a.npy"]}).encode() for i in range(count)]
    )
    worker = ConsumerWorker(
        source=open_source(f"{base}?stream=IN&subject=in&durable=workers&{options}", "w1"),
        sink=open_sink(f"{base}?stream=OUT&subject=out&{options}"),
        dead_letters=open_sink(f"{base}?stream=DEAD&subject=dead&{options}"),
        fetcher=fetcher,
        decode=make_decoder("tests.integration.consumers.slow_decoder:decode"),
        model_name="noop",
        predict=lambda batch: [0] * len(batch),
        options=WorkerOptions(batch_size=32, receive_timeout=0.2),
    )
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,))
    running.start()
    seen: Counter[str] = Counter()
    try:
        time.sleep(0.5)
        stop_service("nats", state)  # mid-run: batches are in flight
        time.sleep(2.5)  # longer than the reconnect window: the worker gets BackendErrors
        assert running.is_alive()
        start_service("nats", state)
        results = open_source(f"{base}?stream=OUT&subject=out&durable=reader", "reader")
        deadline = time.monotonic() + 60
        while len(seen) < count and time.monotonic() < deadline:
            batch = results.receive(500, 0.5)
            seen.update(json.loads(d.payload)["data"]["id"] for d in batch)
            results.acknowledge(batch)
        results.close()
    finally:
        stop.set()
        running.join(timeout=30)
        stop_service("nats", state)
    assert not running.is_alive()
    assert "broker unavailable, retrying" in caplog.text  # it did see the broker go away
    assert set(seen) == {str(i) for i in range(count)}
