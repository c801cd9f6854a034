"""Replaying what steps logged to the tracker (MLflow): runs, params, metrics, usage, models.

Steps buffer into their result document; the orchestrator replays it here, so compute nodes
never need to reach MLflow. A tracking failure mid-run becomes a warning on the run, not a
failed run: the metrics stay in the metadata store.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlyard.artifacts.materializers import load_value
from mlyard.artifacts.store import ArtifactStore
from mlyard.errors import MlyardError
from mlyard.models.runs import RunState
from mlyard.orchestration.run_state import write_through
from mlyard.runtime.code import ensure_code_package, make_importable
from mlyard.store.repository import MetadataStore, RunRow
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


class StepTracking:
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
        self.warnings.append(message)

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

    def record_step(self, run: RunRow, record: StepRecord, outcome: AttemptOutcome) -> None:
        attempt = record.current_attempt
        if attempt is None or attempt.tracked:
            return
        self.start_run(run)
        if run.mlflow_run_id is None:
            return
        result = outcome.result
        try:
            if result is not None and result.mlflow_run_id:
                mlflow_id = result.mlflow_run_id  # the step created its run and logged live
            else:
                mlflow_id = self.tracker.start_step_run(
                    run.mlflow_run_id, record.node.name, attempt.id
                )
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
        except MlyardError as error:
            self._warn(f"Could not log step {record.node.name!r} to MLflow", error)
            return
        if versions:
            self.metadata.add(*versions)
        write_through(self.metadata, attempt, tracked=True)
        write_through(self.metadata, record.row, mlflow_run_id=mlflow_id)

    def finish_run(self, run: RunRow, state: RunState) -> None:
        if run.mlflow_run_id is None:
            return
        try:
            self.tracker.end_run(run.mlflow_run_id, _MLFLOW_STATUS.get(state, "FAILED"))
        except MlyardError as error:
            self._warn("Could not close the MLflow run", error)


class TrackingQueue:
    """Runs tracker calls on one background thread, in order, so that a slow MLflow (its
    first use alone takes seconds) never holds up scheduling."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="mlyard-tracking", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                job()
            except Exception:  # a tracking failure must never stop the run
                logger.exception("tracking failed")
            finally:
                self._queue.task_done()

    def submit(self, job: Callable[[], None]) -> None:
        self._queue.put(job)

    def drain(self) -> None:
        """Wait until every submitted call ran."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
