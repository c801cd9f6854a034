"""The consumer worker reading objects from a real S3 server (SeaweedFS, started by
scripts/services/seaweedfs.sh): store keys and s3:// URIs, missing objects dead-lettered with the
reason, and a store that goes away mid-run: no message dead-lettered or lost, every one
processed once it is back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlyard.consumers.fetch import ObjectStoreUnavailableError
from tests.integration.consumers.test_brokers import closed_port
from tests.servicekit import start_service, stop_service
from tests.unit.consumers.test_worker import Harness

pytestmark = pytest.mark.integration


@pytest.fixture
def seaweedfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private S3 server on a fixed port (so it can come back on the same address) holding
    the artifact store; yields its state directory."""
    monkeypatch.setenv("SEAWEEDFS_S3_PORT", str(closed_port()))
    state = tmp_path / "seaweedfs"
    env = start_service("seaweedfs", state)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("MLYARD_STORAGE__ARTIFACTS", "s3://mlyard/events")
    monkeypatch.setenv("MLYARD_STORAGE__ENDPOINT_URL", env["S3_ENDPOINT_URL"])
    yield state
    stop_service("seaweedfs", state)


def test_keys_and_s3_uris_are_fetched_and_missing_ones_dead_lettered(
    seaweedfs: Path, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    harness.put_object("cams/0.npy", np.full(4, 1.0))
    harness.put_object("cams/1.npy", np.full(4, 2.0))
    harness.publish(
        {"id": "key", "objects": ["cams/0.npy"]},
        {"id": "uri", "objects": ["s3://mlyard/events/cams/1.npy"]},
        {"id": "both", "objects": ["cams/0.npy", "s3://mlyard/events/cams/1.npy"]},
        {"id": "no-key", "objects": ["cams/none.npy"]},
        {"id": "no-uri", "objects": ["s3://mlyard/events/cams/none.npy"]},
    )
    harness.run_once()
    results = {r["data"]["id"]: r["results"] for r in harness.drain("out")}
    assert results == {
        "key": [{"object": "cams/0.npy", "predictions": [4.0]}],
        "uri": [{"object": "s3://mlyard/events/cams/1.npy", "predictions": [8.0]}],
        "both": [
            {"object": "cams/0.npy", "predictions": [4.0]},
            {"object": "s3://mlyard/events/cams/1.npy", "predictions": [8.0]},
        ],
    }
    dead = {d["data"]["id"]: d["error"] for d in harness.drain("in.dead")}
    assert set(dead) == {"no-key", "no-uri"}
    assert all(error.startswith("missing object:") for error in dead.values())


def test_a_store_that_goes_away_costs_no_message(
    seaweedfs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness = Harness(tmp_path, max_attempts=2)
    count = 20
    for index in range(count):
        harness.put_object(f"cams/{index}.npy", np.full(4, float(index)))
    harness.publish(*({"id": str(i), "objects": [f"cams/{i}.npy"]} for i in range(count)))
    stop_service("seaweedfs", seaweedfs)

    # While the store is away a batch fails whole: released, not dead-lettered.
    deliveries = harness.worker.source.receive(16, 0.5)
    with pytest.raises(ObjectStoreUnavailableError, match="cannot be reached"):
        harness.worker.process(deliveries)
    assert harness.drain("in.dead") == [] and harness.drain("out") == []

    stop = threading.Event()
    worker = threading.Thread(target=harness.worker.run, args=(stop,))
    with caplog.at_level(logging.WARNING, logger="mlyard.consumers.worker"):
        worker.start()
        time.sleep(3)  # more failed rounds than max_attempts
        start_service("seaweedfs", seaweedfs)  # the same port, objects and credentials
        results: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while len(results) < count and time.monotonic() < deadline:
            results += harness.drain("out")
            time.sleep(0.2)
        stop.set()
        worker.join(timeout=60)
    assert sorted(int(r["data"]["id"]) for r in results) == list(range(count))
    assert harness.drain("in.dead") == []
    assert "object store unavailable, retrying" in caplog.text
