"""How a step's runtime starts inside its allocation: as one process, under ``torchrun`` on every
node, or as the driver of a Ray cluster booted across the job's nodes.

The lines returned here end the job script; they see the job's environment (``SLURM_*``) and
expand it at run time, so the same script works whichever nodes SLURM picks.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from mlyard.models.resources import Resources

#: The runtime module every launcher ends up running.
RUNTIME_MODULE = "mlyard.runtime"
#: Boots the Ray cluster and runs the runtime as its driver (see mlyard.runtime.ray_driver).
RAY_DRIVER_MODULE = "mlyard.runtime.ray_driver"


def launch_lines(resources: Resources, python: str, task_arguments: Sequence[str]) -> list[str]:
    """The closing lines of a job script: rendezvous variables, then the launch command."""
    runtime = [python, "-m", RUNTIME_MODULE, *task_arguments]
    lines = rendezvous_lines(resources) if resources.nodes > 1 or resources.launcher else []
    if resources.launcher == "torchrun":
        return [*lines, torchrun_command(resources, python, task_arguments)]
    if resources.launcher == "ray":
        return [*lines, ray_driver_command(resources, python, runtime)]
    # Not `exec`: the shell stays to run the EXIT trap; scancel signals the whole job step.
    return [*lines, _join(runtime)]


def rendezvous_lines(resources: Resources) -> list[str]:
    """Where distributed processes meet: the first node of the allocation is the master."""
    return [
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export MASTER_ADDR",
        # Derived from the job id, so two jobs sharing a node do not collide.
        "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
        f"export WORLD_SIZE={resources.nodes * resources.ranks_per_node}",
        f"export MLYARD_LAUNCHER={resources.launcher or 'none'}",
    ]


def torchrun_command(resources: Resources, python: str, task_arguments: Sequence[str]) -> str:
    """One ``torchrun`` agent per node (through ``srun``), rendezvous over c10d at the master;
    every rank runs the step, only rank 0 stores its outputs and result."""
    nodes = resources.nodes
    srun = [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={resources.whole_cpus}",
        # One failed node ends the step instead of leaving the others waiting on a collective.
        "--kill-on-bad-exit=1",
    ]
    torchrun = [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={resources.ranks_per_node}",
        "--rdzv-backend=c10d",
    ]
    # The rendezvous id and endpoint expand in the job's shell, so they stay unquoted.
    rendezvous = '--rdzv-id="$SLURM_JOB_ID" --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT"'
    module = ["-m", RUNTIME_MODULE, *task_arguments]
    return f"{_join(srun)} {_join(torchrun)} {rendezvous} {_join(module)}"


def ray_driver_command(resources: Resources, python: str, runtime: Sequence[str]) -> str:
    """The Ray driver launcher: head on this node, one worker per other node, then the step."""
    driver = [
        python,
        "-m",
        RAY_DRIVER_MODULE,
        f"--nodes={resources.nodes}",
        f"--cpus={resources.whole_cpus}",
        f"--gpus={resources.whole_gpus}",
        "--",
        *runtime,
    ]
    return _join(driver)


def _join(parts: Sequence[str]) -> str:
    return " ".join(shlex.quote(part) for part in parts)
