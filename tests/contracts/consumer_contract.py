"""The contract every consumer source and sink passes (see ``mlyard.consumers.base``).

A broker's test module subclasses ``ConsumerContract`` and provides the fixtures ``source_url``
and ``sink_url``: URLs of one fresh topic/stream (and a fresh group) per test, the source with a
short visibility timeout (``VISIBILITY`` seconds), and ``unreachable_url``: the same kind of URL
where the broker cannot be used (a port where nothing listens; for the embedded queue, a path
that cannot hold a database). Set ``RECEIVE_TIMEOUT`` higher for brokers whose group joins are slow.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from mlyard.consumers.base import AtomicCompletion, Delivery, Sink, Source
from mlyard.consumers.urls import open_sink, open_source, parse_broker_url
from mlyard.errors import ConfigError

VISIBILITY = 1.5


def payloads(count: int) -> list[bytes]:
    return [f"message-{index:04d}".encode() for index in range(count)]


def receive_until(source: Source, count: int, timeout: float, batch: int = 100) -> list[Delivery]:
    """Receive until ``count`` deliveries arrived or ``timeout`` passed."""
    received: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        wait = max(0.05, min(1.0, deadline - time.monotonic()))
        received += source.receive(count - len(received) if batch > count else batch, wait)
    return received


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


class ConsumerContract:
    """Tests shared by every broker; subclasses provide the URL fixtures."""

    #: Longest wait for messages that are there (group joins included).
    RECEIVE_TIMEOUT = 10.0
    #: How long new members poll before the group is settled (Kafka rebalances on each join).
    GROUP_SETTLE_SECONDS = 0.2

    @pytest.fixture
    def open_consumer(self, source_url: str) -> Iterator[Callable[[], Source]]:
        """Opens group members of ``source_url``; closes what is still open at the end."""
        opened: list[Source] = []

        def open_one() -> Source:
            source = open_source(source_url, f"worker-{uuid.uuid4().hex[:8]}")
            opened.append(source)
            return source

        yield open_one
        for source in opened:
            with contextlib.suppress(Exception):  # some were closed by the test
                source.close()

    @pytest.fixture
    def sink(self, sink_url: str) -> Iterator[Sink]:
        opened = open_sink(sink_url)
        yield opened
        opened.close()

    def test_publish_then_receive_all_in_order(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        source = open_consumer()
        source.check_reachable()
        sink.check_reachable()
        sent = payloads(25)
        sink.publish(sent[:10])
        sink.publish(sent[10:])
        received = receive_until(source, len(sent), self.RECEIVE_TIMEOUT, batch=7)
        assert [d.payload for d in received] == sent
        assert all(d.attempts == 1 for d in received)
        assert len({d.receipt for d in received}) == len(sent)
        source.acknowledge(received)

    def test_acknowledged_messages_never_come_back(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        source = open_consumer()
        sink.publish(payloads(5))
        received = receive_until(source, 5, self.RECEIVE_TIMEOUT)
        source.acknowledge(received)
        source.acknowledge(received)  # idempotent
        assert source.receive(10, VISIBILITY * 2 + 0.5) == []

    def test_unacknowledged_messages_come_back_after_visibility(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        source = open_consumer()
        sink.publish(payloads(3))
        first = receive_until(source, 3, self.RECEIVE_TIMEOUT)
        assert [d.attempts for d in first] == [1, 1, 1]
        started = time.monotonic()
        again = receive_until(source, 3, VISIBILITY + self.RECEIVE_TIMEOUT)
        assert time.monotonic() - started >= VISIBILITY * 0.5
        assert sorted(d.payload for d in again) == payloads(3)
        assert [d.attempts for d in again] == [2, 2, 2]
        source.acknowledge(again)

    def test_released_messages_are_redelivered_soon(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        source = open_consumer()
        sink.publish(payloads(4))
        first = receive_until(source, 4, self.RECEIVE_TIMEOUT)
        source.acknowledge(first[:2])
        source.release(first[2:])
        started = time.monotonic()
        again = receive_until(source, 2, VISIBILITY * 0.9)
        assert time.monotonic() - started < VISIBILITY
        assert [d.payload for d in again] == payloads(4)[2:]
        assert all(d.attempts == 2 for d in again)
        source.acknowledge(again)

    def test_two_members_split_the_messages_without_duplicates(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        members = [open_consumer(), open_consumer()]
        settled = time.monotonic() + self.GROUP_SETTLE_SECONDS
        while time.monotonic() < settled:  # both join before anything is there to take
            for member in members:
                assert member.receive(1, 0.1) == []
        sent = payloads(40)
        sink.publish(sent)
        received: list[Delivery] = []
        deadline = time.monotonic() + self.RECEIVE_TIMEOUT
        while len(received) < len(sent) and time.monotonic() < deadline:
            for member in members:
                batch = member.receive(5, 0.2)
                member.acknowledge(batch)
                received += batch
        assert sorted(d.payload for d in received) == sent  # each exactly once

    def test_messages_of_a_member_that_died_go_to_another(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        doomed = open_consumer()
        sink.publish(payloads(6))
        taken = receive_until(doomed, 6, self.RECEIVE_TIMEOUT)
        assert len(taken) == 6
        doomed.acknowledge(taken[:2])
        doomed.close()  # dies holding four messages
        survivor = open_consumer()
        rescued = receive_until(survivor, 4, VISIBILITY + self.RECEIVE_TIMEOUT)
        assert sorted(d.payload for d in rescued) == payloads(6)[2:]
        survivor.acknowledge(rescued)
        assert survivor.receive(10, VISIBILITY + 0.5) == []

    def test_lag_decreases_as_messages_are_acknowledged(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        source = open_consumer()
        sink.publish(payloads(10))
        received = receive_until(source, 10, self.RECEIVE_TIMEOUT)
        assert wait_for(lambda: source.lag() == 10, 5), source.lag()
        source.acknowledge(received[:4])
        assert wait_for(lambda: source.lag() == 6, 5), source.lag()
        source.acknowledge(received[4:])
        assert wait_for(lambda: source.lag() == 0, 5), source.lag()

    def test_check_reachable_on_an_unusable_address_names_the_url(
        self, unreachable_url: str
    ) -> None:
        started = time.monotonic()
        with pytest.raises(ConfigError) as raised:
            open_source(unreachable_url, "worker").check_reachable()
        assert time.monotonic() - started < 10
        assert parse_broker_url(unreachable_url).redacted in raised.value.message
        assert raised.value.hint
        with pytest.raises(ConfigError):
            open_sink(unreachable_url).check_reachable()


class _SinkElsewhere:
    """A sink on another broker, as far as any source can tell."""

    def __init__(self) -> None:
        self.published: list[bytes] = []

    def check_reachable(self) -> None:
        pass

    def publish(self, payloads: Sequence[bytes]) -> None:
        self.published += payloads

    def close(self) -> None:
        pass


class AtomicCompletionContract(ConsumerContract):
    """The contract plus ``AtomicCompletion``, for sources that implement it."""

    def test_results_on_its_broker_are_published_with_the_acknowledgement(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        source = open_consumer()
        assert isinstance(source, AtomicCompletion)
        sink.publish(payloads(3))
        received = receive_until(source, 3, self.RECEIVE_TIMEOUT)
        results = [b"result-1", b"result-2"]
        # The sink publishes to the source's own topic, so the results come back to it.
        assert source.publish_and_acknowledge([(sink, results)], received)
        again = receive_until(source, 2, self.RECEIVE_TIMEOUT)
        assert sorted(d.payload for d in again) == results
        source.acknowledge(again)
        assert source.receive(10, VISIBILITY * 2 + 0.5) == []  # the three never come back

    def test_a_sink_on_another_broker_is_left_to_the_caller(
        self, open_consumer: Callable[[], Source], sink: Sink
    ) -> None:
        source = open_consumer()
        assert isinstance(source, AtomicCompletion)
        sink.publish(payloads(2))
        received = receive_until(source, 2, self.RECEIVE_TIMEOUT)
        elsewhere = _SinkElsewhere()
        assert not source.publish_and_acknowledge(
            [(sink, [b"result"]), (elsewhere, [b"result"])], received
        )
        assert elsewhere.published == []
        assert source.lag() == 2  # nothing published, nothing acknowledged
        source.release(received)
        again = receive_until(source, 2, self.RECEIVE_TIMEOUT)
        assert sorted(d.payload for d in again) == payloads(2)
        source.acknowledge(again)
