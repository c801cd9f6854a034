"""Requests no node can ever hold are refused, saying what the nodes have."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from mlyard.backends.kubernetes.nodes import (
    NodeFacts,
    PodNeeds,
    cpu_quantity,
    fits,
    gpu_products,
    memory_quantity,
    mig_profiles,
    refuse_unless_some_node_fits,
)
from mlyard.errors import ResourceError


def node(name: str, allocatable: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": extra.get("labels", {})},
        "spec": {"taints": extra.get("taints", [])},
        "status": {"allocatable": allocatable, "capacity": allocatable},
    }


CPU_NODE = NodeFacts.from_manifest(node("cpu-1", {"cpu": "3800m", "memory": "16Gi", "pods": "110"}))
GPU_NODE = NodeFacts.from_manifest(
    node(
        "gpu-1",
        {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "2", "nvidia.com/mig-1g.10gb": "7"},
        labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
    )
)


def test_quantities_and_inventory_are_read_from_node_objects() -> None:
    assert CPU_NODE.allocatable["cpu"] == Decimal("3.8")
    assert CPU_NODE.allocatable["memory"] == 16 * 1024**3
    assert gpu_products([CPU_NODE, GPU_NODE]) == ["NVIDIA-A100-SXM4-80GB"]
    assert mig_profiles([CPU_NODE, GPU_NODE]) == ["1g.10gb"]
    assert "gpu-1: 16 cpu, 64.0Gi memory" in GPU_NODE.describe()


def test_taints_keep_pods_off_unless_tolerated() -> None:
    gpu = PodNeeds(requests={"nvidia.com/gpu": Decimal(1)})
    assert not fits(GPU_NODE, gpu)
    assert fits(GPU_NODE, PodNeeds(requests=gpu.requests, tolerated=frozenset({"nvidia.com/gpu"})))


def test_affinity_and_selector_are_honoured() -> None:
    tolerated = frozenset({"nvidia.com/gpu"})
    on_a100 = PodNeeds(
        requests={},
        tolerated=tolerated,
        affinity=[{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["Tesla-T4"]}],
    )
    assert not fits(GPU_NODE, on_a100)
    assert not fits(GPU_NODE, PodNeeds(requests={}, tolerated=tolerated, node_selector={"a": "b"}))


def test_a_request_no_node_holds_is_refused_listing_the_nodes() -> None:
    needs = PodNeeds(requests={"cpu": Decimal(100_000)}, tolerated=frozenset({None}))
    with pytest.raises(ResourceError) as caught:
        refuse_unless_some_node_fits([CPU_NODE, GPU_NODE], needs, "100000 cpus")
    text = str(caught.value)
    assert "100000 cpus" in text and "cpu-1: 3.8 cpu" in text and "nvidia.com/gpu 2" in text
    refuse_unless_some_node_fits(
        [CPU_NODE, GPU_NODE], PodNeeds(requests={"cpu": Decimal(2)}), "2 cpus"
    )


def test_cpu_quantities() -> None:
    assert (
        cpu_quantity(1.0) == "1" and cpu_quantity(0.5) == "500m" and cpu_quantity(2.25) == "2250m"
    )


def test_memory_quantities() -> None:
    assert memory_quantity(2 * 1024**3) == "2Gi" and memory_quantity(400 * 1024**2) == "400Mi"
    assert memory_quantity(4 * 1000**3) == "4000000000"
