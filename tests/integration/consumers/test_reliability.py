"""10,000 messages through three `mlyard consume` processes that are SIGKILLed at random
moments: every message gets a result, and duplicates stay within what at-least-once allows
(at most the batch in flight of each killed process)."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.consumers.urls import open_sink, open_source
from mlyard.settings import load_settings

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
