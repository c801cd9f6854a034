"""Scale: layered DAGs of growing size, their wall time and the orchestrator's peak memory.

Each DAG is ``n`` trivial steps in layers of 20, each step needing two steps of the layer before,
run once per size with tracking off (orchestration alone) in a fresh ``MLYARD_HOME``. Growth is
"about linear" when the time per step of the largest DAG is within 1.5x of the smallest's, and
the memory each extra step adds at a larger size is at most 2x (+4 KiB) what it added at the
first size step.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from measure import CommandFailedError, run_timed
from mlyard_runs import checked_run_view, flow_target, mlyard_command, mlyard_environment

WIDTH = 20
TIME_GROWTH_LIMIT = 1.5
MEMORY_GROWTH_LIMIT = 2.0
MEMORY_TOLERANCE_KIB = 4.0


@dataclass(frozen=True)
class ScalePoint:
    """One DAG size; ``wall_seconds`` is None when the run passed the time limit."""

    steps: int
    wall_seconds: float | None
    peak_rss_bytes: int | None

    @property
    def ms_per_step(self) -> float | None:
        return None if self.wall_seconds is None else 1000.0 * self.wall_seconds / self.steps

    @property
    def kib_per_step(self) -> float | None:
        return None if self.peak_rss_bytes is None else self.peak_rss_bytes / 1024 / self.steps


def measure_scale(sizes: list[int], timeout_seconds: float) -> list[ScalePoint]:
    """Run the layered DAG at every size; stop at the first size that passes the time limit."""
    points: list[ScalePoint] = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="mlyard-bench-") as tmp:
            workdir = Path(tmp)
            try:
                sample = run_timed(
                    mlyard_command(flow_target("layered"), {"n": size, "width": WIDTH}),
                    env=mlyard_environment(workdir, tracking=False),
                    cwd=workdir,
                    timeout_seconds=timeout_seconds,
                )
            except CommandFailedError as exc:
                if "time limit" not in str(exc):
                    raise
                print(f"  {size:>5} steps: over {timeout_seconds:.0f} s, stopped", flush=True)
                points.append(ScalePoint(size, None, None))
                break
        checked_run_view(sample.stdout, expected_steps=size)
        point = ScalePoint(size, sample.wall_seconds, sample.peak_rss_bytes)
        points.append(point)
        print(
            f"  {size:>5} steps: {sample.wall_seconds:7.1f} s ({point.ms_per_step:.1f} ms/step), "
            f"peak {sample.peak_rss_bytes / 2**20:.0f} MiB",
            flush=True,
        )
    return points


def marginal_kib_per_step(points: list[ScalePoint]) -> list[float | None]:
    """Memory each extra step added since the previous size (None for the first size)."""
    measured = [p for p in points if p.peak_rss_bytes is not None]
    slopes: list[float | None] = [None]
    for before, after in itertools.pairwise(measured):
        assert before.peak_rss_bytes is not None and after.peak_rss_bytes is not None
        grown = after.peak_rss_bytes - before.peak_rss_bytes
        slopes.append(grown / 1024 / (after.steps - before.steps))
    return slopes


def growth_verdict(points: list[ScalePoint]) -> tuple[bool, bool]:
    """(time grows about linearly, memory grows about linearly) over the measured sizes."""
    measured = [p for p in points if p.ms_per_step is not None]
    if len(measured) < 2 or len(measured) < len(points):
        return False, False
    first, last = measured[0].ms_per_step, measured[-1].ms_per_step
    assert first is not None and last is not None
    time_linear = last <= TIME_GROWTH_LIMIT * first
    slopes = [s for s in marginal_kib_per_step(measured) if s is not None]
    # At most linear: no later size adds much more memory per step than the first increase did
    # (a small absolute tolerance, since a flat curve has near-zero, noisy slopes).
    memory_linear = bool(slopes) and all(
        slope <= MEMORY_GROWTH_LIMIT * max(slopes[0], 0.0) + MEMORY_TOLERANCE_KIB
        for slope in slopes[1:]
    )
    return time_linear, memory_linear
