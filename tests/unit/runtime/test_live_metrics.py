from __future__ import annotations

from mlyard.models.tasks import MetricRecord, TrackingTarget
from mlyard.runtime.live_metrics import LiveMetrics


def test_unreachable_server_means_buffering_only() -> None:
    target = TrackingTarget(uri="http://127.0.0.1:9", experiment_id="1", run_id="p", live=True)
    live = LiveMetrics(target, "train", "a.1.1")
    assert live.start() is False
    live.add(MetricRecord(key="loss", value=1.0, timestamp_ms=1))
    live.finish()
    assert (live.run_id, live.sent) == (None, 0)


def test_live_logging_is_off_unless_asked() -> None:
    live = LiveMetrics(TrackingTarget(uri="http://127.0.0.1:9"), "train", "a.1.1")
    assert live.start() is False
