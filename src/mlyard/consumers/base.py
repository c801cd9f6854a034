"""The consumer contracts: a ``Source`` of messages and a ``Sink`` for results.

At-least-once: a worker acknowledges a delivery only after its result (or its dead letter) was
published. A delivery that is neither acknowledged nor released (the worker died) is delivered
again after the source's visibility timeout. Every source and sink passes the shared contract
suite in ``tests/contracts/consumer_contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

S = TypeVar("S")


@dataclass(frozen=True)
class Delivery:
    """One received message: its bytes and how to acknowledge it."""

    payload: bytes
    #: The source's handle for acknowledging (a row id, a stream entry id, an offset, ...).
    receipt: str
    #: How many times this message has been delivered, this delivery included (1 = first).
    attempts: int = 1
    headers: dict[str, str] = field(default_factory=dict)


class Source(Protocol):
    """Where messages come from; one instance per worker process (a group member)."""

    #: Seconds a delivery stays with this consumer; unacknowledged by then, it is delivered
    #: again (to any member of the group).
    visibility: float

    def check_reachable(self) -> None:
        """Raise ``ConfigError`` naming the URL and the fix when the broker cannot be used."""

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, waiting at most ``timeout`` seconds for the first.

        Blocks up to ``timeout``; returns ``[]`` when nothing arrived. Reconnects (with
        backoff) when the broker dropped; raises ``BackendError`` only when it stays away.
        """

    def acknowledge(self, deliveries: Sequence[Delivery]) -> None:
        """Mark deliveries done for good. Idempotent."""

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give deliveries back for redelivery soon (a retryable failure)."""

    def lag(self) -> int | None:
        """Messages waiting for this consumer group, when the broker can tell cheaply."""

    def close(self) -> None: ...


class Sink(Protocol):
    """Where results (and dead letters) go."""

    def check_reachable(self) -> None: ...

    def publish(self, payloads: Sequence[bytes]) -> None:
        """Publish and wait until the broker has them (durable before any ack). Raises
        ``BackendError`` when it could not."""

    def close(self) -> None: ...


@runtime_checkable
class AtomicCompletion(Protocol):
    """A source that can publish results and acknowledge their messages in one atomic step
    when the sinks are on its own broker (the embedded queue's file, one Redis database).

    A crash can then never leave a result published whose message comes back, so those
    results are never duplicated; and a batch costs one broker round trip less.
    """

    def publish_and_acknowledge(
        self, outputs: Sequence[tuple[Sink, Sequence[bytes]]], deliveries: Sequence[Delivery]
    ) -> bool:
        """Publish each sink's payloads and acknowledge ``deliveries``, all or nothing.

        Returns False, having done nothing, when a sink is not on this source's broker; the
        caller then publishes and acknowledges in turn. Raises ``BackendError`` like
        ``Sink.publish``."""


def outputs_on_this_broker(
    outputs: Sequence[tuple[Sink, Sequence[bytes]]], kind: type[S], here: Callable[[S], bool]
) -> list[tuple[S, Sequence[bytes]]] | None:
    """``outputs`` when every sink is a ``kind`` that ``here`` says is on the source's broker;
    None when any is elsewhere (then nothing may be done in one step)."""
    mine: list[tuple[S, Sequence[bytes]]] = []
    for sink, payloads in outputs:
        if not (isinstance(sink, kind) and here(sink)):
            return None
        mine.append((sink, payloads))
    return mine
