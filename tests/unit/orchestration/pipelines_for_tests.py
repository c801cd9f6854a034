"""Pipelines used by the orchestration unit tests (steps must live at module level)."""

from __future__ import annotations

from mlyard import pipeline, step


@step
def make_numbers(count: int) -> list[int]:
    return list(range(count))


@step(outputs=["low", "high"])
def split_numbers(numbers: list[int]) -> tuple[list[int], list[int]]:
    middle = len(numbers) // 2
    return numbers[:middle], numbers[middle:]


@step
def total(parts: list[list[int]]) -> int:
    return sum(sum(p) for p in parts)


@pipeline
def numbers(count: int = 10, label: str = "x") -> None:
    low, high = split_numbers(make_numbers(count))
    total([low, high])
