"""A two-step pipeline for the SLURM integration tests."""

from __future__ import annotations

import time

from mlyard import log_metric, pipeline, step


@step
def make_numbers(count: int) -> list[int]:
    return list(range(count))


@step
def total(numbers: list[int], pause: float) -> int:
    time.sleep(pause)
    log_metric("total", float(sum(numbers)))
    return sum(numbers)


@pipeline
def tiny(count: int = 5, pause: float = 0.0) -> int:
    return total(make_numbers(count), pause)
