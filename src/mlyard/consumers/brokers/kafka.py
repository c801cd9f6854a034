"""Kafka (or a Kafka-compatible broker) with a consumer group: ``kafka://host:port?topic=in&group=g``.

Options: ``visibility`` (seconds, default 30), ``session_timeout_ms`` (default 10000),
``partitions`` (for a topic created here, default 1), ``reconnect_window`` (seconds, default 30).

Kafka tracks a committed offset per partition, not per message, so this source keeps the
per-message bookkeeping itself:

- ``acknowledge`` commits (synchronously) up to the lowest offset still in flight, so an offset
  is committed only when every lower offset this consumer received was acknowledged too: a crash
  redelivers everything not yet done.
- ``release`` and a delivery held longer than ``visibility`` seek back to that offset; later
  offsets that are still in flight or already acknowledged are skipped when read again.
- ``attempts`` is counted in memory per (partition, offset) by this consumer: Kafka does not count
  deliveries, so after a crash or a rebalance the count starts again at 1.
- ``lag`` is high watermark - committed offset over the assigned partitions; where the broker
  reports a high watermark below what this consumer has already read (Tansu 0.6 does), the
  highest offset read + 1 stands in for it.

The topic is created when missing (AdminClient). librdkafka reconnects by itself; a broker away
for longer than ``reconnect_window`` ends in a ``BackendError``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlyard.consumers.base import Delivery
from mlyard.consumers.brokers import kafka_client
from mlyard.consumers.brokers.reconnect import call_with_reconnect
from mlyard.consumers.urls import BrokerUrl
from mlyard.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
    from confluent_kafka._types import HeadersType

logger = logging.getLogger(__name__)
#: Longest single consume() wait: librdkafka waits for the full batch otherwise.
CONSUME_SLICE_SECONDS = 0.05
#: Commit errors that mean "a rebalance took the partition": the new owner redelivers.
REBALANCE_ERRORS = ("REBALANCE_IN_PROGRESS", "ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID")


class KafkaSource:
    """One member of a Kafka consumer group, acknowledging message by message."""

    def __init__(self, url: BrokerUrl, consumer_name: str) -> None:
        self.url = url
        self.topic = url.option("topic")
        self.group = url.option("group")
        self.consumer_name = consumer_name
        self.visibility = float(url.options.get("visibility", "30"))
        self._consumer: Consumer | None = None
        #: partition -> offset -> when delivered (None: released, to be delivered again).
        self._in_flight: dict[int, dict[int, float | None]] = {}
        #: partition -> offsets acknowledged but not committed yet (a lower one is in flight).
        self._done: dict[int, set[int]] = {}
        self._committed: dict[int, int] = {}
        self._highest_read: dict[int, int] = {}
        self._attempts: dict[tuple[int, int], int] = {}
        self._brokers_down_since: float | None = None

    def check_reachable(self) -> None:
        kafka_client.check_reachable(self.url)

    def _ready_consumer(self) -> Consumer:
        if self._consumer is not None:
            return self._consumer
        from confluent_kafka import Consumer

        kafka_client.ensure_topic(self.url, self.topic)
        session_ms = int(self.url.options.get("session_timeout_ms", "10000"))
        config = kafka_client.client_config(self.url) | {
            "group.id": self.group,
            "client.id": self.consumer_name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, min(1000, session_ms // 4)),
            "error_cb": self._on_error,
        }
        consumer = Consumer(config)
        consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._forget, on_lost=self._forget
        )
        self._consumer = consumer
        return consumer

    def _on_error(self, error: KafkaError) -> None:
        from confluent_kafka import KafkaError

        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down_since = self._brokers_down_since or time.monotonic()
        logger.warning("Kafka client error at %s: %s", self.url.redacted, error.str())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(consumer, partitions)

    def _forget(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Drop the bookkeeping of partitions this member no longer (or newly) owns."""
        for tp in partitions:
            p = tp.partition
            self._in_flight.pop(p, None)
            self._done.pop(p, None)
            self._committed.pop(p, None)
            self._highest_read.pop(p, None)
            self._attempts = {key: n for key, n in self._attempts.items() if key[0] != p}

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        from confluent_kafka import KafkaException

        consumer = self._ready_consumer()
        self._redeliver_expired(consumer)
        deadline = time.monotonic() + timeout
        deliveries: list[Delivery] = []
        while not deliveries:
            try:
                messages = consumer.consume(max_messages, CONSUME_SLICE_SECONDS)
            except KafkaException as exc:
                raise BackendError(f"Kafka at {self.url.redacted} failed: {exc}") from exc
            deliveries = [d for m in messages if (d := self._accept(m)) is not None]
            if deliveries:
                self._brokers_down_since = None
            self._raise_if_brokers_stay_away()
            if time.monotonic() >= deadline:
                break
        return deliveries

    def _accept(self, message: Message) -> Delivery | None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise BackendError(f"Kafka at {self.url.redacted} failed: {error.str()}")
            logger.warning("Kafka consume error at %s: %s", self.url.redacted, error.str())
            return None
        p, offset = message.partition(), message.offset()
        if p is None or offset is None:
            return None
        in_flight = self._in_flight.setdefault(p, {})
        already = offset in in_flight and in_flight[offset] is not None
        if already or offset in self._done.get(p, ()) or offset < self._committed.get(p, -1):
            return None  # read again after a seek back; still held or already done
        in_flight[offset] = time.monotonic()
        self._highest_read[p] = max(self._highest_read.get(p, -1), offset)
        attempts = self._attempts.get((p, offset), 0) + 1
        self._attempts[(p, offset)] = attempts
        headers = _decode_headers(message.headers())
        return Delivery(
            payload=message.value() or b"",
            receipt=f"{p}:{offset}",
            attempts=attempts,
            headers=headers,
        )

    def _raise_if_brokers_stay_away(self) -> None:
        down_since = self._brokers_down_since
        window = kafka_client.reconnect_window(self.url)
        if down_since is None or time.monotonic() - down_since < window:
            return
        try:
            kafka_client.check_reachable(self.url)
        except ConfigError as exc:
            raise BackendError(
                f"Kafka at {self.url.redacted} has been unreachable for {window:.0f} s.",
                hint="Check that the broker is running and reachable, then restart the worker.",
            ) from exc
        self._brokers_down_since = None

    def _redeliver_expired(self, consumer: Consumer) -> None:
        expired_before = time.monotonic() - self.visibility
        for p, in_flight in self._in_flight.items():
            expired = [o for o, at in in_flight.items() if at is not None and at <= expired_before]
            if expired:
                self._seek_back(consumer, p, expired)

    def _seek_back(self, consumer: Consumer, partition: int, offsets: list[int]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        for offset in offsets:
            self._in_flight[partition][offset] = None
        try:
            consumer.seek(TopicPartition(self.topic, partition, min(offsets)))
        except KafkaException as exc:  # the partition moved away: its new owner redelivers
            logger.warning("seek back on %s[%d] failed: %s", self.topic, partition, exc)

    def acknowledge(self, deliveries: Sequence[Delivery]) -> None:
        touched: set[int] = set()
        for delivery in deliveries:
            p, offset = (int(part) for part in delivery.receipt.split(":"))
            if p not in self._in_flight or offset < self._committed.get(p, -1):
                continue  # revoked meanwhile, or acknowledged before
            self._in_flight[p].pop(offset, None)
            self._done.setdefault(p, set()).add(offset)
            touched.add(p)
        for p in touched:
            self._commit_done(p)

    def _commit_done(self, partition: int) -> None:
        in_flight, done = self._in_flight.get(partition, {}), self._done.get(partition, set())
        if not done:
            return
        # Commit only up to the lowest offset still owed, so a crash redelivers it.
        commit_at = min(in_flight) if in_flight else max(done) + 1
        if commit_at <= self._committed.get(partition, -1):
            return
        self._commit(partition, commit_at)
        self._committed[partition] = commit_at
        self._done[partition] = {o for o in done if o >= commit_at}
        self._attempts = {
            key: n
            for key, n in self._attempts.items()
            if key[0] != partition or key[1] >= commit_at
        }

    def _commit(self, partition: int, offset: int) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        consumer = self._ready_consumer()

        def commit() -> None:
            try:
                consumer.commit(
                    offsets=[TopicPartition(self.topic, partition, offset)], asynchronous=False
                )
            except KafkaException as exc:
                error = exc.args[0]
                if error.name() in REBALANCE_ERRORS:
                    logger.warning("commit lost to a rebalance (redelivered): %s", error.str())
                elif kafka_client.is_transient(error):
                    raise kafka_client.TransientKafkaError(error.str()) from exc
                else:
                    raise BackendError(
                        f"Kafka at {self.url.redacted} refused a commit: {error.str()}"
                    ) from exc

        call_with_reconnect(
            commit,
            transient=(kafka_client.TransientKafkaError,),
            what="commit offsets",
            url=self.url.redacted,
            window=kafka_client.reconnect_window(self.url),
        )

    def release(self, deliveries: Sequence[Delivery]) -> None:
        by_partition: dict[int, list[int]] = {}
        for delivery in deliveries:
            p, offset = (int(part) for part in delivery.receipt.split(":"))
            if offset in self._in_flight.get(p, {}):
                by_partition.setdefault(p, []).append(offset)
        consumer = self._ready_consumer()
        for p, offsets in by_partition.items():
            self._seek_back(consumer, p, offsets)

    def lag(self) -> int | None:
        from confluent_kafka import KafkaException

        consumer = self._ready_consumer()
        try:
            assigned = consumer.assignment()
            if not assigned:
                return None
            committed = consumer.committed(assigned, timeout=5)
            waiting = 0
            for tp in committed:
                low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                high = max(high, self._highest_read.get(tp.partition, -1) + 1)
                start = tp.offset if tp.offset >= 0 else low
                waiting += max(0, high - start)
        except KafkaException as exc:
            raise BackendError(
                f"Kafka at {self.url.redacted} failed to tell the lag: {exc}"
            ) from exc
        return waiting

    def close(self) -> None:
        # Leaves the group without committing: what was not acknowledged is redelivered.
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class KafkaSink:
    """Produces to a topic (acks=all) and waits until the broker has every message."""

    def __init__(self, url: BrokerUrl) -> None:
        from confluent_kafka import Producer

        self.url = url
        self.topic = url.option("topic")
        window_ms = int(kafka_client.reconnect_window(url) * 1000)
        self._producer = Producer(
            kafka_client.client_config(url)
            | {"acks": "all", "linger.ms": 2, "message.timeout.ms": window_ms}
        )
        self._topic_ready = False

    def check_reachable(self) -> None:
        kafka_client.check_reachable(self.url)

    def publish(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        if not self._topic_ready:
            kafka_client.ensure_topic(self.url, self.topic)
            self._topic_ready = True
        failures: list[str] = []

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        for payload in payloads:
            while True:
                try:
                    self._producer.produce(self.topic, payload, on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    self._producer.poll(0.1)
        # librdkafka retries through broker outages until message.timeout.ms (the window).
        remaining = self._producer.flush(kafka_client.reconnect_window(self.url) + 5)
        if remaining or failures:
            raise BackendError(
                f"Kafka at {self.url.redacted} did not take {remaining + len(failures)} of "
                f"{len(payloads)} messages: {failures[0] if failures else 'timed out'}",
                hint="Check that the broker is running and the topic exists, then retry.",
            )

    def close(self) -> None:
        self._producer.flush(5)


def _decode_headers(raw: HeadersType | None) -> dict[str, str]:
    items = raw.items() if isinstance(raw, dict) else raw or []
    return {
        key: value.decode(errors="replace") if isinstance(value, bytes) else value or ""
        for key, value in items
    }
