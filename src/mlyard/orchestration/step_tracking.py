"""Replaying what steps logged to the tracker (MLflow): runs, params, metrics, usage, models.

Steps buffer into their result document; the orchestrator replays it here, on its tracking
thread (``tracking_worker.py``), so compute nodes never need to reach MLflow and the steps never
wait for it. A tracking failure mid-run becomes a warning on the run, not a failed run: the
metrics stay in the metadata store, and the attempt stays untracked, so a later
``mlyard runs resume`` sends it again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlyard.artifacts.materializers import load_value
from mlyard.artifacts.store import ArtifactStore
from mlyard.errors import MlyardError
from mlyard.models.runs import RunState
from mlyard.models.tasks import MetricRecord
from mlyard.orchestration.run_state import write_through
from mlyard.runtime.code import ensure_code_package, make_importable
from mlyard.store.repository import AttemptRow, MetadataStore, RunRow
from mlyard.store.rows import ModelVersionRow
from mlyard.tracking.base import Tracker

if TYPE_CHECKING:
    from mlyard.orchestration.attempts import AttemptOutcome
    from mlyard.orchestration.run_state import StepRecord

logger = logging.getLogger(__name__)

_MLFLOW_STATUS = {
    RunState.SUCCEEDED: "FINISHED",
    RunState.FAILED: "FAILED",
    RunState.CANCELLED: "KILLED",
}


@dataclass(frozen=True)
class FinishedStep:
    """A step whose last attempt ended (succeeded or failed for good) and is to be tracked."""

    record: StepRecord
    outcome: AttemptOutcome
    #: Ended under an earlier orchestrator: its nested MLflow run may exist already.
    replayed: bool = False


@dataclass(frozen=True)
class _Tracked:
    """What MLflow holds for one step of a batch, written to mlyard's store together."""

    attempt: AttemptRow
    record: StepRecord
    mlflow_run_id: str
    versions: list[ModelVersionRow]
    parent_metrics: list[MetricRecord]


