"""What this machine can hold: the checks before a step is submitted, and why one waits."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from mlyard.errors import ResourceError
from mlyard.models.resources import Resources, format_size


def check_machine_holds(resources: Resources, cpus: float, memory: int) -> None:
    """``ResourceError`` with the fix when this machine (``cpus``, ``memory`` bytes) can never
    run a step asking for ``resources``; GPUs are the allocator's to check."""
    if resources.launcher == "torchrun" and importlib.util.find_spec("torch") is None:
        raise ResourceError(
            "The step asks for launcher='torchrun', but PyTorch is not installed in the "
            f"environment that runs local steps ({sys.executable}).",
            hint="Install torch there (pip install torch), or drop launcher='torchrun'.",
        )
    if resources.cpus > cpus:
        raise ResourceError(
            f"The step asks for {resources.cpus:g} CPUs; this machine has {cpus:g}.",
            hint="Lower Resources(cpus=...) or run on a bigger backend (--backend NAME).",
        )
    if resources.memory and resources.memory > memory:
        raise ResourceError(
            f"The step asks for {format_size(resources.memory)} of memory; this machine "
            f"has {format_size(memory)}.",
            hint="Lower Resources(memory=...) or run on a bigger backend (--backend NAME).",
        )


def pending_reason(resources: Resources, other_gpu_holders: Sequence[int]) -> str:
    """Why a queued step waits: what it asks for, and which other mlyard processes hold
    GPUs it could use."""
    wants = [f"{resources.cpus:g} CPU"]
    if resources.memory:
        wants.append(format_size(resources.memory))
    if resources.gpus:
        wants.append(f"{resources.gpus:g} GPU")
    reason = "waiting for " + ", ".join(wants)
    if other_gpu_holders:
        pids = ", ".join(str(pid) for pid in other_gpu_holders)
        reason += f" (GPUs also leased by other mlyard processes: pid {pids})"
    return reason
