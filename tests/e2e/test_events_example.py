"""The event-driven example: quickstart registers a model, the producer publishes digits,
`mlyard consume` predicts them, the reader checks the results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ServiceStarter
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


@dataclass(frozen=True)
class Topics:
    """Where the producer publishes, the consumer reads and writes, and the reader reads."""

    digits_sink: str
    digits_source: str
    predictions_sink: str
    predictions_source: str
    reader_timeout: str = "0.5"
    #: ``mlyard consume --dead-letter``; by default ``<topic>.dead`` on the source's broker.
    dead_letters: str | None = None


def _topics(broker: str, services: ServiceStarter) -> Topics | None:
    """None on the embedded queue: the example's defaults."""
    run = uuid.uuid4().hex[:8]
    if broker == "redis":
        url = services("redis")["REDIS_URL"]
        return Topics(
            f"{url}?stream=digits-{run}",
            f"{url}?stream=digits-{run}&group=workers",
            f"{url}?stream=predictions-{run}",
            f"{url}?stream=predictions-{run}&group=reader",
        )
    if broker == "nats":
        url = services("nats")["NATS_URL"]
        digits = f"{url}?stream=D{run}&subject=d{run}"
        predictions = f"{url}?stream=P{run}&subject=p{run}"
        return Topics(
            digits,
            f"{digits}&durable=workers",
            predictions,
            f"{predictions}&durable=reader",
            # A JetStream subject is kept only by a stream that covers it: name one.
            dead_letters=f"{url}?stream=X{run}&subject=x{run}",
        )
    if broker == "kafka":
        url = f"kafka://{services('kafka')['KAFKA_BOOTSTRAP']}"
        # Tansu answers a group join after about half the session timeout: keep it short, and
        # give each reader long enough to join.
        group = "&session_timeout_ms=2000&group="
        return Topics(
            f"{url}?topic=digits-{run}",
            f"{url}?topic=digits-{run}{group}workers",
            f"{url}?topic=predictions-{run}",
            f"{url}?topic=predictions-{run}{group}reader",
            reader_timeout="5",
        )
    return None


@pytest.mark.parametrize("broker", ["sqlite", "redis", "nats", "kafka"])
def test_producer_consumer_reader(broker: str, services: ServiceStarter) -> None:
    topics = _topics(broker, services)
    queue = f"sqlite:///{Path(os.environ['MLYARD_HOME']) / 'events.db'}"
    source, sink = f"{queue}?topic=digits", f"{queue}?topic=predictions"
    producer_flags: tuple[str, ...] = ()
    reader_flags: tuple[str, ...] = ("--timeout", "0.5")
    consumer_flags: tuple[str, ...] = ()
    if topics is not None:
        source, sink = topics.digits_source, topics.predictions_sink
        producer_flags = ("--broker", topics.digits_sink)
        reader_flags = ("--broker", topics.predictions_source, "--timeout", topics.reader_timeout)
        if topics.dead_letters:
            consumer_flags = ("--dead-letter", topics.dead_letters)
    assert mlyard("run", str(EXAMPLES / "quickstart" / "pipeline.py")).returncode == 0
    produced = _python(EXAMPLES / "events" / "producer.py", "--count", "120", *producer_flags)
    assert "published 120" in produced
    consumer = spawn(
        "consume",
        "--source",
        source,
        "--sink",
        sink,
        "--model",
        "models:/digits-classifier/1",
        "--replicas",
        "2",
        *consumer_flags,
    )
    try:
        deadline = time.monotonic() + 120
        report: dict[str, float] = {"results": 0}
        while report["results"] < 120 and time.monotonic() < deadline:
            time.sleep(1)
            latest = json.loads(_python(EXAMPLES / "events" / "reader.py", *reader_flags))
            report = {
                "results": report["results"] + latest["results"],
                "correct": report.get("correct", 0) + latest["correct"],
            }
        # At least once: a group rebalance as the second replica joins may redeliver a few.
        assert report["results"] >= 120
        assert report["correct"] / report["results"] >= 0.8
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(timeout=60) == 0
    finally:
        stop_spawned()
