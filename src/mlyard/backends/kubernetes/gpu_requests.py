"""Portable GPU requests translated for one cluster, by its profile's ``gpu_sharing``.

``Resources(gpus=..., gpu_memory=..., gpu_type=...)`` becomes extended resources (requests equal
to limits, as Kubernetes requires of them), required node affinity, or a DRA ResourceClaimTemplate:

=============  ===========================================================================
exclusive      ``nvidia.com/gpu: N``; a fraction is refused, naming the sharing modes
time-slicing   ceil(gpus x replicas_per_gpu) of the shared resource; no memory isolation
mig            the smallest ``nvidia.com/mig-<profile>`` holding gpu_memory (or the fraction)
nvshare        ``nvshare.com/gpu: 1`` for gpus <= 1
hami           ``nvidia.com/gpu``, ``nvidia.com/gpumem`` (MiB) or ``-percentage``, ``gpucores``
dra            a ``resource.k8s.io/v1`` claim on the GPU device class, CEL on memory/product
=============  ===========================================================================

Pure: the node inventory (GPU products, MIG resources) is passed in when the backend could read
it, so every row is unit-tested without a cluster.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlyard.backends.kubernetes.profile import GPU_SHARING_MODES, KubernetesProfile
from mlyard.errors import ResourceError
from mlyard.models.resources import Resources, format_size

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
NVSHARE_RESOURCE = "nvshare.com/gpu"
HAMI_MEMORY = "nvidia.com/gpumem"
HAMI_MEMORY_PERCENTAGE = "nvidia.com/gpumem-percentage"
HAMI_CORES = "nvidia.com/gpucores"
#: GPU feature discovery labels (NVIDIA GPU operator / device plugin).
PRODUCT_LABEL = "nvidia.com/gpu.product"
MEMORY_LABEL = "nvidia.com/gpu.memory"
#: Compute slices of a whole A100/H100/H200 in MIG profiles (``7g.80gb`` is the whole GPU).
MIG_SLICES_PER_GPU = 7
_MIG_PROFILE = re.compile(r"^(\d+)g\.(\d+)gb$")
_MIB = 1024**2
#: GFD product names, for matching a short gpu_type when the nodes cannot be listed.
KNOWN_PRODUCTS: tuple[str, ...] = (
    "NVIDIA-H200",
    "NVIDIA-H200-NVL",
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-H100-PCIe",
    "NVIDIA-H100-NVL",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-A100-SXM4-40GB",
    "NVIDIA-A100-80GB-PCIe",
    "NVIDIA-A100-PCIE-40GB",
    "NVIDIA-A10G",
    "NVIDIA-A10",
    "NVIDIA-A30",
    "NVIDIA-A40",
    "NVIDIA-L4",
    "NVIDIA-L40S",
    "NVIDIA-RTX-A6000",
    "Tesla-V100-SXM2-16GB",
    "Tesla-V100-SXM2-32GB",
    "Tesla-V100-PCIE-16GB",
    "Tesla-T4",
)


@dataclass(frozen=True)
class GpuPlacement:
    """What the pod spec gets for the step's GPU request."""

    #: Extended resources, each set as request and limit.
    resources: dict[str, str] = field(default_factory=dict)
    #: Required node affinity match expressions (all must hold).
    node_affinity: list[dict[str, Any]] = field(default_factory=list)
    #: dra: the ``spec`` of the ResourceClaimTemplate the pod's claim is made from.
    claim_spec: dict[str, Any] | None = None

    @property
    def uses_gpu(self) -> bool:
        return bool(self.resources) or self.claim_spec is not None


def mig_profile_size(profile: str) -> tuple[int, int]:
    """``'3g.40gb'`` -> (3 compute slices, 40 GB of memory in bytes)."""
    match = _MIG_PROFILE.match(profile)
    if match is None:
        raise ValueError(f"{profile!r} is not a MIG profile like '1g.10gb'")
    return int(match.group(1)), int(match.group(2)) * 1000**3


