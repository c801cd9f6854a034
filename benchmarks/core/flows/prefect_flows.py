"""The benchmark flows for Prefect 3: ``python prefect_flows.py chain|fanout N``.

Same shape as ``mlyard_flows.py``: trivial tasks; the chain calls them one after another, the
fan-out maps ``n`` branches on the default task runner, then joins them.
"""

from __future__ import annotations

import sys

from prefect import flow, task, unmapped


@task
def source() -> int:
    return 0


@task
def increment(value: int) -> int:
    return value + 1


@task
def branch(value: int, index: int) -> int:
    return value + index


@task
def join(values: list[int]) -> int:
    return sum(values)


@flow
def chain(n: int = 50) -> int:
    value = source()
    for _ in range(n - 1):
        value = increment(value)
    return value


@flow
def fanout(n: int = 50) -> int:
    value = source()
    branches = branch.map(unmapped(value), range(n))
    return join(branches.result())


if __name__ == "__main__":
    flows = {"chain": chain, "fanout": fanout}
    flows[sys.argv[1]](n=int(sys.argv[2]))
