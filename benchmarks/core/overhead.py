"""Per-step orchestration overhead: mlyard, Metaflow and Prefect on the same trivial flows.

Each repetition runs every contender once on every flow, interleaved, so load from other work on
the machine falls on all of them alike. Every timed run follows an untimed warm-up run of the same
tool (a chain of 3) in its own directory, so each starts from a warm file cache, as after a
user's previous run: this machine pages out file cache left idle for ~30 s, and the other tools'
runs in between take longer than that (a 50-step mlyard fan-out measured 0.93-1.03 s after 45 s
idle, 0.81-0.83 s right after another run). A step does an integer addition (microseconds), so the
work is taken as zero and per-step overhead = wall time of the whole run / number of steps. The
run includes the interpreter start and each tool's set-up (metadata DB, API server); the slope
between a 10- and a 50-step chain gives the marginal cost of one more step without it.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import peers
from measure import Sample, run_timed
from mlyard_runs import (
    checked_run_view,
    flow_target,
    mlyard_command,
    mlyard_environment,
    mlyard_steps,
)

RUN_TIMEOUT_SECONDS = 600.0
SMALL_CHAIN = 10
WARM_UP_STEPS = 3
METAFLOW_LABEL = "Metaflow local runtime"
PREFECT_LABEL = "Prefect 3, ephemeral server"


@dataclass(frozen=True)
class Contender:
    """One tool in one configuration."""

    label: str
    tool: str  # "mlyard", "metaflow" or "prefect"
    steps: Callable[[str, int], int]
    run: Callable[[str, int, Path], Sample]


@dataclass
class FlowResult:
    """Every sample of one contender on one flow of one size."""

    contender: str
    tool: str
    flow: str
    n: int
    steps: int
    walls: list[float] = field(default_factory=list)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def per_step_ms(self) -> float:
        return 1000.0 * self.median_wall / self.steps


def contenders(peers_python: Path) -> list[Contender]:
    """mlyard (MLflow tracking off and on; fresh or existing home), Metaflow, Prefect 3.

    A fresh home is what every peer run gets too (each tool creates its metadata DB in the
    run); "existing home" is the daily case of a user whose DBs exist already.
    """

    def mlyard_run(tracking: bool, existing_home: bool) -> Callable[[str, int, Path], Sample]:
        def run(flow: str, n: int, workdir: Path) -> Sample:
            env = mlyard_environment(workdir, tracking=tracking)
            extra: tuple[str, ...] = ()
            if existing_home:
                # An untimed first run creates the metadata DB (and the MLflow store), as a
                # user's earlier runs would have; --no-cache makes the timed run execute.
                first = mlyard_command(flow_target("chain"), {"n": 1})
                run_timed(first, env=env, cwd=workdir, timeout_seconds=RUN_TIMEOUT_SECONDS)
                extra = ("--no-cache",)
            sample = run_timed(
                mlyard_command(flow_target(flow), {"n": n}, *extra),
                env=env,
                cwd=workdir,
                timeout_seconds=RUN_TIMEOUT_SECONDS,
            )
            checked_run_view(sample.stdout, expected_steps=mlyard_steps(flow, n))
            return sample

        return run

    def metaflow_run(flow: str, n: int, workdir: Path) -> Sample:
        flow_file = peers.write_metaflow_flow(flow, n, workdir)
        return run_timed(
            peers.metaflow_command(peers_python, flow_file, flow, n),
            env=peers.peer_environment(workdir),
            cwd=workdir,
            timeout_seconds=RUN_TIMEOUT_SECONDS,
        )

    def prefect_run(flow: str, n: int, workdir: Path) -> Sample:
        return run_timed(
            peers.prefect_command(peers_python, flow, n),
            env=peers.peer_environment(workdir),
            cwd=workdir,
            timeout_seconds=RUN_TIMEOUT_SECONDS,
        )

    return [
        Contender("mlyard, tracking off", "mlyard", mlyard_steps, mlyard_run(False, False)),
        Contender("mlyard, MLflow tracking on", "mlyard", mlyard_steps, mlyard_run(True, False)),
        Contender(
            "mlyard, tracking off, existing home", "mlyard", mlyard_steps, mlyard_run(False, True)
        ),
        Contender(
            "mlyard, MLflow tracking on, existing home",
            "mlyard",
            mlyard_steps,
            mlyard_run(True, True),
        ),
        Contender(METAFLOW_LABEL, "metaflow", peers.metaflow_steps, metaflow_run),
        Contender(PREFECT_LABEL, "prefect", peers.prefect_steps, prefect_run),
    ]


def measure_overhead(peers_python: Path, *, n: int, repetitions: int) -> list[FlowResult]:
    """Chain of ``n``, fan-out of ``n`` and a chain of 10, for every contender."""
    shapes = [("chain", n), ("fanout", n), ("chain", SMALL_CHAIN)]
    results: dict[tuple[str, str, int], FlowResult] = {}
    with tempfile.TemporaryDirectory(prefix="mlyard-bench-") as root:
        # Every run gets a fresh directory, and all are deleted at the end: deleting one run's
        # files just before the next run would slow the next run's file creations (on ext4
        # without a journal, as on this machine, a new inode is not taken from those deleted
        # in the last minute, and each creation scans past them).
        def fresh_workdir() -> Path:
            return Path(tempfile.mkdtemp(prefix="run-", dir=root))

        _measure(peers_python, shapes, repetitions, results, fresh_workdir)
    return list(results.values())


def _measure(
    peers_python: Path,
    shapes: list[tuple[str, int]],
    repetitions: int,
    results: dict[tuple[str, str, int], FlowResult],
    fresh_workdir: Callable[[], Path],
) -> None:
    for repetition in range(1, repetitions + 1):
        for flow, size in shapes:
            for contender in contenders(peers_python):
                key = (contender.label, flow, size)
                result = results.setdefault(
                    key,
                    FlowResult(
                        contender.label, contender.tool, flow, size, contender.steps(flow, size)
                    ),
                )
                contender.run("chain", WARM_UP_STEPS, fresh_workdir())
                sample = contender.run(flow, size, fresh_workdir())
                result.walls.append(sample.wall_seconds)
                per_step_ms = 1000 * sample.wall_seconds / result.steps
                print(
                    f"  [{repetition}/{repetitions}] {contender.label:<42} {flow:>6} n={size:<3} "
                    f"{sample.wall_seconds:7.2f} s  {per_step_ms:7.1f} ms/step",
                    flush=True,
                )


def marginal_ms_per_step(results: list[FlowResult], contender: str, n: int) -> float | None:
    """Slope of the chain's wall time between 10 and ``n`` steps, in ms per step."""
    by_size = {r.n: r for r in results if r.contender == contender and r.flow == "chain"}
    if SMALL_CHAIN not in by_size or n not in by_size or n == SMALL_CHAIN:
        return None
    big, small = by_size[n], by_size[SMALL_CHAIN]
    return 1000.0 * (big.median_wall - small.median_wall) / (big.steps - small.steps)
