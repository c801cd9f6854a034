"""The fork server's protocol: every child's end is reported once, announced or reaped."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def zygote() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mlyard.backends.local.zygote"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=10)


def _request(process: subprocess.Popen[bytes], job: str, task: Path, tmp_path: Path) -> None:
    request = {
        "job": job,
        "argv": [str(task)],
        "env": {"PATH": os.environ.get("PATH", "")},
        "log": str(tmp_path / f"{job}.log"),
        "cwd": str(tmp_path),
    }
    assert process.stdin is not None
    process.stdin.write((json.dumps(request) + "\n").encode())
    process.stdin.flush()


def _messages(process: subprocess.Popen[bytes], *, until: int, quiet: float) -> list[Any]:
    """Messages until ``until`` exits were seen, then whatever comes within ``quiet`` s more."""
    assert process.stdout is not None
    messages: list[Any] = []
    while True:
        exits = sum(1 for m in messages if "exit" in m)
        timeout = quiet if exits >= until else 30.0
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            assert exits >= until, f"only {messages} within 30 s"
            return messages
        messages.append(json.loads(process.stdout.readline()))


def test_every_child_end_is_reported_exactly_once(
    zygote: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    assert json.loads(zygote.stdout.readline()) == {"ready": True}  # type: ignore[union-attr]
    blocking = tmp_path / "task.fifo"
    os.mkfifo(blocking)  # reading it blocks: this child runs until it is killed
    _request(zygote, "killed", blocking, tmp_path)
    started = json.loads(zygote.stdout.readline())  # type: ignore[union-attr]
    assert started["job"] == "killed"
    killed_pid = started["pid"]
    for number in range(5):  # children that end by themselves announce their exit status
        _request(zygote, f"quick-{number}", tmp_path / "missing-task.json", tmp_path)
    os.kill(killed_pid, signal.SIGKILL)
    messages = _messages(zygote, until=6, quiet=1.0)
    exits = [m for m in messages if "exit" in m]
    pids = [m["pid"] for m in exits]
    assert len(pids) == len(set(pids)) == 6, exits
    codes = {m["pid"]: m["exit"] for m in exits}
    assert codes.pop(killed_pid) == -signal.SIGKILL
    assert set(codes.values()) == {2}  # the runtime's "no task document" status
