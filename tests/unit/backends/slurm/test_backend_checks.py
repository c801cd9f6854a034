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
    with pytest.raises(ResourceError, match="share a GPU"):
        backend(tmp_path).check_resources(Resources(gpus=0.5))
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
