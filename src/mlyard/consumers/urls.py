"""Sources and sinks by URL; each broker's client is imported only when its scheme is used.

    sqlite:///path/to/queue.db?topic=in            the embedded queue (the local default)
    redis://127.0.0.1:6379/0?stream=in&group=g     Redis Streams with a consumer group
    nats://127.0.0.1:4222?stream=S&subject=in&durable=d   NATS JetStream, durable pull consumer
    kafka://127.0.0.1:9092?topic=in&group=g        Kafka (or a Kafka-compatible broker)

Sources need the group options (``group``/``durable``); sinks need only where to publish
(``topic``/``stream``/``subject``). Credentials are never part of stored settings: a password in
a URL is only ever shown redacted.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from mlyard.errors import ConfigError
from mlyard.extras import require_extra

if TYPE_CHECKING:
    from mlyard.consumers.base import Sink, Source

#: scheme -> ("module", "SourceClass", "SinkClass")
BROKERS: dict[str, tuple[str, str, str]] = {
    "sqlite": ("mlyard.consumers.brokers.sqlite_queue", "SqliteQueueSource", "SqliteQueueSink"),
    "redis": ("mlyard.consumers.brokers.redis_streams", "RedisStreamSource", "RedisStreamSink"),
    "nats": ("mlyard.consumers.brokers.nats_jetstream", "JetStreamSource", "JetStreamSink"),
    "kafka": ("mlyard.consumers.brokers.kafka", "KafkaSource", "KafkaSink"),
}
EXTRAS = {"redis": "redis", "nats": "nats", "kafka": "kafka"}


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed source/sink URL."""

    scheme: str
    host: str | None
    port: int | None
    path: str
    options: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    password: str | None = None

    @property
    def server(self) -> tuple[str, str | None, int | None, str, str | None]:
        """What identifies the broker (and database) the URL points at, options aside."""
        return (self.scheme, self.host, self.port, self.path, self.username)

    @property
    def redacted(self) -> str:
        """The URL for messages and logs: never with a password."""
        auth = f"{self.username}:***@" if self.password else ""
        location = f"{self.host or ''}{f':{self.port}' if self.port else ''}"
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.scheme}://{auth}{location}{self.path}" + (f"?{query}" if query else "")

    def option(self, name: str, default: str | None = None) -> str:
        value = self.options.get(name, default)
        if value is None:
            raise ConfigError(
                f"The URL {self.redacted} needs the option {name!r}.",
                hint=f"Add ?{name}=... to it (see `mlyard consume --help` for the URL forms).",
            )
        return value


def parse_broker_url(url: str) -> BrokerUrl:
    parts = urlsplit(url)
    if parts.scheme not in BROKERS:
        raise ConfigError(
            f"{url.split('://')[0]!r} is not a broker mlyard knows (in {url!r}).",
            hint="Use sqlite:///queue.db?topic=..., redis://..., nats://... or kafka://....",
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"The port in {url!r} is not a number.") from exc
    return BrokerUrl(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        path=parts.path,
        options=dict(parse_qsl(parts.query)),
        username=parts.username,
        password=parts.password,
    )


def broker_extras(*urls: str) -> list[str]:
    """The optional extras the brokers of ``urls`` need (none for the embedded queue)."""
    schemes = (urlsplit(url).scheme for url in urls)
    return sorted({EXTRAS[scheme] for scheme in schemes if scheme in EXTRAS})


def _broker_class(url: BrokerUrl, index: int) -> type:
    module_name, *classes = BROKERS[url.scheme]
    if url.scheme in EXTRAS:
        require_extra(EXTRAS[url.scheme], needed_by=f"The {url.scheme} broker")
    module = importlib.import_module(module_name)
    broker_class: type = getattr(module, classes[index])
    return broker_class


def open_source(url: str, consumer_name: str) -> Source:
    """The source at ``url``; ``consumer_name`` identifies this worker in its group."""
    parsed = parse_broker_url(url)
    source: Source = _broker_class(parsed, 0)(parsed, consumer_name)
    return source


def open_sink(url: str) -> Sink:
    parsed = parse_broker_url(url)
    sink: Sink = _broker_class(parsed, 1)(parsed)
    return sink
