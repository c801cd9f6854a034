"""Replicas of a killed ``mlyard consume`` supervisor stop by themselves: none runs on unwatched."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.consumers.urls import open_sink, open_source
from mlyard.settings import load_settings

pytestmark = pytest.mark.integration


def _replicas(supervisor: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The replica processes (multiprocessing's resource tracker is a child too)."""
    return [
        process
        for process in psutil.Process(supervisor.pid).children()
        if "resource_tracker" not in " ".join(process.cmdline())
    ]


def _wait_until_consuming(queue: str) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(4))
    ArtifactStore.from_settings(load_settings()).write_key("objects/a.npy", buffer.getvalue())
    message = {"id": "1", "objects": ["objects/a.npy"]}
    open_sink(f"{queue}?topic=in").publish([json.dumps(message).encode()])
    results = open_source(f"{queue}?topic=out", "reader")
    deadline = time.monotonic() + 90
    while not results.receive(10, 0.5):
        assert time.monotonic() < deadline, "no replica answered"


@pytest.mark.parametrize("killed_while", ["consuming", "starting"])
def test_replicas_stop_when_the_supervisor_is_killed(tmp_path: Path, killed_while: str) -> None:
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "mlyard.cli", "consume",
         "--source", f"{queue}?topic=in", "--sink", f"{queue}?topic=out",
         "--model", "noop", "--replicas", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=dict(os.environ),
    )  # fmt: skip
    try:
        if killed_while == "consuming":
            _wait_until_consuming(queue)
        deadline = time.monotonic() + 60
        while len(replicas := _replicas(supervisor)) < 2:  # "starting": still importing
            assert time.monotonic() < deadline, "the supervisor did not start 2 replicas"
            time.sleep(0.05)
        supervisor.send_signal(signal.SIGKILL)  # nothing forwards a signal any more
        supervisor.wait()
        _, alive = psutil.wait_procs(replicas, timeout=30)
        assert not alive, f"replicas still running after their supervisor died: {alive}"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        for child in psutil.Process().children(recursive=True):
            child.kill()
