"""Which process a recorded pid is: a live process stays itself when the wall clock is stepped."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from mlyard.backends.local.processes import is_alive, seconds_since_start, started_since_boot


def test_a_live_process_is_alive_and_a_reused_pid_is_not() -> None:
    me = started_since_boot(os.getpid())
    assert is_alive(os.getpid(), me)
    assert not is_alive(os.getpid(), me - 5.0)  # another process that had this pid


def test_a_stepped_wall_clock_does_not_make_a_live_process_look_dead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    me = started_since_boot(os.getpid())
    wall_clock_start = psutil.Process().create_time()
    # As after NTP steps the clock or a VM resumes from a snapshot: the boot time the clock
    # implies moves, and with it every create_time() psutil reports.
    boot = psutil.boot_time()
    monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot + 30.0)
    assert abs(psutil.Process().create_time() - wall_clock_start) >= 29
    assert is_alive(os.getpid(), me)


def test_records_written_with_epoch_start_times_still_match() -> None:
    assert is_alive(os.getpid(), psutil.Process().create_time())


def test_an_exited_process_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = started_since_boot(child.pid)
    child.wait()
    assert not is_alive(child.pid, started)
    with pytest.raises(psutil.NoSuchProcess):
        started_since_boot(child.pid)


def test_seconds_since_start_counts_from_the_process_start() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        started = started_since_boot(child.pid)
        time.sleep(0.3)
        assert 0.2 <= seconds_since_start(started) < 5
        assert seconds_since_start(time.time() - 2.0) == pytest.approx(2.0, abs=0.5)  # epoch
    finally:
        child.kill()
        child.wait()
