"""A pipeline whose steps record every execution, to check exactly-once behaviour."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mlyard import log_metric, pipeline, step


def record(marker_dir: str, name: str) -> None:
    with (Path(marker_dir) / f"{name}.runs").open("a") as handle:
        handle.write(f"{os.getpid()}\n")


@step
def first(marker_dir: str) -> int:
    record(marker_dir, "first")
    return 1


@step
def slow(value: int, marker_dir: str, seconds: float) -> int:
    record(marker_dir, "slow")
    time.sleep(seconds)
    log_metric("slept", seconds)
    return value + 1


@step
def last(value: int, marker_dir: str) -> int:
    record(marker_dir, "last")
    return value * 10


@step(retries=2, retry_backoff=0.1)
def flaky(marker_dir: str, failures: int) -> str:
    record(marker_dir, "flaky")
    runs = len((Path(marker_dir) / "flaky.runs").read_text().splitlines())
    if runs <= failures:
        raise RuntimeError(f"flaky failure number {runs}")
    return "ok"


@step(timeout=1)
def too_slow(marker_dir: str) -> None:
    record(marker_dir, "too_slow")
    time.sleep(60)


@pipeline
def chain(marker_dir: str, seconds: float = 3.0) -> None:
    last(slow(first(marker_dir), marker_dir, seconds), marker_dir)


@pipeline
def retrying(marker_dir: str, failures: int = 2) -> None:
    flaky(marker_dir, failures)


@pipeline
def timing_out(marker_dir: str) -> None:
    too_slow(marker_dir)
