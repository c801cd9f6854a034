"""Timing one command: wall time and the peak memory of the process itself.

The peak memory is the high-water mark of the direct child's resident set (``VmHWM`` in
``/proc/PID/status``, polled until it exits), i.e. the orchestrator process alone: step processes,
fork servers and API servers it starts are not counted. (``wait4``/``time -v`` would report the
largest of any process the child reaped, which is not what is asked.)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class CommandFailedError(RuntimeError):
    """A benchmarked command exited non-zero or ran past its time limit."""


@dataclass(frozen=True)
class Sample:
    """One timed execution of a command."""

    wall_seconds: float
    peak_rss_bytes: int
    stdout: str


def run_timed(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout_seconds: float,
) -> Sample:
    """Run ``command`` to its end; raise ``CommandFailedError`` on a non-zero exit or a timeout."""
    stdout_path = cwd / f"stdout-{time.monotonic_ns()}.log"
    stderr_path = stdout_path.with_name(stdout_path.name.replace("stdout", "stderr"))
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        watcher = PeakWatcher(process.pid)
        timer = threading.Timer(timeout_seconds, _kill_group, args=(process.pid,))
        timer.start()
        try:
            _, status = os.waitpid(process.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        peak = watcher.stop()
    output = stdout_path.read_text()
    errors = stderr_path.read_text()
    stdout_path.unlink()
    stderr_path.unlink()
    if process.returncode != 0:
        why = (
            "ran past its time limit" if process.returncode == -9 else f"exit {process.returncode}"
        )
        raise CommandFailedError(f"{why}: {' '.join(command)}\n{errors[-3000:]}{output[-1000:]}")
    return Sample(wall_seconds=wall, peak_rss_bytes=peak, stdout=output)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class PeakWatcher:
    """Polls the high-water mark of one process's resident memory (``VmHWM``) until stopped."""

    def __init__(self, pid: int, interval_seconds: float = 0.02) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._interval = interval_seconds
        self._peak_kib = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stopped.is_set():
            self._read()
            self._stopped.wait(self._interval)

    def _read(self) -> None:
        try:
            text = self._status.read_text()
        except OSError:
            return
        match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
        if match:
            self._peak_kib = max(self._peak_kib, int(match.group(1)))

    def stop(self) -> int:
        """Stop polling; the highest peak seen, in bytes."""
        self._stopped.set()
        self._thread.join()
        return self._peak_kib * 1024


def base_environment(*drop_prefixes: str) -> dict[str, str]:
    """This process's environment without the variables of the tools under test.

    ``PYTHONDONTWRITEBYTECODE`` goes too: this machine sets it, and it would make mlyard alone
    (installed editable, so its modules were never byte-compiled by pip, unlike the peers')
    recompile its own modules at every process start, which no normal installation does.
    """
    return {
        key: value
        for key, value in os.environ.items()
        if key != "PYTHONDONTWRITEBYTECODE" and not key.startswith(drop_prefixes)
    }


def median_wall(samples: Sequence[Sample]) -> float:
    """The median wall time of ``samples``, in seconds."""
    return statistics.median(s.wall_seconds for s in samples)
