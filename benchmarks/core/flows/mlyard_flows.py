"""The benchmark flows for mlyard: a chain, a fan-out with a join, and a layered DAG.

Every step is trivial (an integer addition), so a run's wall time is orchestration overhead.
Run one with ``mlyard run benchmarks/core/flows/mlyard_flows.py:chain -p n=50 --json``.
"""

from __future__ import annotations

from mlyard import pipeline, step


@step
def source(index: int = 0) -> int:
    """The first value of a flow (``index`` tells the sources of the layered DAG apart)."""
    return index


@step
def increment(value: int) -> int:
    """One trivial unit of work."""
    return value + 1


@step
def branch(value: int, index: int) -> int:
    """One trivial branch of a fan-out."""
    return value + index


@step
def combine(left: int, right: int, position: int) -> int:
    """A trivial step with two parents; ``position`` keeps every step's cache key distinct."""
    return left + right + position


@step
def join(values: list[int]) -> int:
    """Gathers every branch of a fan-out."""
    return sum(values)


@pipeline
def chain(n: int = 50) -> None:
    """``n`` steps, each depending on the one before: the first is ``source``."""
    value = source()
    for _ in range(n - 1):
        value = increment(value)


@pipeline
def fanout(n: int = 50) -> None:
    """``source``, then ``n`` independent branches, then one ``join``: ``n + 2`` steps."""
    value = source()
    join([branch(value, index) for index in range(n)])


@pipeline
def layered(n: int = 250, width: int = 20) -> None:
    """``n`` steps in layers of ``width``; step i of a layer needs steps i and i+1 of the last."""
    layer = [source(index) for index in range(min(width, n))]
    made = len(layer)
    while made < n:
        size = min(width, n - made)
        layer = [combine(layer[i], layer[(i + 1) % len(layer)], made + i) for i in range(size)]
        made += size
