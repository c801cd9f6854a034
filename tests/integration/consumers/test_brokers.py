"""Redis Streams, NATS JetStream and Kafka (Tansu) pass the consumer contract, on real brokers
started by scripts/services/{redis,nats,kafka}.sh."""

from __future__ import annotations

import socket
import uuid

import pytest

from tests.conftest import ServiceStarter
from tests.contracts.consumer_contract import (
    VISIBILITY,
    AtomicCompletionContract,
    ConsumerContract,
)

pytestmark = [pytest.mark.integration, pytest.mark.brokers]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TestRedisStreams(AtomicCompletionContract):
    @pytest.fixture
    def redis_url(self, services: ServiceStarter) -> str:
        return services("redis")["REDIS_URL"]

    @pytest.fixture
    def stream(self) -> str:
        return unique("in-")

    @pytest.fixture
    def source_url(self, redis_url: str, stream: str) -> str:
        return f"{redis_url}?stream={stream}&group={unique('g-')}&visibility={VISIBILITY}"

    @pytest.fixture
    def sink_url(self, redis_url: str, stream: str) -> str:
        return f"{redis_url}?stream={stream}"

    @pytest.fixture
    def unreachable_url(self) -> str:
        return f"redis://127.0.0.1:{closed_port()}/0?stream=in&group=g"


class TestNatsJetStream(ConsumerContract):
    @pytest.fixture
    def nats_url(self, services: ServiceStarter) -> str:
        return services("nats")["NATS_URL"]

    @pytest.fixture
    def stream(self) -> str:
        return unique("S")

    @pytest.fixture
    def source_url(self, nats_url: str, stream: str) -> str:
        return (
            f"{nats_url}?stream={stream}&subject={stream}.in&durable={unique('d')}"
            f"&visibility={VISIBILITY}"
        )

    @pytest.fixture
    def sink_url(self, nats_url: str, stream: str) -> str:
        return f"{nats_url}?stream={stream}&subject={stream}.in"

    @pytest.fixture
    def unreachable_url(self) -> str:
        return f"nats://127.0.0.1:{closed_port()}?stream=S&subject=in&durable=d"


class TestKafka(ConsumerContract):
    # Tansu answers a JoinGroup after about half of session.timeout.ms (2 s in the URL below).
    RECEIVE_TIMEOUT = 8.0
    GROUP_SETTLE_SECONDS = 2.5

    @pytest.fixture
    def kafka_bootstrap(self, services: ServiceStarter) -> str:
        return services("kafka")["KAFKA_BOOTSTRAP"]

    @pytest.fixture
    def topic(self) -> str:
        return unique("in-")

    @pytest.fixture
    def source_url(self, kafka_bootstrap: str, topic: str) -> str:
        return (
            f"kafka://{kafka_bootstrap}?topic={topic}&group={unique('g-')}"
            f"&visibility={VISIBILITY}&session_timeout_ms=2000"
        )

    @pytest.fixture
    def sink_url(self, kafka_bootstrap: str, topic: str) -> str:
        return f"kafka://{kafka_bootstrap}?topic={topic}"

    @pytest.fixture
    def unreachable_url(self) -> str:
        return f"kafka://127.0.0.1:{closed_port()}?topic=in&group=g"
