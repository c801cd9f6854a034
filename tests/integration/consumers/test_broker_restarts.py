"""Brokers that drop mid-run: sources and sinks reconnect with backoff, and give up with a
``BackendError`` when the broker stays away longer than ``reconnect_window``.

Each test runs its own broker (scripts/services/<name>.sh on a fixed port, so it can come back
on the same address). Kafka is left out of the restart case: Tansu keeps topics in memory only,
so a restarted Tansu has lost the messages a restart test would look for.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlyard.consumers.urls import open_sink, open_source
from mlyard.errors import BackendError
from tests.contracts.consumer_contract import payloads, receive_until
from tests.integration.consumers.test_brokers import closed_port
from tests.servicekit import start_service, stop_service

pytestmark = [pytest.mark.integration, pytest.mark.brokers]


@dataclass
class PrivateBroker:
    name: str
    state_dir: Path
    env: dict[str, str]

    def stop(self) -> None:
        stop_service(self.name, self.state_dir)

    def start(self) -> None:
        self.env = start_service(self.name, self.state_dir)

    def restart_after(self, seconds: float) -> threading.Thread:
        def restart() -> None:
            time.sleep(seconds)
            self.start()

        thread = threading.Thread(target=restart)
        thread.start()
        return thread


def start_private_broker(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PrivateBroker]:
    monkeypatch.setenv(f"{name.upper()}_PORT", str(closed_port()))
    private = PrivateBroker(name, tmp_path / name, {})
    private.start()
    yield private
    private.stop()


@pytest.fixture(params=["redis", "nats", "kafka"])
def broker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PrivateBroker]:
    yield from start_private_broker(request.param, tmp_path, monkeypatch)


@pytest.fixture(params=["redis", "nats"])
def restartable_broker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PrivateBroker]:
    """Brokers that keep their data over a restart (Redis keeps the stream the sink adds)."""
    yield from start_private_broker(request.param, tmp_path, monkeypatch)


def urls(broker: PrivateBroker, window: float) -> tuple[str, str]:
    """(source URL, sink URL) of a fresh topic on ``broker``."""
    name, options = uuid.uuid4().hex[:10], f"reconnect_window={window}&visibility=5"
    if broker.name == "redis":
        base = f"{broker.env['REDIS_URL']}?stream=s{name}"
        return f"{base}&group=g{name}&{options}", f"{base}&{options}"
    if broker.name == "nats":
        base = f"{broker.env['NATS_URL']}?stream=S{name}&subject=s{name}"
        return f"{base}&durable=d{name}&{options}", f"{base}&{options}"
    base = f"kafka://{broker.env['KAFKA_BOOTSTRAP']}?topic=t{name}"
    return f"{base}&group=g{name}&session_timeout_ms=2000&{options}", f"{base}&{options}"


def test_publish_and_receive_ride_out_a_broker_restart(
    restartable_broker: PrivateBroker,
) -> None:
    broker = restartable_broker
    source_url, sink_url = urls(broker, window=20)
    source, sink = open_source(source_url, "worker"), open_sink(sink_url)
    try:
        sink.publish(payloads(3))
        first = receive_until(source, 3, 10)
        source.acknowledge(first)
        broker.stop()
        restarting = broker.restart_after(1.5)
        sink.publish([b"during-outage"])  # blocks, reconnecting, until the broker is back
        restarting.join()
        again = receive_until(source, 1, 15)
        assert [d.payload for d in again] == [b"during-outage"]
        source.acknowledge(again)
    finally:
        source.close()
        sink.close()


def test_a_broker_that_stays_away_ends_in_a_backend_error(broker: PrivateBroker) -> None:
    source_url, sink_url = urls(broker, window=2)
    source, sink = open_source(source_url, "worker"), open_sink(sink_url)
    try:
        sink.publish([b"before"])
        assert [d.payload for d in receive_until(source, 1, 10)] == [b"before"]
        broker.stop()
        started = time.monotonic()
        with pytest.raises(BackendError) as publishing:
            sink.publish([b"while-down"])
        assert time.monotonic() - started < 20
        assert "127.0.0.1" in publishing.value.message
        started = time.monotonic()
        with pytest.raises(BackendError) as receiving:
            while time.monotonic() - started < 20:  # a worker's loop: receive, receive, ...
                source.receive(10, 0.5)
        assert "127.0.0.1" in receiving.value.message
    finally:
        source.close()
        sink.close()
