"""The GPU inventory on a machine without an NVIDIA GPU: real NVML calls, answered with "none"."""

from __future__ import annotations

import logging
import sys

import pytest

from mlyard.platform.gpu_inventory import discover_gpus, sample_gpu_utilization


def test_discover_gpus_finds_none_on_a_machine_without_nvidia_gpu(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert discover_gpus() == []
    # "no driver / no library" is the normal state of a CPU machine: no warning for it.
    assert not caplog.records


def test_sampling_gives_none_when_nvml_is_unavailable() -> None:
    assert sample_gpu_utilization(["0"]) is None
    assert sample_gpu_utilization(["GPU-00000000-0000-0000-0000-000000000000"]) is None


def test_missing_nvidia_ml_py_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # what `import` sees without the gpu extra
    assert discover_gpus() == []
    assert sample_gpu_utilization(["0"]) is None
