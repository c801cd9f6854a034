"""What the backend declares, and the refusals (with its own fixes) that follow from it."""

from __future__ import annotations

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, Capability
from mlyard.backends.registry import create_backend
from mlyard.errors import ResourceError
from mlyard.models.resources import Resources
from mlyard.settings import load_settings


def backend(**fields: object) -> Backend:
    profile = {"type": "kubernetes", "image": "mlyard:1", **fields}
    settings = load_settings(backends={"gpu": profile})
    return create_backend("gpu", settings, ArtifactStore("s3://mlyard/runs"))


def test_sharing_modes_decide_whether_a_fraction_is_possible() -> None:
    assert Capability.FRACTIONAL_GPU not in backend().capabilities
    assert Capability.FRACTIONAL_GPU not in backend(gpu_sharing="dra").capabilities
    for mode in ("time-slicing", "mig", "nvshare", "hami"):
        assert Capability.FRACTIONAL_GPU in backend(gpu_sharing=mode).capabilities
    declared = backend().capabilities
    for capability in (
        Capability.GPU_TYPE,
        Capability.GPU_MEMORY,
        Capability.TIME_LIMIT,
        Capability.MULTI_NODE,
        Capability.LAUNCHER_TORCHRUN,
        Capability.LOG_FOLLOW,
    ):
        assert capability in declared


def test_a_fraction_on_exclusive_names_the_profile_setting() -> None:
    with pytest.raises(ResourceError) as caught:
        backend().check_resources(Resources(gpus=0.25))
    assert "gpu_sharing in [backends.gpu]" in str(caught.value)


def test_ray_steps_are_refused_with_the_alternative() -> None:
    with pytest.raises(ResourceError) as caught:
        backend().check_resources(Resources(launcher="ray"))
    assert "launcher='torchrun'" in str(caught.value) and "slurm" in str(caught.value)
