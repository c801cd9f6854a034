"""What the backend refuses before submission, and what it declares; no cluster needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Capability
from mlyard.backends.registry import create_backend
from mlyard.backends.slurm.backend import SlurmBackend
from mlyard.errors import ConfigError, ResourceError
from mlyard.models.resources import Resources
from mlyard.settings import BackendProfile, Settings


def backend(tmp_path: Path, **fields: Any) -> SlurmBackend:
    profile = BackendProfile.model_validate({"type": "slurm", "host": "login.example", **fields})
    settings = Settings(home=tmp_path, backends={"hpc": profile})
    created = create_backend("hpc", settings, ArtifactStore(str(tmp_path / "artifacts")))
    assert isinstance(created, SlurmBackend)
    return created


def test_capabilities_follow_the_profile(tmp_path: Path) -> None:
    plain = backend(tmp_path)
    assert Capability.MULTI_NODE in plain.capabilities
    assert Capability.FRACTIONAL_GPU not in plain.capabilities
    assert Capability.FRACTIONAL_GPU in backend(tmp_path, gres_shard=True).capabilities


def test_fractional_gpus_only_with_a_shard_gres(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match=r"cannot honour gpus=0\.5") as refused:
        backend(tmp_path).check_resources(Resources(gpus=0.5))
    assert "gres_shard = true" in (refused.value.hint or "")  # SLURM's own fix, not the generic
    backend(tmp_path, gres_shard=True).check_resources(Resources(gpus=0.5))
    backend(tmp_path).check_resources(Resources(gpus=2, gpu_type="a100", nodes=2))


def test_both_launchers_are_accepted_on_any_node_count(tmp_path: Path) -> None:
    hpc = backend(tmp_path)
    for launcher in ("ray", "torchrun"):
        hpc.check_resources(Resources(nodes=4, launcher=launcher))
        hpc.check_resources(Resources(nodes=1, launcher=launcher))


def test_a_bad_profile_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data_route"):
        backend(tmp_path, data_route="nfs")


# -- every field of Resources, honoured or refused ---------------------------------------------

A100 = {"name": "a100", "memory": "80GB", "feature": "gpu_a100"}
V100 = {"name": "v100", "memory": "32GB", "feature": "gpu_v100"}


def test_every_field_has_its_capability_on_a_full_profile(tmp_path: Path) -> None:
    full = backend(tmp_path, gres_shard=True, gpu_types=[A100, V100])
    full.check_resources(
        Resources(
            cpus=8,
            memory="64GB",
            gpus=0.5,
            gpu_type="a100",
            gpu_memory="40GB",
            time_limit="2h",
        )
    )
    full.check_resources(Resources(gpus=4, gpu_memory="20GB", nodes=2, launcher="torchrun"))
    full.check_resources(Resources(gpus=1, nodes=3, launcher="ray", time_limit="10m"))
    assert Capability.GPU_MEMORY in full.capabilities
    assert Capability.TIME_LIMIT in full.capabilities


def test_gpu_memory_without_gpu_types_is_refused_with_the_profile_fix(tmp_path: Path) -> None:
    plain = backend(tmp_path)
    assert Capability.GPU_MEMORY not in plain.capabilities
    with pytest.raises(ResourceError, match=r"cannot honour gpu_memory=80\.0GB") as refused:
        plain.check_resources(Resources(gpus=1, gpu_memory="80GB"))
    assert "gpu_types = [" in (refused.value.hint or "")


def test_a_fraction_and_gpu_memory_are_refused_together(tmp_path: Path) -> None:
    with pytest.raises(ResourceError) as refused:
        backend(tmp_path).check_resources(Resources(gpus=0.5, gpu_memory="10GB"))
    assert "gpus=0.5 (a share of one GPU) or gpu_memory=10.0GB" in refused.value.message
    hint = refused.value.hint or ""
    assert "gres_shard" in hint and "gpu_types" in hint


def test_a_gpu_no_listed_model_holds_is_refused_naming_the_models(tmp_path: Path) -> None:
    listed = backend(tmp_path, gpu_types=[A100, V100])
    with pytest.raises(ResourceError, match=r"a100 \(80\.0GB\), v100 \(32\.0GB\) are listed"):
        listed.check_resources(Resources(gpus=1, gpu_memory="100GB"))
    with pytest.raises(ResourceError, match="No GPU of this SLURM profile holds"):
        listed.check_resources(Resources(gpus=1, gpu_type="h100"))


def test_gpu_type_of_a_shard_needs_node_features(tmp_path: Path) -> None:
    unfeatured = backend(tmp_path, gres_shard=True, gpu_types=[{"name": "a100", "memory": "80GB"}])
    with pytest.raises(ResourceError, match="cannot pick the GPU of a shard") as refused:
        unfeatured.check_resources(Resources(gpus=0.25, gpu_type="a100"))
    assert "sinfo" in (refused.value.hint or "")
    with pytest.raises(ResourceError, match="cannot pick the GPU of a shard"):
        backend(tmp_path, gres_shard=True).check_resources(Resources(gpus=0.25, gpu_type="a100"))
    unfeatured.check_resources(Resources(gpus=1, gpu_type="a100"))  # a whole one has a GRES type


def test_slurm_runs_no_services_and_says_where_they_run(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match=r"'hpc' \(slurm\) cannot serve a model") as refused:
        backend(tmp_path).require(Capability.SERVICES, "serve a model")
    assert "kubernetes" in (refused.value.hint or "")


def test_gpu_types_are_validated_in_the_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gpu_types\.0\.memory"):
        backend(tmp_path, gpu_types=[{"name": "a100", "memory": "lots"}])
    with pytest.raises(ConfigError, match=r"gpu_types\.0\.feature"):
        backend(tmp_path, gpu_types=[{"name": "a100", "memory": "80GB", "feature": "a b"}])
