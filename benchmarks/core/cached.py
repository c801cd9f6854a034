"""A fully cached re-run of the quickstart, against the interpreter's own start.

The quickstart runs once in a fresh ``MLYARD_HOME`` (filling the cache), then
``mlyard run examples/quickstart/pipeline.py --json`` is timed again with every step CACHED.
``python -c pass`` and ``python -c "import mlyard"`` are timed the same way, so the figure that
counts — seconds beyond the interpreter start — can be read off directly.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from measure import run_timed
from mlyard_runs import REPO, checked_run_view, mlyard_command, mlyard_environment

QUICKSTART = REPO / "examples" / "quickstart" / "pipeline.py"
QUICKSTART_STEPS = 5
TIMEOUT_SECONDS = 300.0
#: Interpreter starts are short and noisy: take more of them than of the runs.
BASELINE_REPETITIONS = 7


@dataclass(frozen=True)
class CachedResult:
    """Medians, in seconds."""

    python_start: float
    import_mlyard: float
    first_run: float
    cached_run_tracking_on: float
    cached_run_tracking_off: float
    repetitions: int

    def beyond_start(self, cached_run: float) -> float:
        return cached_run - self.python_start


def _median_of(command: list[str], env: dict[str, str], cwd: Path, times: int) -> float:
    return statistics.median(
        run_timed(command, env=env, cwd=cwd, timeout_seconds=TIMEOUT_SECONDS).wall_seconds
        for _ in range(times)
    )


def _cached_reruns(workdir: Path, *, tracking: bool, repetitions: int) -> tuple[float, float]:
    """Run the quickstart cold once, then ``repetitions`` cached re-runs; (cold, cached median)."""
    env = mlyard_environment(workdir, tracking=tracking)
    command = mlyard_command(str(QUICKSTART), {})
    cold = run_timed(command, env=env, cwd=workdir, timeout_seconds=TIMEOUT_SECONDS)
    checked_run_view(cold.stdout, expected_steps=QUICKSTART_STEPS)
    walls = []
    for _ in range(repetitions):
        sample = run_timed(command, env=env, cwd=workdir, timeout_seconds=TIMEOUT_SECONDS)
        checked_run_view(sample.stdout, expected_steps=QUICKSTART_STEPS, expected_state="CACHED")
        walls.append(sample.wall_seconds)
    return cold.wall_seconds, statistics.median(walls)


def measure_cached(repetitions: int) -> CachedResult:
    """Time the interpreter baselines and the cached re-runs (MLflow tracking on and off)."""
    with tempfile.TemporaryDirectory(prefix="mlyard-bench-") as tmp:
        workdir = Path(tmp)
        env = mlyard_environment(workdir, tracking=True)
        python = sys.executable
        python_start = _median_of([python, "-c", "pass"], env, workdir, BASELINE_REPETITIONS)
        import_mlyard = _median_of(
            [python, "-c", "import mlyard"], env, workdir, BASELINE_REPETITIONS
        )
        (workdir / "on").mkdir()
        (workdir / "off").mkdir()
        first, cached_on = _cached_reruns(workdir / "on", tracking=True, repetitions=repetitions)
        _, cached_off = _cached_reruns(workdir / "off", tracking=False, repetitions=repetitions)
    result = CachedResult(
        python_start=python_start,
        import_mlyard=import_mlyard,
        first_run=first,
        cached_run_tracking_on=cached_on,
        cached_run_tracking_off=cached_off,
        repetitions=repetitions,
    )
    print(
        f"  python -c pass {python_start:.3f} s, import mlyard {import_mlyard:.3f} s, "
        f"cold quickstart {first:.2f} s, cached re-run {cached_on:.3f} s (tracking on), "
        f"{cached_off:.3f} s (off)",
        flush=True,
    )
    return result
