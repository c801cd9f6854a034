from __future__ import annotations

from mlyard.models.tasks import Usage
from mlyard.orchestration.accounting import estimate_cost, merge_usage, total_usage
from mlyard.settings import CostRates


def test_cost_from_billing_rates() -> None:
    usage = Usage(
        wall_seconds=3600, cpu_seconds=7200, gpus=1, gpu_seconds=3600, peak_memory_bytes=2 * 10**9
    )
    rates = CostRates(cpu_hour=0.5, gpu_hour=2.0, memory_gb_hour=0.1)
    assert estimate_cost(usage, rates) == 2 * 0.5 + 1 * 2.0 + 2 * 0.1
    assert estimate_cost(usage, CostRates()) is None


def test_backend_accounting_overrides_measured_figures() -> None:
    measured = Usage(wall_seconds=10, cpu_seconds=5, peak_memory_bytes=100)
    merged = merge_usage(measured, Usage(wall_seconds=12, queue_seconds=3.0))
    assert (merged.wall_seconds, merged.cpu_seconds, merged.queue_seconds) == (12, 5, 3.0)


def test_total_usage_sums_time_and_takes_the_peak() -> None:
    total = total_usage(
        [
            Usage(wall_seconds=1, cpu_seconds=1, peak_memory_bytes=5, cost=1.0),
            Usage(wall_seconds=2, cpu_seconds=3, peak_memory_bytes=9),
        ]
    )
    assert (total.wall_seconds, total.cpu_seconds, total.peak_memory_bytes, total.cost) == (
        3,
        4,
        9,
        1.0,
    )
