"""The ``kubernetes`` backend profile: the fields of a ``[backends.NAME]`` table of that type."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlyard.models.resources import Seconds
from mlyard.settings import BackendProfile

GpuSharing = Literal["exclusive", "time-slicing", "mig", "nvshare", "hami", "dra"]
GPU_SHARING_MODES: tuple[str, ...] = ("exclusive", "time-slicing", "mig", "nvshare", "hami", "dra")
#: The taint NVIDIA's GPU operator and most GPU node pools put on GPU nodes.
GPU_TAINT_KEY = "nvidia.com/gpu"
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_MIG_PROFILE = re.compile(r"^\d+g\.\d+gb$")


class Toleration(BaseModel):
    """A pod toleration, as in the Kubernetes API (camelCase names)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    key: str | None = Field(default=None, description="Taint key; empty with Exists: all taints.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, description="Taint value, with Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect tolerated; empty: every effect."
    )
    toleration_seconds: int | None = Field(
        default=None, alias="tolerationSeconds", description="How long NoExecute is tolerated."
    )

    def manifest(self) -> dict[str, Any]:
        """The toleration as the API takes it."""
        return self.model_dump(by_alias=True, exclude_none=True)


class KubernetesProfile(BaseModel):
    """Which cluster, where in it, and how step pods are shaped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig file; default: $KUBECONFIG, then ~/.kube/config.",
    )
    context: str | None = Field(
        default=None, description="kubeconfig context; default: the file's current context."
    )
    in_cluster: bool = Field(
        default=False,
        description="Use the service account of the pod mlyard runs in instead of a kubeconfig.",
    )
    namespace: str = Field(default="default", description="Namespace of the Jobs.")
    image: str = Field(
        description="Image with Python and mlyard (with the extras the steps need); see the "
        "repository's Dockerfile."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    python: str = Field(default="python", description="Interpreter in the image.")
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Secrets (docker-registry) to pull the image with."
    )
    service_account: str | None = Field(
        default=None, description="Service account of step pods; default: the namespace's."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels step pods' nodes must carry."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints step pods tolerate."
    )
    tolerate_gpu_taint: bool = Field(
        default=True,
        description=f"GPU steps tolerate the `{GPU_TAINT_KEY}` taint (NoSchedule) of GPU nodes.",
    )
    artifact_credentials_secret: str | None = Field(
        default=None,
        description="Secret whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) become "
        "the step's environment (envFrom): the store's credentials, never written into a "
        "manifest.",
    )
    priority_class: str | None = Field(default=None, description="priorityClassName of pods.")
    kueue_queue: str | None = Field(
        default=None,
        description="Kueue LocalQueue: Jobs are created suspended with the "
        "kueue.x-k8s.io/queue-name label and start when Kueue admits them.",
    )
    gpu_sharing: GpuSharing = Field(
        default="exclusive",
        description="How the cluster shares GPUs: " + ", ".join(GPU_SHARING_MODES) + ".",
    )
    shared_gpu_resource: str = Field(
        default="nvidia.com/gpu",
        description="time-slicing: the resource the device plugin advertises "
        "(nvidia.com/gpu, or nvidia.com/gpu.shared with renameByDefault).",
    )
    replicas_per_gpu: int = Field(
        default=4, ge=1, description="time-slicing: replicas the device plugin makes of a GPU."
    )
    mig_profiles: list[str] = Field(
        default_factory=list,
        description="mig: profiles the nodes offer, e.g. ['1g.10gb', '3g.40gb', '7g.80gb']; "
        "default: read from the nodes' allocatable nvidia.com/mig-* resources.",
    )
    dra_device_class: str = Field(
        default="gpu.nvidia.com", description="dra: DeviceClass of NVIDIA's DRA driver."
    )
    schedule_timeout: Seconds = Field(
        default=600.0,
        description="How long a pod may stay unschedulable before its attempt fails, e.g. '10m'.",
    )
    ttl_after_finished: Seconds = Field(
        default=3600.0,
        description="ttlSecondsAfterFinished: how long ended Jobs and their pods (and logs) stay.",
    )
    request_timeout: float = Field(
        default=15.0, gt=0, description="Seconds to wait for one API request."
    )

    @field_validator("namespace", "service_account", "priority_class", "kueue_queue")
    @classmethod
    def _check_dns_label(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_SUBDOMAIN.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes name (lower case, digits, '-', '.')")
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _check_secret_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _DNS_SUBDOMAIN.match(name):
                raise ValueError(f"{name!r} is not a Secret name")
        return names

    @field_validator("mig_profiles")
    @classmethod
    def _check_mig_profiles(cls, profiles: list[str]) -> list[str]:
        cleaned = [p.strip().lower().removeprefix("nvidia.com/mig-") for p in profiles]
        for profile in cleaned:
            if not _MIG_PROFILE.match(profile):
                raise ValueError(f"{profile!r} is not a MIG profile like '1g.10gb'")
        return cleaned

    @model_validator(mode="after")
    def _check_source(self) -> KubernetesProfile:
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ValueError("in_cluster = true takes no kubeconfig or context")
        if self.schedule_timeout is None or self.schedule_timeout <= 0:
            raise ValueError("schedule_timeout must be a positive duration")
        return self


def load_kubernetes_profile(name: str, profile: BackendProfile) -> KubernetesProfile:
    """Validate a profile's extra fields; ``ConfigError`` naming the field that is wrong."""
    return profile.fields_as(KubernetesProfile, name)
