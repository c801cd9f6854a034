"""Validating the slurm profile into SlurmProfile."""

from __future__ import annotations

import pytest

from mlyard.backends.slurm.profile import load_slurm_profile
from mlyard.errors import ConfigError
from mlyard.settings import BackendProfile


def profile(**fields: object) -> BackendProfile:
    return BackendProfile.model_validate({"type": "slurm", **fields})


def test_defaults_and_fields() -> None:
    loaded = load_slurm_profile(
        "hpc",
        profile(host="login.example.org", user="me", partition="gpu", setup=["module load x"]),
    )
    assert loaded.port == 22
    assert loaded.data_route == "s3"
    assert loaded.env == "setup"
    assert loaded.setup == ["module load x"]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"host": "h", "port": 0}, "port"),
        ({"host": "h", "data_route": "ftp"}, "data_route"),
        ({"host": "h", "env": "conda"}, "env"),
        ({"host": "h", "extra_sbatch": ["rm -rf /"]}, "extra_sbatch"),
        ({"host": "h", "partiton": "gpu"}, "partiton"),
        ({"host": "bad host;rm"}, "host"),
        ({}, "host is required"),
        ({"login_node_local": True, "data_route": "sftp"}, "sftp"),
    ],
)
def test_bad_values_name_their_field(fields: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match="hpc") as refused:
        load_slurm_profile("hpc", profile(**fields))
    assert named in refused.value.message


def test_an_error_of_the_whole_profile_is_named_so_and_the_fields_are_listed() -> None:
    with pytest.raises(ConfigError) as refused:
        load_slurm_profile("hpc", profile())
    assert refused.value.message.startswith(
        "Backend 'hpc' (slurm) is not configured right: profile: Value error, host is required"
    )
    assert refused.value.hint is not None
    assert refused.value.hint.startswith(
        "Fix [backends.hpc] in mlyard.toml. Known fields: host, port"
    )


def test_login_node_local_needs_no_host() -> None:
    assert load_slurm_profile("hpc", profile(login_node_local=True)).host is None


def test_the_auto_environment_key_follows_its_recipe() -> None:
    from mlyard.backends.slurm.environment import environment_key

    base = load_slurm_profile("hpc", profile(host="h", env="auto", requirements=["torch"]))
    same = load_slurm_profile("hpc", profile(host="h", env="auto", requirements=["torch"]))
    other = load_slurm_profile("hpc", profile(host="h", env="auto", requirements=["torch<2"]))
    assert environment_key(base) == environment_key(same) != environment_key(other)