def product_tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def product_matches(gpu_type: str, product: str) -> bool:
    """Whether a short name (``A100``, ``a100-80gb``) names this GFD product
    (``NVIDIA-A100-SXM4-80GB``): its words appear in the product's, in order, whole."""
    wanted = [t for t in product_tokens(gpu_type) if t not in ("nvidia", "tesla")]
    tokens = iter(product_tokens(product))
    return bool(wanted) and all(any(t == w for t in tokens) for w in wanted)


def matching_products(gpu_type: str, products: Sequence[str]) -> list[str]:
    """The products among ``products`` that ``gpu_type`` names, sorted."""
    return sorted({p for p in products if product_matches(gpu_type, p)})


def translate_gpus(
    resources: Resources,
    profile: KubernetesProfile,
    *,
    node_products: Sequence[str] | None = None,
    node_mig_profiles: Sequence[str] | None = None,
) -> GpuPlacement:
    """The GPU part of a step's pod for this cluster; ``ResourceError`` when the cluster's
    sharing mode cannot express the request. ``node_products`` / ``node_mig_profiles`` are what
    the nodes advertise, when the backend could list them (``None``: unknown)."""
    if resources.gpus == 0:
        return GpuPlacement()
    mode = profile.gpu_sharing
    affinity = _product_affinity(resources.gpu_type, node_products)
    if mode == "dra":
        return GpuPlacement(claim_spec=_dra_claim_spec(resources, profile))
    if mode == "exclusive":
        if resources.is_fractional_gpu:
            others = ", ".join(m for m in GPU_SHARING_MODES if m != "exclusive")
            raise ResourceError(
                f"This cluster's profile gives out whole GPUs only (gpu_sharing = 'exclusive'), "
                f"but the step asks for gpus={resources.gpus:g}.",
                hint="Ask for a whole GPU (gpus=1), or set gpu_sharing in the profile to the "
                f"sharing the cluster runs: {others}.",
            )
        return GpuPlacement(
            resources={GPU_RESOURCE: str(resources.whole_gpus)},
            node_affinity=affinity + _memory_affinity(resources),
        )
    if mode == "time-slicing":
        slices = math.ceil(resources.gpus * profile.replicas_per_gpu - 1e-9)
        return GpuPlacement(
            resources={profile.shared_gpu_resource: str(max(1, slices))},
            node_affinity=affinity + _memory_affinity(resources),
        )
    if mode == "nvshare":
        if resources.gpus > 1:
            raise ResourceError(
                "nvshare gives a pod one shared GPU, but the step asks for "
                f"gpus={resources.gpus:g}.",
                hint="Ask for gpus=1 or a fraction of one, or use a profile with "
                "gpu_sharing = 'exclusive' for several whole GPUs.",
            )
        return GpuPlacement(
            resources={NVSHARE_RESOURCE: "1"}, node_affinity=affinity + _memory_affinity(resources)
        )
    if mode == "hami":
        return GpuPlacement(resources=_hami_resources(resources), node_affinity=affinity)
    return GpuPlacement(
        resources=_mig_resources(resources, profile, node_mig_profiles), node_affinity=affinity
    )


def _product_affinity(gpu_type: str | None, node_products: Sequence[str] | None) -> list[Any]:
    """Required affinity on the GFD product label; a short name becomes the list of full
    product names it matches (on the nodes when known, else among the known products)."""
    if gpu_type is None:
        return []
    candidates = node_products if node_products is not None else KNOWN_PRODUCTS
    values = matching_products(gpu_type, candidates)
    if not values:
        if node_products is not None:
            have = ", ".join(sorted(set(node_products))) or "no GPU products at all"
            raise ResourceError(
                f"No node of the cluster has a GPU of type {gpu_type!r}.",
                hint=f"The nodes have: {have} (label {PRODUCT_LABEL}). Ask for one of those, "
                "or drop gpu_type.",
            )
        values = [gpu_type]  # an unknown product: the user named the label value itself
    return [{"key": PRODUCT_LABEL, "operator": "In", "values": values}]


