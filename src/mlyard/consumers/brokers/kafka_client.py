"""Connecting to Kafka: client configuration, the reachability check at start, topic creation,
and which librdkafka errors are worth riding out."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

from mlyard.consumers.urls import BrokerUrl
from mlyard.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

# librdkafka logs through this logger: keep the name the Kafka source module always had.
logger = logging.getLogger("mlyard.consumers.brokers.kafka")


class TransientKafkaError(Exception):
    """A librdkafka error worth retrying (the broker is away or moving)."""


def client_config(url: BrokerUrl) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": f"{url.host or '127.0.0.1'}:{url.port or 9092}",
        "socket.connection.setup.timeout.ms": 3000,
        "logger": logger,
    }
    if url.username and url.password:
        config.update(
            {
                "security.protocol": url.options.get("security_protocol", "SASL_PLAINTEXT"),
                "sasl.mechanisms": url.options.get("sasl_mechanism", "PLAIN"),
                "sasl.username": url.username,
                "sasl.password": url.password,
            }
        )
    return config


def reconnect_window(url: BrokerUrl) -> float:
    return float(url.options.get("reconnect_window", "30"))


def check_reachable(url: BrokerUrl) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    address = (url.host or "127.0.0.1", url.port or 9092)
    try:  # fails at once on a closed port; list_topics below would wait its full timeout
        socket.create_connection(address, timeout=3).close()
    except OSError as exc:
        raise ConfigError(
            f"Kafka at {url.redacted} is not reachable: {exc}",
            hint="Start the broker (scripts/services/kafka.sh start DIR) or fix the host and port.",
        ) from exc
    try:
        AdminClient(client_config(url)).list_topics(timeout=4)
    except KafkaException as exc:
        raise ConfigError(
            f"Kafka at {url.redacted} is not reachable: {exc.args[0].str()}",
            hint="Start the broker (scripts/services/kafka.sh start DIR) or fix the host and port.",
        ) from exc


def ensure_topic(url: BrokerUrl, topic: str) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    partitions = int(url.options.get("partitions", "1"))
    admin = AdminClient(client_config(url))  # must outlive the future, or it is cancelled
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)], operation_timeout=10
    )
    try:
        futures[topic].result(timeout=15)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BackendError(
                f"Could not create the topic {topic!r} at {url.redacted}: {exc.args[0].str()}",
                hint="Create it yourself or allow this client to create topics.",
            ) from exc


def is_transient(error: KafkaError) -> bool:
    from confluent_kafka import KafkaError

    transient_codes = {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
    return bool(error.retriable()) or error.code() in transient_codes
