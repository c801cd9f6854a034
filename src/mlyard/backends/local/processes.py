"""Step processes on this machine: start in their own session, find again, stop as a group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from mlyard.backends.local.fork_server import ForkServer

#: How long a cancelled step gets to exit after SIGTERM before SIGKILL.
TERMINATE_GRACE_SECONDS = 5.0


@dataclass
class StepProcess:
    """A running step: our own child (``popen``) or one adopted after an orchestrator restart."""

    pid: int
    create_time: float
    popen: subprocess.Popen[bytes] | None = None
    fork_server: ForkServer | None = None

    @property
    def adopted(self) -> bool:
        """Started by an earlier orchestrator: its exit status is unknown."""
        return self.popen is None and (self.fork_server is None or not self.fork_server.alive)

    def exit_code(self) -> int | None:
        """The exit status once the process ended (negative: killed by that signal); else None.

        For an adopted process the status is unknown after it ends: -1 is returned and the
        attempt's result document tells what happened.
        """
        if self.popen is not None:
            return self.popen.poll()
        if self.fork_server is not None and self.fork_server.alive:
            return self.fork_server.exit_code(self.pid)
        return None if is_alive(self.pid, self.create_time) else -1


def start_process(
    command: Sequence[str], *, environment: Mapping[str, str], log_path: Path
) -> StepProcess:
    """Start ``command`` in a new session (its own process group), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(environment),
            # Own session: Ctrl-C in the terminal reaches only the orchestrator, which cancels
            # steps itself; a killed orchestrator leaves steps running for `runs resume`.
            start_new_session=True,
            close_fds=True,
        )
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        create_time = 0.0
    return StepProcess(pid=popen.pid, create_time=create_time, popen=popen)


def is_alive(pid: int, create_time: float) -> bool:
    """True when ``pid`` is still the process started at ``create_time`` (pids get reused)."""
    try:
        process = psutil.Process(pid)
        if create_time and abs(process.create_time() - create_time) > 1.0:
            return False
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def find_process(marker: str) -> StepProcess | None:
    """The live process whose command line contains ``marker`` (a task URI), if any."""
    for process in psutil.process_iter(["pid", "cmdline", "create_time"]):
        cmdline = process.info.get("cmdline") or []
        if any(marker in part for part in cmdline) and "mlyard.runtime" in cmdline:
            return StepProcess(pid=process.info["pid"], create_time=process.info["create_time"])
    return None


def stop_process_group(step: StepProcess, grace: float = TERMINATE_GRACE_SECONDS) -> None:
    """SIGTERM the step's process group, then SIGKILL what is left; waits until it is gone."""
    if not is_alive(step.pid, step.create_time):
        if step.popen is not None:
            step.popen.poll()
        return
    _signal_group(step.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if step.popen is not None and step.popen.poll() is not None:
            break
        if step.popen is None and not is_alive(step.pid, step.create_time):
            break
        time.sleep(0.02)
    _signal_group(step.pid, signal.SIGKILL)
    if step.popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            step.popen.wait(timeout=grace)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
