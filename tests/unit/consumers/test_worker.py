"""The consumer worker on the embedded queue: at-least-once, dead letters, batching."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from mlyard.consumers.decoders import make_decoder
from mlyard.consumers.fetch import ObjectFetcher
from mlyard.consumers.urls import open_sink, open_source
from mlyard.consumers.worker import ConsumerWorker, WorkerOptions
from mlyard.settings import load_settings


def _npy(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class Harness:
    def __init__(self, tmp_path: Path, predict: Any = None, max_attempts: int = 3) -> None:
        self.queue = f"sqlite:///{tmp_path / 'queue.db'}"
        self.settings = load_settings()
        self.fetcher = ObjectFetcher(self.settings)
        self.calls: list[int] = []

        def record(batch: np.ndarray[Any, Any]) -> list[Any]:
            self.calls.append(len(batch))
            return [float(row.sum()) for row in batch]

        self.worker = ConsumerWorker(
            source=open_source(f"{self.queue}?topic=in&visibility=1", "w1"),
            sink=open_sink(f"{self.queue}?topic=out"),
            dead_letters=open_sink(f"{self.queue}?topic=in.dead"),
            fetcher=self.fetcher,
            decode=make_decoder("npy"),
            model_name="sum",
            predict=predict or record,
            options=WorkerOptions(batch_size=16, receive_timeout=0.2, max_attempts=max_attempts),
        )

    def put_object(self, key: str, array: np.ndarray[Any, Any]) -> str:
        self.fetcher.store.write_key(key, _npy(array))
        return key

    def publish(self, *messages: object) -> None:
        raw = [m if isinstance(m, bytes) else json.dumps(m).encode() for m in messages]
        open_sink(f"{self.queue}?topic=in").publish(raw)

    def drain(self, topic: str) -> list[dict[str, Any]]:
        source = open_source(f"{self.queue}?topic={topic}", "reader")
        got = source.receive(1000, 0.1)
        source.acknowledge(got)
        return [json.loads(d.payload) for d in got]

    def run_once(self) -> None:
        deliveries = self.worker.source.receive(16, 0.5)
        self.worker.process(deliveries)


def test_results_are_published_then_acknowledged_in_one_model_call(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    keys = [harness.put_object(f"events/{i}.npy", np.full((2, 2), i)) for i in range(5)]
    harness.publish(*({"id": str(i), "objects": [key]} for i, key in enumerate(keys)))
    harness.run_once()
    assert harness.calls == [5]
    results = harness.drain("out")
    assert [r["results"][0]["predictions"] for r in results] == [[4.0 * i] for i in range(5)]
    assert results[0]["data"] == {"id": "0", "objects": ["events/0.npy"]}
    assert results[0]["model"] == "sum"
    assert harness.worker.source.lag() == 0


def test_malformed_and_missing_objects_are_dead_lettered_at_once(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.publish(b"not json", {"objects": []}, {"objects": ["events/missing.npy"]})
    harness.run_once()
    dead = harness.drain("in.dead")
    assert len(dead) == 3
    assert dead[0]["error"].startswith("malformed message")
    assert "missing object" in dead[2]["error"]
    assert harness.worker.source.lag() == 0


def test_a_failing_model_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    def broken(batch: np.ndarray[Any, Any]) -> list[Any]:
        raise RuntimeError("CUDA out of memory")

    harness = Harness(tmp_path, predict=broken, max_attempts=2)
    harness.publish({"objects": [harness.put_object("a.npy", np.zeros(3))]})
    harness.run_once()  # attempt 1: released for redelivery
    assert harness.drain("in.dead") == []
    harness.run_once()  # attempt 2: out of attempts
    dead = harness.drain("in.dead")
    assert dead[0]["attempts"] == 2 and "CUDA out of memory" in dead[0]["error"]


def test_a_message_the_model_fails_on_does_not_fail_its_batch(tmp_path: Path) -> None:
    def refuses_negatives(batch: np.ndarray[Any, Any]) -> list[Any]:
        if (batch < 0).any():
            raise ValueError("negative input")
        return [float(row.sum()) for row in batch]

    harness = Harness(tmp_path, predict=refuses_negatives, max_attempts=2)
    good = [harness.put_object(f"good/{i}.npy", np.full(3, i)) for i in range(3)]
    poison = harness.put_object("poison.npy", np.full(3, -1))
    harness.publish(*({"id": key, "objects": [key]} for key in [good[0], poison, *good[1:]]))
    harness.run_once()
    assert sorted(r["data"]["id"] for r in harness.drain("out")) == sorted(good)
    assert harness.drain("in.dead") == []  # released for another attempt
    harness.run_once()
    [dead] = harness.drain("in.dead")
    assert dead["data"]["id"] == poison and "negative input" in dead["error"]
    assert harness.worker.source.lag() == 0


def test_stop_finishes_the_batch_in_hand(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.publish({"objects": [harness.put_object("b.npy", np.ones(2))]})
    stop = threading.Event()
    thread = threading.Thread(target=harness.worker.run, args=(stop,))
    thread.start()
    deadline = 50
    while harness.worker.source.lag() and deadline:
        stop.wait(0.1)
        deadline -= 1
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(harness.drain("out")) == 1


def test_results_to_another_queue_are_published_then_acknowledged(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    elsewhere = f"sqlite:///{tmp_path / 'results.db'}"
    harness.worker.sink = open_sink(f"{elsewhere}?topic=out")
    harness.publish({"id": "1", "objects": [harness.put_object("a.npy", np.ones(3))]})
    harness.run_once()
    reader = open_source(f"{elsewhere}?topic=out", "reader")
    [result] = reader.receive(10, 0.5)
    assert json.loads(result.payload)["results"][0]["predictions"] == [3.0]
    assert harness.worker.source.lag() == 0
    assert harness.drain("out") == []


def test_the_lag_is_asked_once_a_second_not_once_a_batch(tmp_path: Path) -> None:
    # Asking costs a broker round trip or a count (Kafka: two requests per partition).
    harness = Harness(tmp_path)
    source = harness.worker.source
    asked: list[int | None] = []
    stop = threading.Event()

    def lag() -> int | None:
        waiting = type(source).lag(source)
        asked.append(waiting)
        if waiting == 0:
            stop.set()
        return waiting

    source.lag = lag  # type: ignore[method-assign]
    key = harness.put_object("a.npy", np.ones(2))
    harness.publish(*({"id": str(i), "objects": [key]} for i in range(160)))  # 10 batches
    timer = threading.Timer(1.5, stop.set)  # the second ask, a second later, finds none left
    timer.start()
    harness.worker.run(stop)
    timer.cancel()
    assert len(harness.drain("out")) == 160
    assert 1 <= len(asked) <= 2


def test_a_batch_slower_than_the_visibility_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def slow(batch: np.ndarray[Any, Any]) -> list[Any]:
        time.sleep(1.2)  # the harness's source has visibility=1
        return [0] * len(batch)

    harness = Harness(tmp_path, predict=slow)
    harness.publish({"id": "a", "objects": [harness.put_object("a.npy", np.zeros(2))]})
    overdue = "mlyard_consumer_overdue_batches_total"
    before = REGISTRY.get_sample_value(overdue) or 0.0
    with caplog.at_level(logging.WARNING, logger="mlyard.consumers.worker"):
        harness.run_once()
    assert REGISTRY.get_sample_value(overdue) == before + 1
    assert "longer than the source's visibility of 1 s" in caplog.text
    assert "visibility=SECONDS" in caplog.text
    assert len(harness.drain("out")) == 1


def test_object_keys_cannot_escape_the_store(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.publish({"objects": ["../../etc/passwd"]})
    harness.run_once()
    dead = harness.drain("in.dead")
    assert len(dead) == 1
    assert not Path(tmp_path / "etc").exists()


@pytest.mark.parametrize("name", ["nope", "nosuchmodule:f"])
def test_unknown_decoders_are_refused(name: str) -> None:
    from mlyard.errors import ConfigError

    with pytest.raises(ConfigError):
        make_decoder(name)
