"""The options of ``mlyard consume``, validated once at the command line and handed to every
replica process."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from mlyard.errors import ConfigError


@dataclass(frozen=True)
class ConsumerConfig:
    """Everything ``mlyard consume`` was told; picklable, so each replica process gets it."""

    source: str
    sink: str
    model: str
    dead_letter: str
    decoder: str = "npy"
    batch_size: int = 64
    max_wait: float = 0.05
    max_attempts: int = 3
    replicas: int = 1
    gpus: float = 0.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    consumer_name: str = ""
    fps: float = 1.0
    max_frames: int = 16


def default_dead_letter(source_url: str) -> str:
    """The source's own location with ``.dead`` appended to its topic or stream."""
    parts = urlsplit(source_url)
    options = dict(parse_qsl(parts.query))
    for key in ("topic", "stream"):
        if key in options and parts.scheme in ("sqlite", "redis", "kafka"):
            kept: dict[str, str] = {key: options[key] + ".dead"}
            # Not urlunsplit: it turns sqlite:///path into sqlite:/path.
            return f"{source_url.partition('?')[0]}?{urlencode(kept)}"
    raise ConfigError(
        f"Say where dead letters of {parts.scheme}:// messages go.",
        hint="Pass --dead-letter URL (e.g. a NATS subject covered by a stream of its own).",
    )
