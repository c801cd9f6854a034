"""A step's GPU request as SLURM understands it: a ``--gres`` and, where needed, node features.

SLURM asks for GPUs by count and GRES type (``--gres=gpu:a100:2``) and for shares of one by a
``shard`` GRES, which has no type; it has no request for GPU memory at all (``--mem-per-gpu`` is
host memory). So ``gpu_memory``, and ``gpu_type`` on a shard, are honoured through the profile's
``gpu_types``: the site's GPU models with their memory and the node feature of the nodes that have
them. A request is translated to the GRES type, or the node features (``--constraint``), of the
models that hold it, and refused, naming what the profile lists, when none does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mlyard.backends.slurm.profile import SlurmGpuType, SlurmProfile
from mlyard.errors import ResourceError
from mlyard.models.resources import Resources, format_size

#: ``--constraint=EXPR``, ``--constraint EXPR``, ``-C EXPR`` and ``-CEXPR`` in extra_sbatch.
_CONSTRAINT_OPTION = re.compile(r"^(?:--constraint(?:=|\s+)|-C\s*)(?P<value>.+)$")

GPU_TYPES_EXAMPLE = 'gpu_types = [{name = "a100", memory = "80GB", feature = "a100"}]'
#: The fix for a gpu_memory request on a profile that lists no GPU models.
GPU_MEMORY_HINT = (
    "List the site's GPU models in the profile, e.g. " + GPU_TYPES_EXAMPLE + ", and mlyard asks "
    "for a model that holds it; or drop gpu_memory."
)


@dataclass(frozen=True)
class GpuRequest:
    """The sbatch options of a GPU request."""

    gres: str | None
    #: Node features of which a node must have one (they are ORed); empty: any node.
    features: tuple[str, ...] = ()


def gpu_request(resources: Resources, profile: SlurmProfile) -> GpuRequest:
    """Translate the GPU fields of ``resources``, or raise ``ResourceError`` with the fix."""
    if resources.gpus == 0:
        return GpuRequest(None)
    types = _fitting_types(resources, profile)
    picks_model = resources.gpu_type is not None or resources.gpu_memory is not None
    if resources.is_fractional_gpu:
        if not profile.gres_shard:
            raise ResourceError(
                f"This SLURM profile cannot share a GPU (gpus={resources.gpus:g}).",
                hint="Ask for a whole GPU (gpus=1), or set gres_shard = true in the profile "
                "if the site configures a `shard` GRES.",
            )
        shards = max(1, math.ceil(resources.gpus * profile.shards_per_gpu))
        features: tuple[str, ...] = ()
        if picks_model:
            # A shard GRES has no type: the GPU model is chosen by the node's features.
            features = tuple(kind.feature for kind in types if kind.feature)
            unfeatured = [kind for kind in types if not kind.feature]
            if unfeatured or not types:
                listed = _listed(unfeatured, "have no feature") if unfeatured else "none listed"
                raise ResourceError(
                    f"This SLURM profile cannot pick the GPU of a shard ({_describe(resources)}): "
                    f"gpu_types: {listed}.",
                    hint="Give those gpu_types the node feature of the nodes that have them "
                    "(`sinfo -o '%N %f'`), e.g. " + GPU_TYPES_EXAMPLE + ", or ask for whole "
                    "GPUs (gpus=1).",
                )
        return GpuRequest(f"--gres=shard:{shards}", features)
    count = resources.whole_gpus
    if not picks_model:
        return GpuRequest(f"--gres=gpu:{count}")
    if not profile.gpu_types:  # gpu_type as the site's GRES type, verbatim
        return GpuRequest(f"--gres=gpu:{resources.gpu_type}:{count}")
    if len(types) > 1 and all(kind.feature for kind in types):
        # Any of several models holds it: let SLURM pick among the nodes that have one.
        return GpuRequest(f"--gres=gpu:{count}", tuple(str(kind.feature) for kind in types))
    # The smallest model that holds it, so larger GPUs stay free for the requests needing them.
    smallest = min(types, key=lambda kind: kind.memory)
    return GpuRequest(f"--gres=gpu:{smallest.name}:{count}")


def constraint_options(features: Sequence[str], extra_sbatch: Sequence[str]) -> list[str]:
    """``extra_sbatch`` with the GPU's node features ANDed into its ``--constraint`` (sbatch
    keeps only the last ``--constraint`` given, so the site's own must be merged, not added)."""
    if not features:
        return list(extra_sbatch)
    site: list[str] = []
    kept: list[str] = []
    for option in extra_sbatch:
        match = _CONSTRAINT_OPTION.match(option)
        if match:
            site.append(match.group("value").strip().strip("'\""))
        else:
            kept.append(option)
    terms = [_grouped(expression) for expression in site]
    terms.append(_grouped("|".join(features)))
    return [*kept, f"--constraint={'&'.join(terms)}"]


def _fitting_types(resources: Resources, profile: SlurmProfile) -> list[SlurmGpuType]:
    """The profile's GPU models that hold the request; [] when the profile lists none."""
    if not profile.gpu_types:
        if resources.gpu_memory is not None:
            raise ResourceError(
                f"This SLURM profile cannot ask for GPU memory ({_describe(resources)}): "
                "SLURM has no such request.",
                hint=GPU_MEMORY_HINT,
            )
        return []
    wanted = (resources.gpu_type or "").strip().lower()
    fitting = [
        kind
        for kind in profile.gpu_types
        if wanted in kind.name.lower()
        and (resources.gpu_memory is None or kind.memory >= resources.gpu_memory)
    ]
    if not fitting:
        raise ResourceError(
            f"No GPU of this SLURM profile holds {_describe(resources)}: "
            f"{_listed(profile.gpu_types, 'are listed')}.",
            hint="Ask for one of those (gpu_type, gpu_memory), or add the site's GPU model to "
            "gpu_types in the profile.",
        )
    return fitting


def _grouped(expression: str) -> str:
    return f"({expression})" if "|" in expression else expression


def _listed(types: Sequence[SlurmGpuType], verb: str) -> str:
    names = ", ".join(f"{kind.name} ({format_size(kind.memory)})" for kind in types)
    return f"{names} {verb}"


def _describe(resources: Resources) -> str:
    parts = [f"gpus={resources.gpus:g}"]
    if resources.gpu_type is not None:
        parts.append(f"gpu_type={resources.gpu_type!r}")
    if resources.gpu_memory is not None:
        parts.append(f"gpu_memory={format_size(resources.gpu_memory)}")
    return ", ".join(parts)
