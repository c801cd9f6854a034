"""``mlyard.run`` from Python, and GPU leasing on a machine with (fake) GPUs."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

import mlyard
from mlyard.artifacts.materializers import load_value
from mlyard.artifacts.store import ArtifactStore
from mlyard.errors import ResourceError
from mlyard.platform.gpu_inventory import GpuDevice
from mlyard.settings import load_settings
from tests.e2e.cli import PROJECTS

pytestmark = pytest.mark.e2e
GIB = 1024**3


def _import(project: str, module: str) -> object:
    sys.path.insert(0, str(PROJECTS / project))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(PROJECTS / project))


def test_run_from_python_returns_states_outputs_and_metrics(tmp_path: Path) -> None:
    counting = _import("counting", "counting")
    markers = tmp_path / "markers"
    markers.mkdir()
    settings = load_settings(tracking={"uri": "none"})
    run = mlyard.run(counting.chain, marker_dir=str(markers), seconds=0.1, settings=settings)  # type: ignore[attr-defined]
    assert run.succeeded
    assert [s.state.value for s in run.steps] == ["SUCCEEDED"] * 3
    assert run.metrics == {"slow.slept": 0.1}
    store = ArtifactStore.from_settings(settings)
    assert load_value(store, run.step("last").outputs["output"]) == 20


def test_fractional_steps_share_a_device_and_whole_gpus_are_exclusive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No NVIDIA GPU can run here: the inventory is faked at the NVML boundary only.
    fake = [
        GpuDevice(index=0, uuid="GPU-0", name="NVIDIA A100-SXM4-40GB", memory_total_bytes=40 * GIB),
        GpuDevice(index=1, uuid="GPU-1", name="NVIDIA A100-SXM4-40GB", memory_total_bytes=40 * GIB),
    ]
    monkeypatch.setattr("mlyard.backends.local.backend.discover_gpus", lambda: fake)
    gpu_steps = _import("gpus", "gpu_steps")
    settings = load_settings(
        tracking={"uri": "none"}, backends={"local": {"type": "local", "cpus": 4}}
    )
    run = mlyard.run(gpu_steps.gpus, settings=settings)  # type: ignore[attr-defined]
    assert run.succeeded, run.error
    store = ArtifactStore.from_settings(settings)
    seen = {s.name: load_value(store, s.outputs["output"]) for s in run.steps}
    assert seen["half_a"]["devices"] == seen["half_b"]["devices"]  # co-located
    assert seen["half_a"]["share"] == "0.5"
    assert seen["whole"]["devices"] in {"0", "1"}
    assert seen["whole"]["devices"] != seen["half_a"]["devices"]
    assert seen["cpu_only"]["devices"] == ""  # a step that asked for none sees none
    assert run.step("whole").usage is not None
    assert run.step("whole").usage.gpu_seconds > 0


def test_gpu_request_on_a_machine_without_gpus_is_refused_before_running() -> None:
    gpu_steps = _import("gpus", "gpu_steps")
    with pytest.raises(ResourceError, match="GPU"):
        mlyard.run(gpu_steps.gpus, settings=load_settings(tracking={"uri": "none"}))  # type: ignore[attr-defined]


def test_torchrun_steps_run_on_the_local_backend_with_a_rank_per_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two (fake) GPUs give two ranks; they all-reduce over gloo on the CPU.
    fake = [
        GpuDevice(index=i, uuid=f"GPU-{i}", name="NVIDIA A100", memory_total_bytes=40 * GIB)
        for i in range(2)
    ]
    monkeypatch.setattr("mlyard.backends.local.backend.discover_gpus", lambda: fake)
    ddp_steps = _import("distributed", "ddp_steps")
    settings = load_settings(tracking={"uri": "none"})
    run = mlyard.run(ddp_steps.distributed, settings=settings)  # type: ignore[attr-defined]
    assert run.succeeded, run.error
    store = ArtifactStore.from_settings(settings)
    two = load_value(store, run.step("two_ranks").outputs["output"])
    one = load_value(store, run.step("one_rank").outputs["output"])
    # Rank 0's result is the step's output; the sum proves both ranks took part.
    assert two == {"rank": 0, "world_size": 2, "sum": 3.0, "devices": "0,1"}
    assert one == {"rank": 0, "world_size": 1, "sum": 1.0, "devices": ""}