def _memory_affinity(resources: Resources) -> list[dict[str, Any]]:
    """Nodes whose GPUs have at least ``gpu_memory`` (GFD's label is in MiB)."""
    if resources.gpu_memory is None:
        return []
    needed = math.ceil(resources.gpu_memory / _MIB)
    return [{"key": MEMORY_LABEL, "operator": "Gt", "values": [str(needed - 1)]}]


def _hami_resources(resources: Resources) -> dict[str, str]:
    limits = {GPU_RESOURCE: str(resources.whole_gpus)}
    if resources.gpu_memory is not None:
        limits[HAMI_MEMORY] = str(math.ceil(resources.gpu_memory / _MIB))
    elif resources.is_fractional_gpu:
        limits[HAMI_MEMORY_PERCENTAGE] = str(math.ceil(resources.gpus * 100))
    if resources.is_fractional_gpu:
        limits[HAMI_CORES] = str(math.ceil(resources.gpus * 100))
    return limits


def _mig_resources(
    resources: Resources, profile: KubernetesProfile, node_profiles: Sequence[str] | None
) -> dict[str, str]:
    """The smallest MIG profile that holds the request, one per GPU asked for."""
    offered = sorted(
        set(profile.mig_profiles or node_profiles or ()), key=lambda p: mig_profile_size(p)
    )
    if not offered:
        raise ResourceError(
            "The profile says gpu_sharing = 'mig' but names no MIG profiles and no node "
            "advertises nvidia.com/mig-* resources.",
            hint="List the profiles the nodes offer in mig_profiles, e.g. "
            "['1g.10gb', '3g.40gb', '7g.80gb'], or check the GPU operator's MIG strategy "
            "('mixed' advertises nvidia.com/mig-<profile>).",
        )
    for name in offered:
        slices, memory = mig_profile_size(name)
        if resources.gpu_memory is not None:
            holds = memory >= resources.gpu_memory
        elif resources.is_fractional_gpu:
            holds = slices >= resources.gpus * MIG_SLICES_PER_GPU - 1e-9
        else:
            holds = name == offered[-1]  # whole GPUs without a memory need: the largest profile
        if holds:
            return {f"{MIG_RESOURCE_PREFIX}{name}": str(resources.whole_gpus)}
    asked = (
        f"gpu_memory={format_size(resources.gpu_memory)}"
        if resources.gpu_memory is not None
        else f"gpus={resources.gpus:g}"
    )
    raise ResourceError(
        f"No MIG profile of this cluster holds {asked}.",
        hint=f"The largest offered is {offered[-1]} (profiles: {', '.join(offered)}). Ask for "
        "less, or use a profile whose nodes give out whole GPUs.",
    )


def _dra_claim_spec(resources: Resources, profile: KubernetesProfile) -> dict[str, Any]:
    """A ResourceClaimTemplate spec: ``gpus`` devices of the GPU class, selected by CEL on the
    driver's memory capacity and product name."""
    if resources.is_fractional_gpu:
        raise ResourceError(
            f"With gpu_sharing = 'dra' a step gets whole devices; gpus={resources.gpus:g} is a "
            "fraction.",
            hint="Ask for gpus=1, or use a profile with gpu_sharing = 'mig', 'hami' or "
            "'time-slicing' for a share of a GPU.",
        )
    driver = profile.dra_device_class
    selectors = []
    if resources.gpu_memory is not None:
        quantity = f"{math.ceil(resources.gpu_memory / _MIB)}Mi"
        selectors.append(
            f'device.capacity["{driver}"].memory.compareTo(quantity("{quantity}")) >= 0'
        )
    if resources.gpu_type is not None:
        wanted = resources.gpu_type.lower().replace('"', "")
        selectors.append(
            f'device.attributes["{driver}"].productName.lowerAscii().contains("{wanted}")'
        )
    request: dict[str, Any] = {
        "deviceClassName": profile.dra_device_class,
        "allocationMode": "ExactCount",
        "count": resources.whole_gpus,
    }
    if selectors:
        request["selectors"] = [{"cel": {"expression": " && ".join(selectors)}}]
    return {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}}}
