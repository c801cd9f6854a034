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

from mlyard.runtime.announce import STEP_PROCESS_NAME

if TYPE_CHECKING:
    from mlyard.backends.local.fork_server import ForkServer

#: How long a cancelled step gets to exit after SIGTERM before SIGKILL.
TERMINATE_GRACE_SECONDS = 5.0


@dataclass
class StepProcess:
    """A running step: our own child (``popen``) or one adopted after an orchestrator restart."""

    pid: int
    #: ``started_since_boot(pid)``: with the pid, which process this is.
    started: float
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
        return None if is_alive(self.pid, self.started) else -1


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
        started = started_since_boot(popen.pid)
    except psutil.Error:
        started = 0.0
    return StepProcess(pid=popen.pid, started=started, popen=popen)


#: Above this, a recorded start is epoch seconds (psutil's create_time(), as records written
#: by mlyard before 2026-12 hold), not seconds since boot: no machine runs 31 years.
_EPOCH_FLOOR = 1e9


def started_since_boot(pid: int) -> float:
    """When ``pid`` started, in seconds since boot; raises psutil.NoSuchProcess if it is gone.

    With the pid it names one process: pids get reused. Not psutil's create_time(), which adds
    the boot time as the wall clock now implies it: that moves whenever the clock is stepped
    (NTP, a VM resumed from a snapshot), and a live process would then look like another one.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    except OSError:  # no procfs (macOS): the wall-clock start is all there is
        return float(psutil.Process(pid).create_time())
    return int(fields[19]) / _CLOCK_TICKS  # field 22, starttime, in clock ticks


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def seconds_since_start(started: float) -> float:
    """How long ago a process that started at ``started`` (``started_since_boot``) started."""
    if started > _EPOCH_FLOOR or not hasattr(time, "CLOCK_BOOTTIME"):
        return time.time() - started
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started


def is_alive(pid: int, started: float) -> bool:
    """True when ``pid`` is still the process that started at ``started`` (0: any process)."""
    try:
        process = psutil.Process(pid)
        if started:
            now = process.create_time() if started > _EPOCH_FLOOR else started_since_boot(pid)
            if abs(now - started) > 1.0:
                return False
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def find_process(pid: int) -> StepProcess | None:
    """The live step process ``pid`` (as the step itself announced it), if it still runs."""
    try:
        process = psutil.Process(pid)
        if process.name() != STEP_PROCESS_NAME or process.status() == psutil.STATUS_ZOMBIE:
            return None
        return StepProcess(pid=pid, started=started_since_boot(pid))
    except (OSError, ValueError, psutil.Error):
        return None


def step_processes() -> list[psutil.Process]:
    """Every live mlyard step process on this machine (of any run)."""
    found = []
    for process in psutil.process_iter(["name", "status"]):
        if process.info["name"] == STEP_PROCESS_NAME and process.info["status"] != "zombie":
            found.append(process)
    return found


def stop_process_group(step: StepProcess, grace: float = TERMINATE_GRACE_SECONDS) -> None:
    """SIGTERM the step's process group, then SIGKILL what is left; waits until it is gone."""
    if not is_alive(step.pid, step.started):
        if step.popen is not None:
            step.popen.poll()
        return
    _signal_group(step.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if step.popen is not None and step.popen.poll() is not None:
            break
        if step.popen is None and not is_alive(step.pid, step.started):
            break
        time.sleep(0.02)
    _signal_group(step.pid, signal.SIGKILL)
    if step.popen is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            step.popen.wait(timeout=grace)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
