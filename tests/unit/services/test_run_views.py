"""A run's view reports the metrics of its cached steps, taken from the step runs they reused."""

from __future__ import annotations

from datetime import UTC, datetime

from mlyard.models.pipelines import PipelineGraph, StepNode
from mlyard.models.runs import StepState
from mlyard.services.run_views import build_run_view, metric_step_run_ids
from mlyard.store.repository import MetricRow, RunRow, StepRunRow

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _run(run_id: str) -> RunRow:
    graph = PipelineGraph(
        pipeline_name="p",
        steps=[
            StepNode(name=name, function=f"m:{name}", code_fingerprint="sha256:0")
            for name in ("train", "evaluate")
        ],
    )
    return RunRow(
        id=run_id,
        pipeline_name="p",
        state="SUCCEEDED",
        params={},
        graph=graph.model_dump(mode="json"),
        code_digest="sha256:0",
        code_module="m",
        project_dir="/p",
        backend="local",
        artifacts_url="/a",
        created_at=NOW,
    )


def _metric(step_run_id: str, key: str, value: float, row_id: int) -> MetricRow:
    return MetricRow(id=row_id, step_run_id=step_run_id, key=key, value=value, timestamp_ms=0)


def test_cached_steps_report_the_metrics_of_the_run_they_came_from() -> None:
    steps = [
        StepRunRow(id="new.1", run_id="new", name="train", state=StepState.SUCCEEDED.value),
        StepRunRow(
            id="new.2",
            run_id="new",
            name="evaluate",
            state=StepState.CACHED.value,
            cached_from_run_id="old",
            cached_from_step_run_id="old.2",
        ),
    ]
    assert metric_step_run_ids(steps) == ["new.1", "new.2", "old.2"]
    metrics = [
        _metric("old.1", "loss", 9.0, 1),  # the old run's train: not reused, not reported
        _metric("old.2", "accuracy", 0.7, 2),
        _metric("old.2", "accuracy", 0.9, 3),  # the last value counts
        _metric("new.1", "loss", 0.5, 4),
    ]

    view = build_run_view(_run("new"), steps, [], {}, metrics)

    assert view.metrics == {"train.loss": 0.5, "evaluate.accuracy": 0.9}
    assert view.cached_metrics == {"evaluate.accuracy": "old"}


def test_a_run_without_cached_steps_marks_nothing_cached() -> None:
    steps = [
        StepRunRow(id=f"r.{number}", run_id="r", name=name, state=StepState.SUCCEEDED.value)
        for number, name in ((1, "train"), (2, "evaluate"))
    ]

    view = build_run_view(_run("r"), steps, [], {}, [_metric("r.1", "loss", 0.1, 1)])

    assert metric_step_run_ids(steps) == ["r.1", "r.2"]
    assert view.metrics == {"train.loss": 0.1}
    assert view.cached_metrics == {}
