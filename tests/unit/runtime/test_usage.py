"""The usage meter, measuring real CPU work and real allocations (lower bounds only)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from mlyard.runtime.usage import UsageMeter

MB = 1000**2


def _burn_cpu(seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < seconds:
        sum(range(10_000))


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mlyard-usage-sampler"]


def test_cpu_time_and_peak_memory_of_the_step() -> None:
    with UsageMeter() as meter:
        _burn_cpu(0.3)
        block = np.ones(25_000_000)  # 200 MB, every page written
        assert block.nbytes == 200 * MB
        del block
    usage = meter.usage()
    assert usage.cpu_seconds >= 0.2
    assert usage.wall_seconds >= usage.cpu_seconds * 0.5  # wall time is measured at all
    assert usage.peak_memory_bytes >= 200 * MB
    assert usage.gpu_seconds == 0.0 and usage.gpus == 0.0 and usage.gpu_devices == []
    assert not _sampler_threads()


def test_cpu_time_of_child_processes_counts() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    with UsageMeter() as meter:
        subprocess.run([sys.executable, "-c", burn], check=True)
    assert meter.usage().cpu_seconds >= 0.2


def test_memory_of_concurrent_worker_processes_is_summed() -> None:
    # Three workers hold 150 MB each at the same time: only summing the process tree sees
    # 450 MB on top of this process; the kernel's peak is that of the largest single process.
    hold = "import sys\nblock = b'x' * 150_000_000\nprint('ready', flush=True)\nsys.stdin.read()"
    with UsageMeter() as meter:
        own_rss = _rss_bytes()
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", hold],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
            wanted = own_rss + 3 * 150 * MB
            deadline = time.monotonic() + 20
            while meter.usage().peak_memory_bytes < wanted and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for worker in workers:
                worker.communicate(input="")
    assert meter.usage().peak_memory_bytes >= wanted


def test_gpu_seconds_follow_the_leased_share() -> None:
    with UsageMeter(gpus=0.5, gpu_devices=["0"]) as meter:
        time.sleep(0.05)
    usage = meter.usage()
    assert usage.gpus == 0.5 and usage.gpu_devices == ["0"]
    assert usage.gpu_seconds == pytest.approx(usage.wall_seconds * 0.5)
    assert usage.gpu_seconds > 0


def test_the_step_error_passes_through_and_the_sampler_stops() -> None:
    meter = UsageMeter()
    with pytest.raises(ZeroDivisionError), meter:
        _ = 1 / 0
    assert meter.usage().wall_seconds >= 0
    assert not _sampler_threads()


def test_usage_reads_progress_while_running_and_is_stable_after() -> None:
    with UsageMeter() as meter:
        time.sleep(0.05)
        assert meter.usage().wall_seconds >= 0.05
    ended = meter.usage()
    time.sleep(0.05)
    assert meter.usage() == ended


def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)
