"""Benchmarks of mlyard's embedded core, side by side with Metaflow and Prefect.

One command: ``.venv/bin/python benchmarks/core/run.py [--quick]``. It

1. measures per-step orchestration overhead on a chain of 50 trivial steps and a fan-out of 50
   (+ a join) for mlyard's local backend (MLflow tracking off and on), Metaflow's local runtime
   and Prefect 3, in the same run (the peers live in ``benchmarks/.venv-peers``, made on first
   use);
2. times a fully cached re-run of ``examples/quickstart/pipeline.py`` against the interpreter
   start;
3. runs generated layered DAGs of 250, 500, 1000 and 2000 steps for time and peak memory;
4. replaces the "## Embedded core" section of ``benchmarks/RESULTS.md`` with the figures.

``--quick`` takes one repetition instead of five and skips the 2000-step DAG.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers
import report
from cached import CachedResult, measure_cached
from overhead import FlowResult, measure_overhead
from scale import ScalePoint, measure_scale

BENCHMARKS = ("overhead", "cached", "scale")
SCALE_SIZES = [250, 500, 1000, 2000]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 repetition, no 2000-step DAG.")
    parser.add_argument("--repetitions", type=int, help="Repetitions per tool (default 5).")
    parser.add_argument("--steps", type=int, default=50, help="Steps in the chain and fan-out.")
    parser.add_argument(
        "--only", choices=BENCHMARKS, action="append", help="Run only these (repeatable)."
    )
    parser.add_argument(
        "--scale-timeout",
        type=float,
        default=900.0,
        help="Stop the scale series at the first DAG that runs longer (seconds).",
    )
    parser.add_argument("--no-write", action="store_true", help="Do not touch RESULTS.md.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Five: runs on this kind of shared machine move by ±10 %, and the ratios sit near targets.
    repetitions = args.repetitions or (1 if args.quick else 5)
    chosen = set(args.only or BENCHMARKS)
    started = time.monotonic()
    load_before = os.getloadavg()[0]

    overhead: list[FlowResult] | None = None
    versions: dict[str, str] = {}
    if "overhead" in chosen:
        python = peers.peers_python()
        versions = peers.peer_versions(python)
        print(f"per-step overhead, {repetitions} repetition(s):", flush=True)
        overhead = measure_overhead(python, n=args.steps, repetitions=repetitions)
    elif (peers.PEERS_VENV / "bin" / "python").exists():
        # The header names the peers' versions even when only other benchmarks ran.
        versions = peers.peer_versions(peers.PEERS_VENV / "bin" / "python")

    cached: CachedResult | None = None
    if "cached" in chosen:
        print("fully cached re-run of the quickstart:", flush=True)
        cached = measure_cached(repetitions=max(repetitions, 3))

    scale: list[ScalePoint] | None = None
    if "scale" in chosen:
        sizes = [size for size in SCALE_SIZES if not (args.quick and size > 1000)]
        print(f"scale, layered DAGs of {sizes} steps:", flush=True)
        scale = measure_scale(sizes, timeout_seconds=args.scale_timeout)

    section = report.build_section(
        command=" ".join(
            [".venv/bin/python benchmarks/core/run.py", *map(shlex.quote, argv or sys.argv[1:])]
        ),
        versions=versions,
        load_averages=(load_before, os.getloadavg()[0]),
        repetitions=repetitions,
        n=args.steps,
        overhead=overhead,
        cached=cached,
        scale=scale,
        scale_timeout_seconds=args.scale_timeout,
    )
    print()
    print(section)
    if not args.no_write:
        report.write_section(section)
        print(f"wrote the '{report.SECTION_TITLE}' section of {report.RESULTS}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
