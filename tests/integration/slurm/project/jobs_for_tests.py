"""Plain step functions the SLURM integration tests run through the real runtime."""

from __future__ import annotations

import time


def nap(seconds: float) -> float:
    print(f"napping {seconds}", flush=True)
    time.sleep(seconds)
    print("woke up", flush=True)
    return seconds


def count_lines(lines: int) -> int:
    for number in range(lines):
        print(f"line {number}", flush=True)
        time.sleep(0.05)
    return lines


def hog_memory(megabytes: int, seconds: float) -> int:
    block = bytearray(megabytes * 1024 * 1024)
    for index in range(0, len(block), 4096):
        block[index] = 1  # touch every page so it counts as resident
    time.sleep(seconds)
    return len(block)


def interpreter_prefix() -> str:
    import sys

    return sys.prefix


def ray_squares(count: int) -> dict[str, object]:
    """A Ray driver: attaches to the job's cluster (RAY_ADDRESS) and fans tasks out on it."""
    import os

    import ray

    ray.init(logging_level="ERROR")

    @ray.remote
    def square(value: int) -> int:
        return value * value

    total = sum(ray.get([square.remote(value) for value in range(count)]))
    return {
        "total": total,
        "nodes": sum(1 for node in ray.nodes() if node["Alive"]),
        "address": os.environ["RAY_ADDRESS"],
        "gcs_address": ray.get_runtime_context().gcs_address,
    }


def torch_all_reduce() -> dict[str, object]:
    """A distributed PyTorch step: rendezvous from torchrun, one all-reduce over gloo."""
    import os

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    tensor = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(tensor)
    summary = {
        "rank": dist.get_rank(),
        "world_size": dist.get_world_size(),
        "sum": tensor.item(),
        "master_addr": os.environ["MASTER_ADDR"],
        "launcher": os.environ["MLYARD_LAUNCHER"],
    }
    dist.destroy_process_group()
    return summary
