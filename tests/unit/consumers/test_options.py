"""Where dead letters go by default, and how a worker fills a batch."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from mlyard.consumers.decoders import make_decoder
from mlyard.consumers.fetch import ObjectFetcher
from mlyard.consumers.options import default_dead_letter
from mlyard.consumers.urls import open_sink, open_source
from mlyard.consumers.worker import ConsumerWorker, WorkerOptions
from mlyard.errors import ConfigError
from mlyard.settings import load_settings


@pytest.mark.parametrize(
    ("source", "dead"),
    [
        ("sqlite:///tmp/q.db?topic=in&visibility=2", "sqlite:///tmp/q.db?topic=in.dead"),
        ("redis://127.0.0.1:6379/0?stream=in&group=g", "redis://127.0.0.1:6379/0?stream=in.dead"),
        ("kafka://127.0.0.1:9092?topic=in&group=g", "kafka://127.0.0.1:9092?topic=in.dead"),
    ],
)
def test_dead_letters_default_to_the_topic_dot_dead(source: str, dead: str) -> None:
    assert default_dead_letter(source) == dead


def test_nats_needs_an_explicit_dead_letter_destination() -> None:
    with pytest.raises(ConfigError, match="--dead-letter"):
        default_dead_letter("nats://127.0.0.1:4222?stream=S&subject=in&durable=d")


def _worker(queue: str, max_wait: float) -> ConsumerWorker:
    return ConsumerWorker(
        source=open_source(f"{queue}?topic=in", "w"),
        sink=open_sink(f"{queue}?topic=out"),
        dead_letters=open_sink(f"{queue}?topic=in.dead"),
        fetcher=ObjectFetcher(load_settings()),
        decode=make_decoder("npy"),
        model_name="noop",
        predict=lambda batch: [0] * len(batch),
        options=WorkerOptions(batch_size=5, receive_timeout=0.5, max_wait=max_wait),
    )


def _publish_later(queue: str, count: int, delay: float) -> threading.Timer:
    messages = [json.dumps({"objects": [f"k{i}"]}).encode() for i in range(count)]
    timer = threading.Timer(delay, lambda: open_sink(f"{queue}?topic=in").publish(messages))
    timer.start()
    return timer


def test_a_batch_waits_up_to_max_wait_for_more_messages(tmp_path: Path) -> None:
    queue = f"sqlite:///{tmp_path / 'q.db'}"
    open_sink(f"{queue}?topic=in").publish([b"{}"])
    timer = _publish_later(queue, 6, 0.1)
    batch = _worker(queue, max_wait=2.0).receive_batch()
    timer.join()
    assert len(batch) == 5  # the first, then more up to --batch-size


def test_without_max_wait_a_batch_is_what_was_there(tmp_path: Path) -> None:
    queue = f"sqlite:///{tmp_path / 'q.db'}"
    open_sink(f"{queue}?topic=in").publish([b"{}"])
    timer = _publish_later(queue, 6, 0.2)
    batch = _worker(queue, max_wait=0.0).receive_batch()
    timer.join()
    assert len(batch) == 1
