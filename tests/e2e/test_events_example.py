"""The event-driven example: quickstart registers a model, the producer publishes digits,
`mlyard consume` predicts them, the reader checks the results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.cli import EXAMPLES, mlyard, spawn, stop_spawned

pytestmark = pytest.mark.e2e


def _python(script: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env=dict(os.environ),
    )
    return done.stdout


def test_producer_consumer_reader() -> None:
    assert mlyard("run", str(EXAMPLES / "quickstart" / "pipeline.py")).returncode == 0
    assert "published 120" in _python(EXAMPLES / "events" / "producer.py", "--count", "120")
    queue = f"sqlite:///{Path(os.environ['MLYARD_HOME']) / 'events.db'}"
    consumer = spawn(
        "consume",
        "--source",
        f"{queue}?topic=digits",
        "--sink",
        f"{queue}?topic=predictions",
        "--model",
        "models:/digits-classifier/1",
        "--replicas",
        "2",
    )
    try:
        deadline = time.monotonic() + 120
        report: dict[str, float] = {"results": 0}
        while report["results"] < 120 and time.monotonic() < deadline:
            time.sleep(1)
            latest = json.loads(_python(EXAMPLES / "events" / "reader.py", "--timeout", "0.5"))
            report = {
                "results": report["results"] + latest["results"],
                "correct": report.get("correct", 0) + latest["correct"],
            }
        assert report["results"] == 120
        assert report["correct"] / 120 >= 0.8
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0
    finally:
        stop_spawned()
