"""NATS JetStream with a durable pull consumer:
``nats://host:port?stream=S&subject=in&durable=d[&visibility=30]``.

The stream is created when missing (capturing ``subject``). A source is one subscriber of the
durable pull consumer (``ack_wait`` = visibility, explicit acks), so every worker with the same
``durable`` shares the work. ``attempts`` is JetStream's own delivery count; ``release`` is a NAK
(redelivered at once). A sink publishes a batch and waits for JetStream's ack of each message.

nats-py is asyncio-only: each source/sink runs a private event loop in a daemon thread and
calls it synchronously. nats-py reconnects by itself; when it gives up, the next call opens a
new connection, with backoff, until ``reconnect_window`` seconds (default 30) have passed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from mlyard.consumers.base import Delivery
from mlyard.consumers.brokers.reconnect import call_with_reconnect
from mlyard.consumers.urls import BrokerUrl
from mlyard.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

T = TypeVar("T")
logger = logging.getLogger(__name__)
#: Extra seconds a synchronous caller waits beyond the operation's own timeout.
CALL_MARGIN_SECONDS = 10.0
#: Longest wait for JetStream to acknowledge published messages (nats-py's request default).
ACK_TIMEOUT_SECONDS = 5.0


class _EventLoopThread:
    """A private asyncio loop in a daemon thread; ``run`` waits for a coroutine's result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


def _server_url(url: BrokerUrl) -> str:
    auth = f"{url.username}:{url.password}@" if url.username and url.password else ""
    return f"nats://{auth}{url.host or '127.0.0.1'}:{url.port or 4222}"


def _probe(url: BrokerUrl) -> None:
    """Fail fast with a ConfigError when nothing listens (nats-py would retry for long)."""
    try:
        socket.create_connection((url.host or "127.0.0.1", url.port or 4222), timeout=3).close()
    except OSError as exc:
        raise ConfigError(
            f"NATS at {url.redacted} is not reachable: {exc}",
            hint="Start nats-server with JetStream (scripts/services/nats.sh start DIR) "
            "or fix the host and port.",
        ) from exc


async def _log_error(exc: Exception) -> None:
    logger.warning("NATS connection error: %s", exc)


async def _log_disconnect() -> None:
    logger.warning("NATS disconnected; reconnecting")


class _JetStreamConnection:
    """One NATS connection and its JetStream context, (re)opened on demand, stream ensured."""

    def __init__(self, url: BrokerUrl, thread_name: str) -> None:
        self.url = url
        self.stream = url.option("stream")
        self.subject = url.option("subject")
        self.window = float(url.options.get("reconnect_window", "30"))
        self.loop = _EventLoopThread(thread_name)
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None

    async def connect(self) -> JetStreamContext:
        import nats
        from nats.js.errors import NotFoundError

        if self.nc is not None and not self.nc.is_closed and self.js is not None:
            return self.js
        self.nc = await nats.connect(
            _server_url(self.url),
            connect_timeout=3,
            allow_reconnect=True,
            max_reconnect_attempts=int(self.window / 0.5),
            reconnect_time_wait=0.5,
            error_cb=_log_error,
            disconnected_cb=_log_disconnect,
        )
        self.js = self.nc.jetstream()
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            await self.js.add_stream(name=self.stream, subjects=[self.subject])
        return self.js

    def call(self, what: str, coroutine_factory: Any, timeout: float = 10.0) -> Any:
        """Run ``coroutine_factory()`` on the loop, reconnecting on connection errors."""
        import nats.errors
        import nats.js.errors

        transient = (
            nats.errors.ConnectionClosedError,
            nats.errors.NoServersError,
            nats.errors.StaleConnectionError,
            nats.errors.OutboundBufferLimitError,
            nats.js.errors.ServiceUnavailableError,
            nats.errors.NoRespondersError,
            nats.errors.TimeoutError,
            ConnectionError,
            OSError,
        )
        try:
            return call_with_reconnect(
                lambda: self.loop.run(coroutine_factory(), timeout + CALL_MARGIN_SECONDS),
                transient=transient,
                what=what,
                url=self.url.redacted,
                window=self.window,
                on_retry=self.forget,
            )
        except nats.errors.Error as exc:
            raise BackendError(f"NATS at {self.url.redacted} failed to {what}: {exc}") from exc

    def forget(self) -> None:
        """Drop a connection that gave up, so the next call opens a new one."""
        if self.nc is not None and self.nc.is_closed:
            self.nc = None
            self.js = None

    def close(self) -> None:
        nc = self.nc
        if nc is not None and not nc.is_closed:
            try:
                self.loop.run(nc.close(), 10)
            except Exception as exc:  # closing a broken connection must not hide the real error
                logger.debug("closing NATS connection: %s", exc)
        self.nc = None
        self.loop.stop()


