"""`mlyard consume` stopped with SIGTERM mid-stream: the batch in hand is finished and
acknowledged, nothing stays leased, and the exit code is 0."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mlyard.artifacts.store import ArtifactStore
from mlyard.consumers.urls import open_sink
from mlyard.settings import load_settings

MESSAGES = 400


def _count(database: Path, where: str) -> int:
    with sqlite3.connect(database) as connection:
        row = connection.execute(f"SELECT COUNT(*) FROM messages WHERE {where}").fetchone()
    return int(row[0])


def test_sigterm_finishes_the_batch_in_hand_then_exits_0(tmp_path: Path) -> None:
    database = tmp_path / "queue.db"
    queue = f"sqlite:///{database}"
    store = ArtifactStore.from_settings(load_settings())
    buffer_path = tmp_path / "array.npy"
    np.save(buffer_path, np.arange(4))
    store.write_key("sigterm/a.npy", buffer_path.read_bytes())
    open_sink(f"{queue}?topic=in").publish(
        [json.dumps({"id": str(i), "objects": ["sigterm/a.npy"]}).encode() for i in range(MESSAGES)]
    )
    consumer = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlyard.cli", "consume"),
            *("--source", f"{queue}?topic=in", "--sink", f"{queue}?topic=out"),
            *("--model", "noop", "--batch-size", "16"),
            *("--decoder", "tests.integration.consumers.slow_decoder:decode"),
        ],
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    deadline = time.monotonic() + 60
    while _count(database, "topic = 'out'") == 0:
        assert time.monotonic() < deadline and consumer.poll() is None, "no result came"
        time.sleep(0.05)
    consumer.send_signal(signal.SIGTERM)
    _, stderr = consumer.communicate(timeout=30)
    assert consumer.returncode == 0, stderr.decode()
    results = _count(database, "topic = 'out'")
    waiting = _count(database, "topic = 'in'")
    assert 0 < results < MESSAGES  # stopped mid-stream
    assert results + waiting == MESSAGES  # nothing lost, nothing done twice
    assert _count(database, f"topic = 'in' AND leased_until > {time.time()}") == 0
