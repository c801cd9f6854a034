"""The NVIDIA GPUs of this machine, read through NVML (``nvidia-ml-py``, imported lazily).

A machine without the NVML library, without a loaded driver or without devices simply has no
GPUs: every function here answers "none" instead of raising, so the local backend, the doctor
checks and the usage meter work the same on a laptop and on a GPU server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# NVML errors that mean "this machine has no usable NVIDIA GPU": the normal state of a laptop or
# a CPU node, not worth a warning. FUNCTION_NOT_FOUND comes from a libnvidia-ml stub with no driver.
_NO_GPU_ERRORS = (
    "NVML_ERROR_DRIVER_NOT_LOADED",
    "NVML_ERROR_LIBRARY_NOT_FOUND",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_GPU_NOT_FOUND",
)


@dataclass(frozen=True)
class GpuDevice:
    """One NVIDIA GPU as NVML enumerates it (indices follow PCI bus order)."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int


@dataclass(frozen=True)
class GpuSample:
    """One reading of a device's load: compute utilization and memory in use."""

    utilization_percent: float
    memory_used_bytes: int


class _NvmlUnavailableError(Exception):
    """NVML cannot be used on this machine; callers turn it into "no GPUs"."""


def _text(value: str | bytes) -> str:
    # Older bindings return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


def _is_no_gpu_error(pynvml: ModuleType, exc: Exception) -> bool:
    no_gpu_values = {getattr(pynvml, name, None) for name in _NO_GPU_ERRORS}
    return isinstance(exc, pynvml.NVMLError) and getattr(exc, "value", None) in no_gpu_values


@contextmanager
def _nvml_session() -> Iterator[ModuleType]:
    """Initialise NVML and always shut it down; ``_NvmlUnavailableError`` when it cannot start."""
    try:
        import pynvml
    except ImportError as exc:  # the optional `mlyard[gpu]` extra is not installed
        raise _NvmlUnavailableError("nvidia-ml-py is not installed") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if not _is_no_gpu_error(pynvml, exc):
            logger.warning("NVML could not start (%s); treating this machine as having no GPU", exc)
        raise _NvmlUnavailableError(str(exc)) from exc
    try:
        yield pynvml
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            logger.debug("nvmlShutdown failed: %s", exc)


def _read_device(pynvml: Any, index: int) -> GpuDevice:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return GpuDevice(
        index=index,
        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_total_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
    )


def _guarded(what: str, read: Callable[[Any], _T], fallback: _T) -> _T:
    """Run ``read(pynvml)`` inside an NVML session; any NVML failure gives ``fallback``."""
    try:
        with _nvml_session() as pynvml:
            try:
                return read(pynvml)
            except pynvml.NVMLError as exc:
                if not _is_no_gpu_error(pynvml, exc):
                    logger.warning("NVML failed while %s (%s)", what, exc)
                return fallback
    except _NvmlUnavailableError:
        return fallback


def discover_gpus() -> list[GpuDevice]:
    """The NVIDIA GPUs of this machine in NVML index order; ``[]`` when there are none.

    Never raises for a machine without GPUs (no library, no driver, no device); any other NVML
    failure is logged as a warning and also gives ``[]``.
    """

    def read(pynvml: Any) -> list[GpuDevice]:
        return [_read_device(pynvml, index) for index in range(pynvml.nvmlDeviceGetCount())]

    return _guarded("listing GPUs", read, [])


def sample_gpu_utilization(devices: Sequence[str]) -> dict[str, GpuSample] | None:
    """Current utilization and memory use of ``devices`` (UUIDs, or NVML indices as digits).

    The result is keyed by the identifiers given. ``None`` when NVML is unavailable or fails, so
    a caller that samples periodically can simply skip the reading.
    """

    def read(pynvml: Any) -> dict[str, GpuSample]:
        samples: dict[str, GpuSample] = {}
        for device in devices:
            handle = (
                pynvml.nvmlDeviceGetHandleByIndex(int(device))
                if device.isdigit()
                else pynvml.nvmlDeviceGetHandleByUUID(device)
            )
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            samples[device] = GpuSample(
                utilization_percent=float(rates.gpu), memory_used_bytes=int(memory.used)
            )
        return samples

    return _guarded("sampling GPU utilization", read, None)