class JetStreamSource:
    """One subscriber of a durable JetStream pull consumer."""

    def __init__(self, url: BrokerUrl, consumer_name: str) -> None:
        self.url = url
        self.durable = url.option("durable")
        self.consumer_name = consumer_name
        self.visibility = float(url.options.get("visibility", "30"))
        self._connection = _JetStreamConnection(url, f"nats-source-{consumer_name}")
        self._subscription: Any = None
        self._subscribed_to: Client | None = None
        #: receipt -> message, for acks and naks (a receipt is the stream sequence).
        self._in_flight: dict[str, Msg] = {}

    def check_reachable(self) -> None:
        _probe(self.url)
        try:
            self._connection.loop.run(self._subscribe(), 15)
        except Exception as exc:
            raise ConfigError(
                f"NATS at {self.url.redacted} cannot serve JetStream consumer "
                f"{self.durable!r}: {exc}",
                hint="Start nats-server with -js (JetStream) and check the stream and subject.",
            ) from exc

    async def _subscribe(self) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig

        js = await self._connection.connect()
        if self._subscription is None or self._subscribed_to is not self._connection.nc:
            self._subscription = await js.pull_subscribe(
                self._connection.subject,
                durable=self.durable,
                stream=self._connection.stream,
                config=ConsumerConfig(
                    ack_policy=AckPolicy.EXPLICIT, ack_wait=self.visibility, max_deliver=-1
                ),
            )
            self._subscribed_to = self._connection.nc
        return self._subscription

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        import nats.errors
        import nats.js.errors

        async def fetch() -> list[Msg]:
            subscription = await self._subscribe()
            try:
                messages: list[Msg] = await subscription.fetch(
                    max_messages, timeout=max(timeout, 0.05)
                )
            except nats.errors.TimeoutError:
                return []
            return messages

        messages: list[Msg] = self._connection.call("receive", fetch, timeout)
        deliveries = []
        for message in messages:
            metadata = message.metadata
            receipt = str(metadata.sequence.stream)
            self._in_flight[receipt] = message
            deliveries.append(
                Delivery(
                    payload=message.data,
                    receipt=receipt,
                    attempts=metadata.num_delivered,
                    headers=dict(message.headers or {}),
                )
            )
        return deliveries

    def _settle(self, deliveries: Sequence[Delivery], what: str, positive: bool) -> None:
        messages = [
            self._in_flight.pop(d.receipt) for d in deliveries if d.receipt in self._in_flight
        ]
        if not messages:
            return

        async def settle() -> None:
            for message in messages:
                await (message.ack() if positive else message.nak())
            if self._connection.nc is not None:
                await self._connection.nc.flush()

        self._connection.call(what, settle)

    def acknowledge(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "acknowledge", positive=True)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "release", positive=False)

    def lag(self) -> int | None:
        async def info() -> int:
            js = await self._connection.connect()
            consumer = await js.consumer_info(self._connection.stream, self.durable)
            return int(consumer.num_pending or 0) + int(consumer.num_ack_pending or 0)

        waiting: int = self._connection.call("read the consumer's lag", info)
        return waiting

    def close(self) -> None:
        self._in_flight.clear()
        self._connection.close()


class JetStreamSink:
    """Publishes to a JetStream subject: ``nats://host:port?stream=S&subject=out``."""

    def __init__(self, url: BrokerUrl) -> None:
        self.url = url
        self._connection = _JetStreamConnection(url, "nats-sink")

    def check_reachable(self) -> None:
        _probe(self.url)
        try:
            self._connection.loop.run(self._connection.connect(), 15)
        except Exception as exc:
            raise ConfigError(
                f"NATS at {self.url.redacted} cannot serve JetStream: {exc}",
                hint="Start nats-server with -js (JetStream) and check the stream and subject.",
            ) from exc

    def publish(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return

        async def publish_all() -> None:
            js = await self._connection.connect()
            subject, stream = self._connection.subject, self._connection.stream
            # Send them all, then wait for JetStream's acks together: one round trip a batch,
            # and no task per message as with gathering publish() calls.
            acks: list[asyncio.Future[Any]] = []
            try:
                for payload in payloads:
                    acks.append(await js.publish_async(subject, payload, stream=stream))
                await asyncio.wait_for(asyncio.gather(*acks), ACK_TIMEOUT_SECONDS)
            finally:
                for ack in acks:  # acks that will never come (the server went away)
                    ack.cancel()  # frees their slots among nats-py's pending publishes

        self._connection.call("publish", publish_all, timeout=ACK_TIMEOUT_SECONDS)

    def close(self) -> None:
        self._connection.close()
