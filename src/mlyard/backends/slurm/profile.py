"""The ``slurm`` backend profile: the fields of a ``[backends.NAME]`` table of type ``slurm``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mlyard.models.resources import parse_size
from mlyard.settings import BackendProfile

_HOST_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-\[\]]+$")
_SBATCH_LINE = re.compile(r"^--?[A-Za-z]")


class SlurmGpuType(BaseModel):
    """One GPU model of the site, so that gpu_type and gpu_memory can be honoured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="The GRES type of these GPUs in the site's gres.conf, e.g. 'a100'.",
        pattern=r"^[A-Za-z0-9_.\-]+$",
    )
    memory: Annotated[int, BeforeValidator(parse_size)] = Field(
        description="Memory of one such GPU, e.g. '80GB'."
    )
    feature: str | None = Field(
        default=None,
        description="Node feature of the nodes with these GPUs (`sinfo -o '%N %f'`), for "
        "--constraint; needed to pick the model of a fractional (shard) request.",
        pattern=r"^[A-Za-z0-9_.\-]+$",
    )


class SlurmProfile(BaseModel):
    """Where the cluster is, how to reach it and how jobs are set up there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str | None = Field(
        default=None, description="Login node to reach by SSH; not needed with login_node_local."
    )
    port: int = Field(default=22, ge=1, le=65535, description="SSH port of the login node.")
    user: str | None = Field(default=None, description="SSH user; default: the local user.")
    identity_file: Path | None = Field(default=None, description="Private key file for SSH.")
    use_agent: bool = Field(default=True, description="Also offer the keys of a running ssh-agent.")
    jump_host: str | None = Field(
        default=None, description="Bastion to tunnel through, as [user@]host[:port]."
    )
    known_hosts: Path | None = Field(
        default=None, description="known_hosts file checked strictly; default ~/.ssh/known_hosts."
    )
    partition: str | None = Field(default=None, description="sbatch --partition.")
    account: str | None = Field(default=None, description="sbatch --account (billing project).")
    qos: str | None = Field(default=None, description="sbatch --qos.")
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run before the step (module loads, venv activation).",
    )
    env: Literal["setup", "auto"] = Field(
        default="setup",
        description="'setup': the setup lines provide Python with mlyard; 'auto': mlyard "
        "creates a venv in remote_workdir.",
    )
    requirements: list[str] = Field(
        default_factory=list,
        description="With env = 'auto': pip requirements installed into the environment "
        "(e.g. 'mlyard==0.1.0', 'torch>=2.1'); what the base Python has is reused.",
    )
    python: str = Field(
        default="python3", description="Interpreter that runs `python -m mlyard.runtime`."
    )
    remote_workdir: str = Field(
        default="~/.mlyard",
        description="Working directory on the cluster's shared file system (logs, scripts, "
        "SFTP-moved artifacts).",
    )
    data_route: Literal["s3", "sftp"] = Field(
        default="s3",
        description="'s3': compute nodes reach the artifact store; 'sftp': code, inputs and "
        "outputs move over SSH into remote_workdir.",
    )
    gres_shard: bool = Field(
        default=False, description="The site has a `shard` GRES: fractional GPUs map to it."
    )
    shards_per_gpu: int = Field(
        default=4, ge=1, description="How many shards the site configures per GPU."
    )
    gpu_types: list[SlurmGpuType] = Field(
        default_factory=list,
        description="The site's GPU models with their memory (and node feature): lets steps "
        "ask for gpu_memory, and for gpu_type on a shard.",
    )
    extra_sbatch: list[str] = Field(
        default_factory=list, description="Extra sbatch options, e.g. '--constraint=v100'."
    )
    login_node_local: bool = Field(
        default=False, description="mlyard runs on the login node: call sbatch without SSH."
    )
    connect_timeout: float = Field(default=15.0, gt=0, description="Seconds to open SSH.")

    @field_validator("host", "jump_host")
    @classmethod
    def _check_host(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_PATTERN.match(value.split("@")[-1]):
            raise ValueError(f"{value!r} is not a host name")
        return value

    @field_validator("extra_sbatch")
    @classmethod
    def _check_sbatch_lines(cls, lines: list[str]) -> list[str]:
        cleaned = []
        for line in lines:
            option = line.strip().removeprefix("#SBATCH").strip()
            if not _SBATCH_LINE.match(option) or "\n" in option:
                raise ValueError(f"{line!r} is not an sbatch option like '--constraint=v100'")
            cleaned.append(option)
        return cleaned

    @field_validator("setup")
    @classmethod
    def _check_setup_lines(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if "\n" in line:
                raise ValueError("each setup entry must be one shell line")
        return lines

    @model_validator(mode="after")
    def _check_reachable(self) -> SlurmProfile:
        if not self.login_node_local and not self.host:
            raise ValueError("host is required unless login_node_local = true")
        if self.login_node_local and self.data_route == "sftp":
            raise ValueError("data_route = 'sftp' needs SSH; with login_node_local use 's3'")
        return self


def load_slurm_profile(name: str, profile: BackendProfile) -> SlurmProfile:
    """Validate a profile's extra fields; ``ConfigError`` naming the field that is wrong."""
    return profile.fields_as(SlurmProfile, name)
