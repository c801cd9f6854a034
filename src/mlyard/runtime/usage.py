"""Measuring what a step consumed, inside the step process: wall time, CPU, memory, GPU time.

CPU time and the kernel's peak RSS come from ``getrusage`` (this process and its waited-for
children). The kernel keeps only the largest single process, so a background thread also sums
the RSS of the whole process tree every ~0.2 s: a step whose worker processes together use more
memory than any one of them is counted fully.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from mlyard.models.tasks import Usage

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL_SECONDS = 0.2
# ru_maxrss is in KiB on Linux and in bytes on macOS.
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


def _cpu_seconds() -> float:
    """User + system time of this process and of its waited-for children so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _kernel_peak_rss_bytes() -> int:
    """The largest RSS the kernel saw for this process or any one waited-for child."""
    return _MAXRSS_UNIT * max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )


class _TreeMemorySampler(threading.Thread):
    """Daemon thread: the peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="mlyard-usage-sampler", daemon=True)
        self.interval = interval
        self.peak_bytes = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            import psutil

            process = psutil.Process(os.getpid())
        except Exception:  # no psutil: getrusage alone still gives a peak
            logger.debug("process-tree memory sampling unavailable", exc_info=True)
            return
        # The first reading after one interval: a step shorter than that is covered by the
        # kernel's peak (ru_maxrss), and scanning the process tree costs milliseconds.
        sampled = False
        while not self._stopping.wait(self.interval):
            self.sample(process)
            sampled = True
        if sampled:
            self.sample(process)  # one last reading at the end of the step

    def sample(self, process: Any) -> None:
        """Add one reading of the tree's RSS; a child exiting mid-reading is simply skipped."""
        try:
            import psutil

            total = process.memory_info().rss
            for child in process.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
        except Exception:  # measuring must never break the step
            logger.debug("memory sample failed", exc_info=True)

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5.0)


class UsageMeter:
    """Context manager around the user's step function; ``usage()`` reads what it consumed.

    ``gpus`` is the GPU amount leased to the step (0.5 for half a device) and ``gpu_devices``
    the devices it saw; GPU seconds are wall seconds times ``gpus``.
    """

    def __init__(self, *, gpus: float = 0.0, gpu_devices: Sequence[str] = ()) -> None:
        self.gpus = gpus
        self.gpu_devices = list(gpu_devices)
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._cpu_at_start = 0.0
        self._cpu_at_end: float | None = None
        self._kernel_peak_at_end: int | None = None
        self._sampler: _TreeMemorySampler | None = None

    def __enter__(self) -> UsageMeter:
        self._started_at = time.monotonic()
        self._ended_at = None
        self._cpu_at_start = _cpu_seconds()
        self._cpu_at_end = None
        self._kernel_peak_at_end = None
        self._sampler = _TreeMemorySampler(SAMPLE_INTERVAL_SECONDS)
        try:
            self._sampler.start()
        except RuntimeError:  # cannot start a thread (interpreter shutting down)
            logger.debug("usage sampler did not start", exc_info=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        self._ended_at = time.monotonic()
        self._cpu_at_end = _cpu_seconds()
        # Read now: what the runtime allocates after the step (storing outputs) is not the step's.
        self._kernel_peak_at_end = _kernel_peak_rss_bytes()

    def usage(self) -> Usage:
        """What the step consumed; while the meter runs, what it consumed so far."""
        if self._started_at is None:
            return Usage(gpus=self.gpus, gpu_devices=self.gpu_devices)
        ended_at = self._ended_at if self._ended_at is not None else time.monotonic()
        cpu_at_end = self._cpu_at_end if self._cpu_at_end is not None else _cpu_seconds()
        wall_seconds = max(0.0, ended_at - self._started_at)
        kernel_peak = (
            self._kernel_peak_at_end
            if self._kernel_peak_at_end is not None
            else _kernel_peak_rss_bytes()
        )
        sampled_peak = self._sampler.peak_bytes if self._sampler is not None else 0
        return Usage(
            wall_seconds=wall_seconds,
            cpu_seconds=max(0.0, cpu_at_end - self._cpu_at_start),
            peak_memory_bytes=max(kernel_peak, sampled_peak),
            gpu_seconds=wall_seconds * self.gpus if self.gpus > 0 else 0.0,
            gpus=self.gpus,
            gpu_devices=self.gpu_devices,
        )
