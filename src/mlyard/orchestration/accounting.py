"""Usage of attempts and runs, and what it cost at the profile's rates."""

from __future__ import annotations

from collections.abc import Iterable

from mlyard.models.tasks import Usage
from mlyard.settings import CostRates


def merge_usage(measured: Usage, from_backend: Usage | None) -> Usage:
    """The runtime's own figures, overridden by whatever the backend accounted (e.g. sacct)."""
    if from_backend is None:
        return measured
    fields = measured.model_dump()
    # Only what the backend actually measured: a real zero (no queue wait) counts too.
    for name in from_backend.model_fields_set:
        fields[name] = getattr(from_backend, name)
    return Usage.model_validate(fields)


def estimate_cost(usage: Usage, rates: CostRates) -> float | None:
    """Cost at billing rates per CPU-hour, GPU-hour and GB-hour of memory; None without rates."""
    if not (rates.cpu_hour or rates.gpu_hour or rates.memory_gb_hour):
        return None
    hours = usage.wall_seconds / 3600
    cpu_hours = max(usage.cpu_seconds / 3600, 0.0)
    gpu_hours = usage.gpu_seconds / 3600 if usage.gpu_seconds else usage.gpus * hours
    memory_gb_hours = usage.peak_memory_bytes / 1e9 * hours
    return round(
        cpu_hours * rates.cpu_hour
        + gpu_hours * rates.gpu_hour
        + memory_gb_hours * rates.memory_gb_hour,
        6,
    )


def with_cost(usage: Usage, rates: CostRates) -> Usage:
    if usage.cost is not None:
        return usage
    return usage.model_copy(update={"cost": estimate_cost(usage, rates)})


def total_usage(usages: Iterable[Usage]) -> Usage:
    total = Usage()
    costs: list[float] = []
    fields = total.model_dump()
    for usage in usages:
        fields["wall_seconds"] += usage.wall_seconds
        fields["cpu_seconds"] += usage.cpu_seconds
        fields["gpu_seconds"] += usage.gpu_seconds
        fields["peak_memory_bytes"] = max(fields["peak_memory_bytes"], usage.peak_memory_bytes)
        if usage.cost is not None:
            costs.append(usage.cost)
    fields["cost"] = round(sum(costs), 6) if costs else None
    return Usage.model_validate(fields)
