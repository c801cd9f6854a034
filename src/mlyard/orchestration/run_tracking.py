"""A run's MLflow side as the orchestrator sees it: hand finished steps over, never wait for
MLflow but at the run's end, and then only so long.

``StepTracking`` makes the tracker calls; ``TrackingWorker`` makes them on their own thread.
This module ties both to one run: the live-logging target, the replay of steps an earlier
orchestrator left untracked, and the bounded wait at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from mlyard.artifacts.store import ArtifactStore
from mlyard.models.backends import JobState, JobStatus
from mlyard.models.runs import RunState, StepState
from mlyard.models.tasks import TrackingTarget
from mlyard.orchestration.attempts import AttemptOutcome, read_outcome
from mlyard.orchestration.run_state import StepRecord
from mlyard.orchestration.step_tracking import FinishedStep, StepTracking
from mlyard.orchestration.tracking_worker import TrackingWorker
from mlyard.store.repository import MetadataStore, RunRow
from mlyard.tracking.base import Tracker

logger = logging.getLogger(__name__)

#: How long the run's end waits for MLflow to take the last steps, and after how long it says
#: that it is waiting. What is left is sent by ``mlyard runs resume``.
TRACKING_DRAIN_SECONDS = 120.0
TRACKING_SLOW_NOTICE_SECONDS = 5.0
#: A cancelled run (Ctrl-C) waits less: whoever pressed it wants the prompt back, and MLflow may
#: still be importing on a loaded machine. What is left goes out with ``mlyard runs resume``.
CANCEL_DRAIN_SECONDS = 10.0


class RunTracking:
    """The tracking of one run; ``warnings`` collects what the run's summary should say."""

    def __init__(
        self,
        *,
        tracker: Tracker,
        metadata: MetadataStore,
        artifacts: ArtifactStore,
        run: RunRow,
        warnings: list[str],
        drain_seconds: float = TRACKING_DRAIN_SECONDS,
    ) -> None:
        self.tracker = tracker
        self.run = run
        self.warnings = warnings
        self.drain_seconds = drain_seconds
        self.steps = StepTracking(tracker, metadata, artifacts, warnings)
        self.worker = TrackingWorker(self.steps, run)
        self._artifacts = artifacts

    def live_target(self) -> TrackingTarget | None:
        """Create the parent run now, for steps that can reach MLflow and log live into nested
        runs of it; ``None`` when the tracker cannot give one."""
        self.steps.start_run(self.run)
        experiment = getattr(self.tracker, "experiment_id", None)
        if self.run.mlflow_run_id is None or experiment is None:
            return None
        return TrackingTarget(
            uri=getattr(self.tracker, "uri", None),
            experiment_id=experiment(),
            run_id=self.run.mlflow_run_id,
            live=True,
        )

    def prepare(self) -> None:
        """Start MLflow's import and store set-up (a step is about to run)."""
        self.worker.prepare()

    def record(self, record: StepRecord, outcome: AttemptOutcome) -> None:
        """Hand a finished step over; returns at once."""
        self.worker.record(FinishedStep(record, outcome))

    def replay_untracked(self, records: Iterable[StepRecord]) -> None:
        """Steps that ended while MLflow was not yet told (a killed orchestrator): tell it now."""
        for record in records:
            attempt = record.current_attempt
            if (
                record.state in (StepState.SUCCEEDED, StepState.FAILED)
                and attempt is not None
                and not attempt.tracked
            ):
                status = JobStatus(state=JobState.SUCCEEDED)
                outcome = read_outcome(self._artifacts, attempt, status)
                self.worker.record(FinishedStep(record, outcome, replayed=True))

    def finish(
        self, final: RunState, records: Iterable[StepRecord], *, cancelled: bool = False
    ) -> None:
        """Close the parent run with ``final`` and wait for the tracker to take the last
        steps, but not forever: a slow or unreachable MLflow gets a warning, and what it did
        not take is sent by ``mlyard runs resume``."""
        cached = {
            record.node.name: record.row.cached_from_step_run_id
            for record in records
            if record.state == StepState.CACHED and record.row.cached_from_step_run_id
        }
        worker = self.worker
        worker.finish_run(final, cached)
        drain = min(self.drain_seconds, CANCEL_DRAIN_SECONDS) if cancelled else self.drain_seconds
        notice = min(TRACKING_SLOW_NOTICE_SECONDS, drain)
        if worker.wait_idle(notice):
            return
        where = getattr(self.tracker, "uri", "the tracking store")
        logger.warning(
            "waiting up to %g s for MLflow at %s to take the last %d step(s)",
            drain,
            where,
            worker.unsent_steps,
        )
        if worker.wait_idle(drain - notice):
            return
        self.warnings.append(
            f"MLflow at {where} did not take the last {worker.unsent_steps} step(s) within "
            f"{drain:g} s (slow or unreachable). Their metrics are in "
            f"mlyard's store; `mlyard runs resume {self.run.id}` sends them to MLflow."
        )
        logger.warning(self.warnings[-1])

    def close(self) -> None:
        """Let the tracking thread end once idle; never waits."""
        self.worker.close()
