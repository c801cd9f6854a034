"""Distributed PyTorch steps (gloo on the CPU) that report their process group."""

from __future__ import annotations

import os

from mlyard import Resources, pipeline, step


def _all_reduce() -> dict[str, object]:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    tensor = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(tensor)
    summary = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "sum": tensor.item(),
        "devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
    }
    dist.destroy_process_group()
    return summary


@step(resources=Resources(gpus=2, launcher="torchrun"))
def two_ranks() -> dict[str, object]:
    return _all_reduce()


@step(resources=Resources(launcher="torchrun"))
def one_rank() -> dict[str, object]:
    return _all_reduce()


@pipeline
def distributed() -> None:
    two_ranks()
    one_rank()
