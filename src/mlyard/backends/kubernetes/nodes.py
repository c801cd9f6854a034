"""What the cluster's nodes can hold, read from their allocatable resources, labels and taints,
so a request no node can ever hold is refused before the run starts, saying what they have."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mlyard.backends.kubernetes.gpu_requests import (
    MEMORY_LABEL,
    MIG_RESOURCE_PREFIX,
    PRODUCT_LABEL,
)
from mlyard.errors import ResourceError


def parse_quantity(text: str | int | float) -> Decimal:
    """A Kubernetes quantity (``'3800m'``, ``'16Gi'``) as a number, by the official client."""
    from kubernetes.utils.quantity import parse_quantity as parse

    value: Decimal = parse(text)  # type: ignore[no-untyped-call]
    return value


@dataclass(frozen=True)
class NodeFacts:
    """One node as far as scheduling a step goes."""

    name: str
    allocatable: dict[str, Decimal]
    labels: dict[str, str] = field(default_factory=dict)
    #: Taints with effect NoSchedule or NoExecute: (key, value, effect).
    taints: tuple[tuple[str, str | None, str], ...] = ()
    unschedulable: bool = False

    @classmethod
    def from_manifest(cls, node: Mapping[str, Any]) -> NodeFacts:
        """From a v1 Node as the API returns it (camelCase JSON)."""
        metadata = node.get("metadata") or {}
        spec = node.get("spec") or {}
        status = node.get("status") or {}
        taints = tuple(
            (t["key"], t.get("value"), t["effect"])
            for t in spec.get("taints") or []
            if t.get("effect") in ("NoSchedule", "NoExecute")
        )
        allocatable = status.get("allocatable") or {}
        return cls(
            name=metadata.get("name", "?"),
            allocatable={key: parse_quantity(value) for key, value in allocatable.items()},
            labels=dict(metadata.get("labels") or {}),
            taints=taints,
            unschedulable=bool(spec.get("unschedulable")),
        )

    def describe(self) -> str:
        """``gpu-1: 16 cpu, 64.0Gi memory, nvidia.com/gpu 2 (NVIDIA-A100-SXM4-80GB)``."""
        parts = []
        if "cpu" in self.allocatable:
            parts.append(f"{self.allocatable['cpu'].normalize():f} cpu")
        if "memory" in self.allocatable:
            parts.append(f"{float(self.allocatable['memory']) / 1024**3:.1f}Gi memory")
        for key in sorted(self.allocatable):
            if "/" in key and self.allocatable[key] > 0 and not key.startswith("hugepages"):
                parts.append(f"{key} {self.allocatable[key].normalize():f}")
        product = self.labels.get(PRODUCT_LABEL)
        text = f"{self.name}: {', '.join(parts) or 'nothing allocatable'}"
        return f"{text} ({product})" if product else text


def gpu_products(nodes: Sequence[NodeFacts]) -> list[str]:
    """The GFD product names on the nodes."""
    return sorted({n.labels[PRODUCT_LABEL] for n in nodes if PRODUCT_LABEL in n.labels})


def mig_profiles(nodes: Sequence[NodeFacts]) -> list[str]:
    """The MIG profiles the nodes advertise (``nvidia.com/mig-1g.10gb`` -> ``1g.10gb``)."""
    return sorted(
        {
            key.removeprefix(MIG_RESOURCE_PREFIX)
            for n in nodes
            for key, amount in n.allocatable.items()
            if key.startswith(MIG_RESOURCE_PREFIX) and amount > 0
        }
    )


@dataclass(frozen=True)
class PodNeeds:
    """What one pod of a step asks of its node."""

    requests: dict[str, Decimal]
    node_selector: dict[str, str] = field(default_factory=dict)
    affinity: list[dict[str, Any]] = field(default_factory=list)
    #: Taint keys tolerated (``None`` in the set: every taint).
    tolerated: frozenset[str | None] = frozenset()


def fits(node: NodeFacts, needs: PodNeeds) -> bool:
    """Whether the empty node could ever hold the pod."""
    if node.unschedulable:
        return False
    if any(node.labels.get(k) != v for k, v in needs.node_selector.items()):
        return False
    if not all(_expression_holds(node.labels, e) for e in needs.affinity):
        return False
    if None not in needs.tolerated and any(key not in needs.tolerated for key, _, _ in node.taints):
        return False
    return all(node.allocatable.get(k, Decimal(0)) >= v for k, v in needs.requests.items())


def _expression_holds(labels: Mapping[str, str], expression: Mapping[str, Any]) -> bool:
    value = labels.get(expression["key"])
    operator = expression["operator"]
    values = expression.get("values") or []
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if value is None:
        return False
    try:
        number, bound = int(value), int(values[0])
    except (ValueError, IndexError):
        return False
    return number > bound if operator == "Gt" else number < bound


def refuse_unless_some_node_fits(nodes: Sequence[NodeFacts], needs: PodNeeds, asked: str) -> None:
    """``ResourceError`` saying what the nodes have when none could ever hold the pod."""
    if not nodes or any(fits(node, needs) for node in nodes):
        return
    shown = [node.describe() for node in nodes[:10]]
    if len(nodes) > 10:
        shown.append(f"... and {len(nodes) - 10} more")
    memory_label = needs.affinity and any(e["key"] == MEMORY_LABEL for e in needs.affinity)
    extra = f" GPUs need the {MEMORY_LABEL} label (MiB) for gpu_memory." if memory_label else ""
    raise ResourceError(
        f"No node of the cluster can ever hold this step ({asked}).",
        hint="The nodes have:\n  " + "\n  ".join(shown) + "\nAsk for less, or check the "
        f"profile's node_selector and tolerations.{extra}",
    )


def cpu_quantity(cpus: float) -> str:
    """``1.0`` -> ``'1'``; ``0.5`` -> ``'500m'``."""
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{math.ceil(cpus * 1000)}m"


def memory_quantity(num_bytes: int) -> str:
    """Bytes as a quantity people read in messages: ``'4Gi'``, ``'400Mi'``, else bytes."""
    for suffix, factor in (("Gi", 1024**3), ("Mi", 1024**2)):
        if num_bytes % factor == 0:
            return f"{num_bytes // factor}{suffix}"
    return str(num_bytes)
