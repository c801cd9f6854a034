"""The fork server's protocol: every child's end is reported once, announced or reaped."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
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
        "task": str(task),
        "endpoint_url": None,
        "env": {"PATH": os.environ.get("PATH", "")},
        "log": str(tmp_path / f"{job}.log"),
        "cwd": str(tmp_path),
    }
    assert process.stdin is not None
    process.stdin.write((json.dumps(request) + "\n").encode())
    process.stdin.flush()


class _Lines:
    """JSON lines from the server's stdout, read unbuffered so that select() sees them all."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.pending = b""

    def next(self, timeout: float) -> Any | None:
        while b"\n" not in self.pending:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.fd, 65536)
            assert chunk, "the fork server closed its output"
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def until_exits(self, count: int, *, quiet: float) -> list[Any]:
        """Messages until ``count`` exits were seen, then whatever comes within ``quiet`` s."""
        messages: list[Any] = []
        while True:
            enough = sum(1 for m in messages if "exit" in m) >= count
            message = self.next(quiet if enough else 30.0)
            if message is None:
                assert enough, f"only {messages} within 30 s"
                return messages
            messages.append(message)


def test_every_child_end_is_reported_exactly_once(
    zygote: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    lines = _Lines(zygote)
    assert lines.next(30.0) == {"ready": True}
    blocking = tmp_path / "task.fifo"
    os.mkfifo(blocking)  # reading it blocks: this child runs until it is killed
    _request(zygote, "killed", blocking, tmp_path)
    started = lines.next(30.0)
    assert started is not None and started["job"] == "killed"
    killed_pid = started["pid"]
    for number in range(5):  # children that end by themselves announce their exit status
        _request(zygote, f"quick-{number}", tmp_path / "missing-task.json", tmp_path)
    os.kill(killed_pid, signal.SIGKILL)
    messages = lines.until_exits(6, quiet=1.0)
    exits = [m for m in messages if "exit" in m]
    pids = [m["pid"] for m in exits]
    assert len(pids) == len(set(pids)) == 6, exits
    codes = {m["pid"]: m["exit"] for m in exits}
    assert codes.pop(killed_pid) == -signal.SIGKILL
    assert set(codes.values()) == {2}  # the runtime's "no task document" status


def test_a_request_still_runs_when_the_waiting_child_died(
    zygote: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    import psutil

    lines = _Lines(zygote)
    assert lines.next(30.0) == {"ready": True}
    deadline = time.monotonic() + 10
    while not (waiting := psutil.Process(zygote.pid).children()):
        assert time.monotonic() < deadline, "no child was forked ahead"
        time.sleep(0.01)
    (spare,) = waiting
    spare.kill()
    spare.wait(timeout=10)
    _request(zygote, "after", tmp_path / "missing-task.json", tmp_path)
    messages = lines.until_exits(2, quiet=0.5)
    (started,) = [m for m in messages if m.get("job") == "after"]
    assert started["pid"] != spare.pid
    assert {"pid": started["pid"], "exit": 2} in messages


def test_libraries_preloaded_on_request_are_imported_before_the_next_fork(
    tmp_path: Path,
) -> None:
    import psutil

    (tmp_path / "probe_library.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(__file__).with_name('imported-by').write_text(str(os.getpid()))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlyard.backends.local.zygote"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=environment,
    )
    try:
        lines = _Lines(process)
        assert lines.next(30.0) == {"ready": True}
        deadline = time.monotonic() + 10
        while not (waiting := psutil.Process(process.pid).children()):
            assert time.monotonic() < deadline, "no child was forked ahead"
            time.sleep(0.01)
        (spare_without,) = waiting
        assert process.stdin is not None
        # A library that fails to import is the step's business: the server carries on.
        request = {"preload": ["probe_library", "no_such_library_anywhere"]}
        process.stdin.write((json.dumps(request) + "\n").encode())
        process.stdin.flush()
        _request(process, "after", tmp_path / "missing-task.json", tmp_path)
        messages = lines.until_exits(2, quiet=0.5)
        assert (tmp_path / "imported-by").read_text() == str(process.pid)
        (started,) = [m for m in messages if m.get("job") == "after"]
        # The child forked before the import was let go; the step got one forked after it.
        assert started["pid"] != spare_without.pid
        assert {"pid": spare_without.pid, "exit": 0} in messages
        assert {"pid": started["pid"], "exit": 2} in messages
        # Asking again for what it has imported already keeps the child forked ahead.
        spares = {child.pid for child in psutil.Process(process.pid).children()}
        process.stdin.write((json.dumps({"preload": ["probe_library"]}) + "\n").encode())
        process.stdin.flush()
        assert lines.next(0.5) is None  # no child let go
        assert {child.pid for child in psutil.Process(process.pid).children()} == spares
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)
