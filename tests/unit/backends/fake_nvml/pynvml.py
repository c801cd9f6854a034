"""A stand-in for ``nvidia-ml-py``, put first on ``PYTHONPATH`` of a test's child processes.

It answers the NVML calls ``mlyard.platform.gpu_inventory`` makes with the devices listed in
``MLYARD_TEST_FAKE_GPUS`` (JSON: ``[{"name": ..., "memory": bytes}, ...]``), so several real
processes see one made-up machine through mlyard's own inventory code.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_NOT_FOUND = 28


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


def _devices() -> list[dict[str, Any]]:
    devices: list[dict[str, Any]] = json.loads(os.environ.get("MLYARD_TEST_FAKE_GPUS", "[]"))
    return devices


def nvmlInit() -> None:  # noqa: N802 - NVML's names
    if not _devices():
        raise NVMLError(NVML_ERROR_GPU_NOT_FOUND)


def nvmlShutdown() -> None:  # noqa: N802
    pass


def nvmlDeviceGetCount() -> int:  # noqa: N802
    return len(_devices())


def nvmlDeviceGetHandleByIndex(index: int) -> int:  # noqa: N802
    return index


def nvmlDeviceGetUUID(handle: int) -> str:  # noqa: N802
    return f"GPU-fake-{handle}"


def nvmlDeviceGetName(handle: int) -> str:  # noqa: N802
    return str(_devices()[handle]["name"])


def nvmlDeviceGetMemoryInfo(handle: int) -> SimpleNamespace:  # noqa: N802
    return SimpleNamespace(total=int(_devices()[handle]["memory"]), used=0)
