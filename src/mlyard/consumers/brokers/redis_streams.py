"""Redis Streams with a consumer group: ``redis://host:port/db?stream=in&group=g[&visibility=30]``.

A source is one consumer of the group. ``receive`` first reclaims entries another consumer (or
this one) left pending longer than ``visibility`` seconds (XAUTOCLAIM: the redelivery after a
worker died), then reads new entries (XREADGROUP). ``attempts`` is the entry's delivery count
from the pending entries list. ``acknowledge`` is XACK; entries are not deleted, because other
groups may still read the stream: trim it with ``XTRIM``/``MAXLEN`` as retention requires.
``release`` re-claims the entry with a large idle time and without counting a delivery
(XCLAIM ... IDLE JUSTID), so the next ``receive`` of any member reclaims it at once.
A sink appends with XADD (one pipeline per batch). The payload is the entry's ``payload`` field.
Results for streams of the same database are appended in one MULTI/EXEC with the XACK of their
entries (``publish_and_acknowledge``): one round trip, and never a result without its ack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from mlyard.consumers.base import Delivery, Sink, outputs_on_this_broker
from mlyard.consumers.brokers.reconnect import call_with_reconnect
from mlyard.consumers.urls import BrokerUrl
from mlyard.errors import BackendError, ConfigError

if TYPE_CHECKING:
    import redis

T = TypeVar("T")
logger = logging.getLogger(__name__)
PAYLOAD_FIELD = b"payload"
#: Longest single XREADGROUP block, so reclaimable entries are noticed while waiting.
BLOCK_SLICE_SECONDS = 0.5
#: The idle time ``release`` sets: far past any visibility timeout.
RELEASED_IDLE_MS = 10 * 365 * 24 * 3600 * 1000


def _client(url: BrokerUrl) -> redis.Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    db = url.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError(
            f"The database in {url.redacted} is not a number.",
            hint="Use redis://host:port/DB with DB a number (0 by default).",
        )
    return redis.Redis(
        host=url.host or "127.0.0.1",
        port=url.port or 6379,
        db=int(db),
        username=url.username,
        password=url.password,
        socket_connect_timeout=3,
        socket_timeout=10,
        # No retries inside redis-py: call_with_reconnect owns backoff, and a down broker at
        # start must fail within seconds.
        retry=Retry(NoBackoff(), 0),
    )


def _check_reachable(client: redis.Redis, url: BrokerUrl) -> None:
    import redis

    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise ConfigError(
            f"Redis at {url.redacted} refused the credentials: {exc}",
            hint="Put the right user and password in the URL (redis://user:password@host:port/0).",
        ) from exc
    except redis.RedisError as exc:
        raise ConfigError(
            f"Redis at {url.redacted} is not reachable: {exc}",
            hint="Start Redis (scripts/services/redis.sh start DIR) or fix the host and port.",
        ) from exc


class _GroupMissingError(BackendError):
    """The consumer group is gone (Redis restarted without persistence, or it was deleted)."""


class _RedisCaller:
    """Runs Redis commands with reconnect-and-backoff; wraps other errors as BackendError."""

    def __init__(self, url: BrokerUrl) -> None:
        self.url = url
        self.client = _client(url)

    def __call__(self, what: str, call: Callable[[], T]) -> T:
        import redis

        try:
            return call_with_reconnect(
                call,
                transient=(redis.ConnectionError, redis.TimeoutError),
                what=what,
                url=self.url.redacted,
                window=float(self.url.options.get("reconnect_window", "30")),
                on_retry=self.client.connection_pool.disconnect,
            )
        except redis.ResponseError as exc:
            if str(exc).startswith("NOGROUP"):
                raise _GroupMissingError(f"Redis at {self.url.redacted}: {exc}") from exc
            raise BackendError(f"Redis at {self.url.redacted} failed to {what}: {exc}") from exc
        except redis.RedisError as exc:
            raise BackendError(f"Redis at {self.url.redacted} failed to {what}: {exc}") from exc


class RedisStreamSource:
    """One member of a Redis Streams consumer group."""

    def __init__(self, url: BrokerUrl, consumer_name: str) -> None:
        self.url = url
        self.stream = url.option("stream")
        self.group = url.option("group")
        self.consumer_name = consumer_name
        self.visibility = float(url.options.get("visibility", "30"))
        self.visibility_ms = int(self.visibility * 1000)
        self._redis = _RedisCaller(url)
        self._group_ready = False

    def check_reachable(self) -> None:
        _check_reachable(self._redis.client, self.url)

    def _ensure_group(self) -> None:
        import redis

        if self._group_ready:
            return

        def create() -> None:
            try:
                self._redis.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

        self._redis("create the consumer group", create)
        self._group_ready = True

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        self._ensure_group()
        try:
            return self._receive(max_messages, timeout)
        except _GroupMissingError:
            # A restart without persistence lost the group (and the stream): start it again.
            logger.warning(
                "consumer group %s vanished from %s; recreating it", self.group, self.url.redacted
            )
            self._group_ready = False
            self._ensure_group()
            return self._receive(max_messages, timeout)

    def _receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            deliveries = self._reclaim(max_messages)
            if not deliveries:
                block = max(0.0, min(BLOCK_SLICE_SECONDS, deadline - time.monotonic()))
                deliveries = self._read_new(max_messages, block)
            if deliveries or time.monotonic() >= deadline:
                return deliveries

    def _reclaim(self, limit: int) -> list[Delivery]:
        client = self._redis.client
        reply: Any = self._redis(
            "reclaim idle entries",
            lambda: client.xautoclaim(
                self.stream, self.group, self.consumer_name, self.visibility_ms, "0-0", count=limit
            ),
        )
        entries = [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]
        if not entries:
            return []
        counts = self._delivery_counts([entry_id for entry_id, _ in entries])
        return [
            self._delivery(entry_id, fields, counts.get(entry_id, 2))
            for entry_id, fields in entries
        ]

    def _delivery_counts(self, entry_ids: list[bytes]) -> dict[bytes, int]:
        client = self._redis.client
        pending: Any = self._redis(
            "read delivery counts",
            lambda: client.xpending_range(
                self.stream,
                self.group,
                min=entry_ids[0],
                max=entry_ids[-1],
                count=len(entry_ids) * 2 + 10,
                consumername=self.consumer_name,
            ),
        )
        return {_as_bytes(item["message_id"]): int(item["times_delivered"]) for item in pending}

    def _read_new(self, limit: int, block_seconds: float) -> list[Delivery]:
        client = self._redis.client
        block_ms = int(block_seconds * 1000)
        reply: Any = self._redis(
            "read new entries",
            lambda: client.xreadgroup(
                self.group,
                self.consumer_name,
                {self.stream: ">"},
                count=limit,
                block=block_ms if block_ms > 0 else None,
            ),
        )
        if not reply:
            return []
        return [self._delivery(entry_id, fields, 1) for entry_id, fields in reply[0][1]]

    def _delivery(self, entry_id: bytes, fields: dict[bytes, bytes], attempts: int) -> Delivery:
        return Delivery(
            payload=fields.get(PAYLOAD_FIELD, b""),
            receipt=_as_bytes(entry_id).decode(),
            attempts=attempts,
        )

    def acknowledge(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            ids = [d.receipt for d in deliveries]
            self._redis(
                "acknowledge", lambda: self._redis.client.xack(self.stream, self.group, *ids)
            )

    def publish_and_acknowledge(
        self, outputs: Sequence[tuple[Sink, Sequence[bytes]]], deliveries: Sequence[Delivery]
    ) -> bool:
        mine = outputs_on_this_broker(
            outputs, RedisStreamSink, lambda sink: sink.url.server == self.url.server
        )
        if mine is None:
            return False

        def exchange() -> None:
            transaction = self._redis.client.pipeline(transaction=True)
            for sink, payloads in mine:
                _append(transaction, sink.stream, payloads)
            if deliveries:
                transaction.xack(self.stream, self.group, *(d.receipt for d in deliveries))
            transaction.execute()

        self._redis("publish and acknowledge", exchange)
        return True

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            ids: list[Any] = [d.receipt for d in deliveries]
            client = self._redis.client
            self._redis(
                "release",
                lambda: client.xclaim(
                    self.stream,
                    self.group,
                    self.consumer_name,
                    0,
                    ids,
                    idle=RELEASED_IDLE_MS,
                    justid=True,
                ),
            )

    def lag(self) -> int | None:
        self._ensure_group()
        groups: Any = self._redis(
            "read the group's lag", lambda: self._redis.client.xinfo_groups(self.stream)
        )
        for group in groups:
            if _as_bytes(group["name"]).decode() == self.group:
                waiting = group.get("lag")
                if waiting is None:  # Redis cannot tell after deletions inside the range
                    return None
                return int(waiting) + int(group["pending"])
        return None

    def close(self) -> None:
        self._redis.client.close()


class RedisStreamSink:
    """Appends results to a stream: ``redis://host:port/db?stream=out``."""

    def __init__(self, url: BrokerUrl) -> None:
        self.url = url
        self.stream = url.option("stream")
        self._redis = _RedisCaller(url)

    def check_reachable(self) -> None:
        _check_reachable(self._redis.client, self.url)

    def publish(self, payloads: Sequence[bytes]) -> None:
        def append_all() -> None:
            pipeline = self._redis.client.pipeline(transaction=False)
            _append(pipeline, self.stream, payloads)
            pipeline.execute()

        if payloads:
            self._redis("publish", append_all)

    def close(self) -> None:
        self._redis.client.close()


def _append(pipeline: redis.client.Pipeline, stream: str, payloads: Sequence[bytes]) -> None:
    for payload in payloads:
        pipeline.xadd(stream, {PAYLOAD_FIELD: payload})


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