class StepTracking:
    """Sends finished steps to the tracker in batches; every call may block on MLflow, so
    only the tracking thread makes them."""

    def __init__(
        self,
        tracker: Tracker,
        metadata: MetadataStore,
        artifacts: ArtifactStore,
        warnings: list[str],
    ) -> None:
        self.tracker = tracker
        self.metadata = metadata
        self.artifacts = artifacts
        self.warnings = warnings

    def _warn(self, what: str, error: MlyardError) -> None:
        message = f"{what}: {error.message}"
        logger.warning(message)
        if message not in self.warnings:  # an outage fails every batch alike: say it once
            self.warnings.append(message)

    def prepare(self) -> None:
        """MLflow's import and store set-up, ahead of the first batch. A failure here is
        reported by the batch that follows (it tries again), not twice."""
        try:
            self.tracker.prepare()
        except MlyardError as error:
            logger.debug("tracker not ready: %s", error.message)

    def start_run(self, run: RunRow) -> None:
        """Create the MLflow parent run; done at the first executed step, so a run whose
        steps were all cached costs no MLflow start-up (it logged nothing new)."""
        if run.mlflow_run_id is not None:
            return
        try:
            mlflow_id = self.tracker.start_pipeline_run(run.id, run.pipeline_name, run.params)
            self.tracker.log_params(mlflow_id, run.params)
        except MlyardError as error:
            self._warn("Could not create the MLflow run", error)
            return
        write_through(self.metadata, run, mlflow_run_id=mlflow_id)

    def record_steps(self, run: RunRow, steps: list[FinishedStep]) -> None:
        """Send ``steps`` to MLflow (a nested run each, their metrics on the parent run in
        one request), then mark those MLflow took ``tracked`` in one transaction: persisted
        first, marked after, so a kill in between only means a replay on resume."""
        pending = [s for s in steps if (a := s.record.current_attempt) and not a.tracked]
        if not pending:
            return
        self.start_run(run)
        parent = run.mlflow_run_id
        if parent is None:
            return
        tracked: list[_Tracked] = []
        for step in pending:
            try:
                tracked.append(self._send_step(run, parent, step))
            except MlyardError as error:
                self._warn(f"Could not log step {step.record.node.name!r} to MLflow", error)
        metrics = [metric for item in tracked for metric in item.parent_metrics]
        if metrics:
            try:
                self.tracker.log_metrics(parent, metrics)
            except MlyardError as error:
                self._warn("Could not log the steps' metrics on the MLflow pipeline run", error)
                return  # not marked tracked: resume sends them again
        if tracked:
            self._mark_tracked(tracked)

    def _send_step(self, run: RunRow, parent: str, step: FinishedStep) -> _Tracked:
        record, outcome = step.record, step.outcome
        attempt = record.current_attempt
        assert attempt is not None
        result = outcome.result
        mlflow_id = None
        if result is not None and result.mlflow_run_id:
            mlflow_id = result.mlflow_run_id  # the step created its run and logged live
        elif step.replayed:
            mlflow_id = self.tracker.find_step_run(parent, attempt.id)
        if mlflow_id is None:
            mlflow_id = self.tracker.start_step_run(parent, record.node.name, attempt.id)
        params = {
            name: binding.value
            for name, binding in record.node.inputs.items()
            if binding.kind == "literal"
        }
        if result is not None:
            params.update(result.params)
        unsent = []
        if result is not None:
            unsent = (
                result.metrics[result.live_metrics_sent :]
                if result.mlflow_run_id
                else result.metrics
            )
        self.tracker.log_step_data(mlflow_id, params, unsent, outcome.usage)
        versions = []
        if outcome.succeeded and result is not None and result.models:
            # Models of user-defined classes unpickle only with the run's code importable.
            make_importable(ensure_code_package(self.artifacts, run.code_digest))
            for model in result.models:
                model_object = load_value(self.artifacts, model.artifact)
                example = model.input_example
                version = self.tracker.log_model(
                    mlflow_id,
                    model,
                    model_object,
                    None if example is None else load_value(self.artifacts, example),
                )
                versions.append(
                    ModelVersionRow(
                        step_run_id=record.row.id,
                        name=model.name,
                        flavor=model.flavor,
                        digest=model.artifact.digest,
                        version=version,
                    )
                )
        self.tracker.end_run(mlflow_id, "FINISHED" if outcome.succeeded else "FAILED")
        parent_metrics = []
        if result is not None:
            parent_metrics = _parent_metrics(record.node.name, result.metrics)
        return _Tracked(attempt, record, mlflow_id, versions, parent_metrics)

    def _mark_tracked(self, tracked: list[_Tracked]) -> None:
        try:
            with self.metadata.transaction() as connection:
                for item in tracked:
                    for version in item.versions:
                        self.metadata.insert_in(connection, version)
                    write_through(self.metadata, item.attempt, connection=connection, tracked=True)
                    write_through(
                        self.metadata,
                        item.record.row,
                        connection=connection,
                        mlflow_run_id=item.mlflow_run_id,
                    )
        except MlyardError as error:
            self._warn("Could not mark steps as sent to MLflow", error)

    def finish_run(
        self, run: RunRow, state: RunState, cached: Mapping[str, str] | None = None
    ) -> None:
        """Close the MLflow parent run with the run's final state. ``cached`` (step name ->
        the step run it reused) puts the cached steps' metrics on it too, so that a partly
        cached run compares in MLflow like one that ran everything."""
        if run.mlflow_run_id is None:
            return
        try:
            if cached:
                metrics = self.metadata.metrics(cached.values())
                names = {source: step for step, source in cached.items()}
                by_step: dict[str, list[MetricRecord]] = {}
                for row in metrics:
                    by_step.setdefault(names[row.step_run_id], []).append(
                        MetricRecord(
                            key=row.key,
                            value=row.value,
                            step=row.step,
                            timestamp_ms=row.timestamp_ms,
                        )
                    )
                records = [m for step, rows in by_step.items() for m in _parent_metrics(step, rows)]
                if records:
                    self.tracker.log_metrics(run.mlflow_run_id, records)
            self.tracker.end_run(run.mlflow_run_id, _MLFLOW_STATUS.get(state, "FAILED"))
        except MlyardError as error:
            self._warn("Could not close the MLflow run", error)


def _parent_metrics(step_name: str, metrics: list[MetricRecord]) -> list[MetricRecord]:
    """The last value of each of a step's metrics, named ``step.metric`` (as in the run's
    summary), for the pipeline run: MLflow's run comparison then works on pipeline runs."""
    last: dict[str, MetricRecord] = {}
    for metric in metrics:
        last[metric.key] = metric
    return [
        MetricRecord(
            key=f"{step_name}.{m.key}", value=m.value, step=m.step, timestamp_ms=m.timestamp_ms
        )
        for m in last.values()
    ]
