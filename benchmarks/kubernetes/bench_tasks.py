"""Pipelines of the Kubernetes benchmarks (imported in the pods too: top-level imports are
mlyard's only)."""

from __future__ import annotations

from mlyard import pipeline, step


@step
def noop() -> int:
    return 0


@pipeline
def trivial() -> int:
    return noop()


@step
def leaf(index: int) -> int:
    return index


@step
def gather(values: list[int]) -> int:
    return sum(values)


@pipeline
def fan_out(width: int = 50) -> int:
    return gather([leaf(index) for index in range(width)])
