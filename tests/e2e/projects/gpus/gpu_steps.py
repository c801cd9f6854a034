"""Steps that report which GPUs they were given (run against a fake GPU inventory)."""

from __future__ import annotations

import os
import time

from mlyard import Resources, pipeline, step


def _seen() -> dict[str, str]:
    time.sleep(1.0)  # overlap with the other steps, so sharing is visible
    return {
        "devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
        "share": os.environ.get("MLYARD_GPU_SHARE", ""),
    }


@step(resources=Resources(gpus=0.5, gpu_memory="8GB"))
def half_a(tag: str) -> dict[str, str]:
    return _seen()


@step(resources=Resources(gpus=0.5))
def half_b(tag: str) -> dict[str, str]:
    return _seen()


@step(resources=Resources(gpus=1))
def whole(tag: str) -> dict[str, str]:
    return _seen()


@step
def cpu_only(tag: str) -> dict[str, str]:
    return _seen()


@pipeline
def gpus(tag: str = "x") -> None:
    half_a(tag)
    half_b(tag)
    whole(tag)
    cpu_only(tag)
