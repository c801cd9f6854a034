"""Building the ``RunView`` people and scripts see, from stored rows.

A cached step ran in an earlier run; its metrics are that run's, shown under the cached step's
name and listed in ``RunView.cached_metrics`` with the run they came from, so a gate reading a
run's metrics sees every step's, cached or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from mlyard.models.backends import JobHandle
from mlyard.models.pipelines import PipelineGraph
from mlyard.models.runs import RunState, RunView, StepState, StepView
from mlyard.models.tasks import ArtifactRef, Usage
from mlyard.orchestration.accounting import total_usage
from mlyard.store.repository import (
    AttemptRow,
    MetricRow,
    ModelVersionRow,
    RunRow,
    StepRunRow,
    as_utc,
)


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    start, end = as_utc(start), as_utc(end)
    if start is None:
        return None
    return ((end or datetime.now(UTC)) - start).total_seconds()


def metric_step_run_ids(step_rows: Iterable[StepRunRow]) -> list[str]:
    """The step runs whose metrics a run's view shows: the run's own, and for each cached
    step the step run it reused."""
    rows = list(step_rows)
    return [row.id for row in rows] + [
        row.cached_from_step_run_id
        for row in rows
        if row.state == StepState.CACHED and row.cached_from_step_run_id
    ]


def build_run_view(
    run: RunRow,
    step_rows: Iterable[StepRunRow],
    attempts: Iterable[AttemptRow],
    outputs: Mapping[str, Mapping[str, ArtifactRef]],
    metrics: Iterable[MetricRow] = (),
    models: Iterable[ModelVersionRow] = (),
    warnings: Iterable[str] = (),
    mlflow_url: str | None = None,
) -> RunView:
    by_step: dict[str, list[AttemptRow]] = {}
    for attempt in attempts:
        by_step.setdefault(attempt.step_run_id, []).append(attempt)
    rows = {row.name: row for row in step_rows}
    names = {row.id: row.name for row in rows.values()}
    graph = PipelineGraph.model_validate(run.graph)
    steps = []
    for node in graph.steps:
        row = rows[node.name]
        step_attempts = sorted(by_step.get(row.id, []), key=lambda a: a.number)
        last = step_attempts[-1] if step_attempts else None
        steps.append(
            StepView(
                name=row.name,
                state=StepState(row.state),
                attempts=len(step_attempts),
                retries=max(0, len(step_attempts) - 1),
                started_at=as_utc(row.started_at),
                finished_at=as_utc(row.finished_at),
                duration_seconds=_duration(row.started_at, row.finished_at),
                cached_from_run_id=row.cached_from_run_id,
                reason=row.reason,
                error=row.error,
                outputs=dict(outputs.get(row.id, {})),
                usage=Usage.model_validate(row.usage) if row.usage else None,
                submit_script=last.submit_script if last else None,
                log_handle=JobHandle.model_validate(last.handle) if last and last.handle else None,
            )
        )
    # Metrics of a reused step run count as the cached step's (that step never ran here).
    reused = {
        row.cached_from_step_run_id: row
        for row in rows.values()
        if row.state == StepState.CACHED and row.cached_from_step_run_id
    }
    last_metrics: dict[str, float] = {}
    cached_metrics: dict[str, str] = {}
    for metric in metrics:
        if metric.step_run_id in names:
            last_metrics[f"{names[metric.step_run_id]}.{metric.key}"] = metric.value
        elif (cached := reused.get(metric.step_run_id)) is not None:
            key = f"{cached.name}.{metric.key}"
            last_metrics[key] = metric.value
            cached_metrics[key] = cached.cached_from_run_id or ""
    ran = [s.usage for s in steps if s.usage is not None and s.state != StepState.CACHED]
    return RunView(
        id=run.id,
        pipeline_name=run.pipeline_name,
        state=RunState(run.state),
        params=run.params,
        backend=run.backend,
        created_at=as_utc(run.created_at) or datetime.now(UTC),
        started_at=as_utc(run.started_at),
        finished_at=as_utc(run.finished_at),
        duration_seconds=_duration(run.started_at, run.finished_at),
        error=run.error,
        steps=steps,
        metrics=last_metrics,
        cached_metrics=cached_metrics,
        usage=total_usage(ran),
        artifacts_url=run.artifacts_url,
        mlflow_run_id=run.mlflow_run_id,
        mlflow_url=mlflow_url,
        models=[f"{m.name} version {m.version}" for m in models if m.version],
        warnings=list(warnings),
    )
