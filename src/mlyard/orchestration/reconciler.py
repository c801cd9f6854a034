"""The orchestrator loop: ready steps → cache lookup → submit → poll → record → dependents.

It never blocks on a backend: ``submit`` returns at once and the loop polls all active jobs in
one ``status`` call per interval. Every state change is written to the metadata store before it
is acted on, so ``mlyard runs resume`` can continue a run whose orchestrator was killed.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend
from mlyard.errors import BackendError
from mlyard.models.backends import JobState, JobStatus
from mlyard.models.pipelines import PipelineGraph
from mlyard.models.runs import RunState, StepState
from mlyard.orchestration.attempts import AttemptLauncher, AttemptOutcome, read_outcome
from mlyard.orchestration.run_state import (
    StepRecord,
    moved_on,
    record_progress,
    run_outcome,
    write_through,
)
from mlyard.orchestration.run_tracking import TRACKING_DRAIN_SECONDS, RunTracking
from mlyard.store.repository import MetadataStore, RunRow, as_utc, utcnow
from mlyard.tracking.base import Tracker

logger = logging.getLogger(__name__)

#: Infrastructure failures (preemption, node failure, a lost job) retried per step, on top of
#: the step's own retries.
MAX_INFRASTRUCTURE_RETRIES = 3
HEARTBEAT_SECONDS = 1.0
#: How long the orchestrator keeps retrying a backend it cannot reach before it gives up (the
#: run stays resumable: its jobs keep running).
BACKEND_OUTAGE_SECONDS = 600.0

RunObserver = Callable[["Orchestrator"], None]


class Orchestrator:
    """Drives one run to a terminal state."""

    def __init__(
        self,
        *,
        metadata: MetadataStore,
        artifacts: ArtifactStore,
        backend: Backend,
        tracker: Tracker,
        observer: RunObserver | None = None,
        live_tracking: bool = False,
        tracking_drain_seconds: float = TRACKING_DRAIN_SECONDS,
    ) -> None:
        self.metadata = metadata
        self.artifacts = artifacts
        self.backend = backend
        self.tracker = tracker
        self.observer = observer
        self.live_tracking = live_tracking
        self.tracking_drain_seconds = tracking_drain_seconds
        self.warnings: list[str] = []
        self._unreachable_since: float | None = None
        self.run: RunRow
        self.steps: dict[str, StepRecord] = {}
        #: Steps not yet terminal: each tick looks at these only, so a tick costs what is
        #: still open, not the whole graph (a 2,000-step run stays linear).
        self._open: list[StepRecord] = []

    # --- the loop ------------------------------------------------------------------------

    def execute(self, run_id: str) -> RunRow:
        """Run (or continue) ``run_id`` until every step is terminal; Ctrl-C cancels it."""
        self._load(run_id)
        self.tracking = RunTracking(
            tracker=self.tracker,
            metadata=self.metadata,
            artifacts=self.artifacts,
            run=self.run,
            warnings=self.warnings,
            drain_seconds=self.tracking_drain_seconds,
        )
        self.launcher = AttemptLauncher(self.metadata, self.artifacts, self.backend, self.run)
        write_through(
            self.metadata,
            self.run,
            state=RunState.RUNNING.value,
            started_at=self.run.started_at or utcnow(),
            orchestrator_pid=os.getpid(),
            orchestrator_host=socket.gethostname(),
            heartbeat_at=utcnow(),
            finished_at=None,
            error=None,
        )
        if self.live_tracking:
            self.launcher.tracking_target = self.tracking.live_target()
        self.tracking.replay_untracked(self.steps.values())
        try:
            self._loop()
        except KeyboardInterrupt:
            self._cancel_everything("interrupted (Ctrl-C)")
            raise
        finally:
            self.tracking.close()
        return self.run

    def _load(self, run_id: str) -> None:
        self.run = self.metadata.get_run(run_id)
        graph = PipelineGraph.model_validate(self.run.graph)
        rows = {row.name: row for row in self.metadata.step_runs(self.run.id)}
        attempts = self.metadata.attempts(row.id for row in rows.values())
        outputs = self.metadata.outputs(row.id for row in rows.values())
        for node in graph.steps:
            row = rows[node.name]
            record = StepRecord(node=node, row=row, outputs=outputs.get(row.id, {}))
            record.attempts = [a for a in attempts if a.step_run_id == row.id]
            self.steps[node.name] = record
        self._open = list(self.steps.values())

    def _loop(self) -> None:
        fastest, slowest = self.backend.poll_interval
        interval = fastest
        last_heartbeat = 0.0
        self._notify()
        while True:
            changed = False
            if time.monotonic() - last_heartbeat >= HEARTBEAT_SECONDS:
                last_heartbeat = time.monotonic()
                if self._cancel_requested():
                    self._cancel_everything("cancelled by `mlyard runs cancel`")
                    return
            changed |= self._poll_active()
            changed |= self._enforce_timeouts()
            changed |= self._schedule_ready()
            self._open = [record for record in self._open if not record.state.is_terminal]
            if not self._open:
                self._finish_run()
                self._notify()
                return
            if changed:
                self._notify()
                interval = fastest
            else:
                interval = min(slowest, interval * 1.5)
            self.backend.wait_for_change(interval)

    def _notify(self) -> None:
        if self.observer is not None:
            self.observer(self)

    def _cancel_requested(self) -> bool:
        fresh = self.metadata.get_run(self.run.id)
        write_through(self.metadata, self.run, heartbeat_at=utcnow())
        return fresh.cancel_requested

    # --- polling -------------------------------------------------------------------------

    def _poll_active(self) -> bool:
        active = {
            handle.job_id: (record, handle)
            for record in self._open
            if (handle := record.active_handle) is not None
        }
        if not active:
            return self._resubmit_unhandled()
        try:
            statuses = self.backend.status([handle for _, handle in active.values()])
        except BackendError as error:
            self._backend_unreachable(error)
            return False
        self._unreachable_since = None
        changed = self._resubmit_unhandled()
        progressed: list[tuple[StepRecord, JobStatus]] = []
        for job_id, (record, _) in active.items():
            status = statuses.get(job_id)
            if status is None:
                continue
            if status.state.is_terminal:
                attempt = record.current_attempt
                assert attempt is not None
                self._record_outcome(record, read_outcome(self.artifacts, attempt, status))
                changed = True
            elif moved_on(record, status):
                progressed.append((record, status))
        if progressed:
            record_progress(self.metadata, progressed)
            changed = True
        return changed

    def _backend_unreachable(self, error: BackendError) -> None:
        """Ride out a backend outage (an SSH connection down): jobs keep running meanwhile."""
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
            self.warnings.append(f"Backend {self.backend.name!r} unreachable: {error.message}")
            logger.warning("backend unreachable, retrying: %s", error.message)
        elif now - self._unreachable_since > BACKEND_OUTAGE_SECONDS:
            raise BackendError(
                f"Backend {self.backend.name!r} has been unreachable for "
                f"{BACKEND_OUTAGE_SECONDS / 60:g} minutes: {error.message}",
                hint=f"Its jobs keep running; continue with `mlyard runs resume {self.run.id}` "
                "once it is reachable again.",
            ) from error

    def _resubmit_unhandled(self) -> bool:
        """Attempts persisted but never handed to the backend (the orchestrator died between)."""
        changed = False
        for record in self._open:
            attempt = record.current_attempt
            if record.state == StepState.QUEUED and attempt is not None and attempt.handle is None:
                self.tracking.prepare()
                refused = self.launcher.submit_persisted(record)
                if refused is not None:
                    self._record_outcome(record, refused)
                changed = True
        return changed

    def _enforce_timeouts(self) -> bool:
        changed = False
        for record in self._open:
            limit = record.node.timeout_seconds
            if limit is None:
                continue
            handle = record.active_handle
            if handle is None or record.state != StepState.RUNNING:
                continue
            if record.started_monotonic is None:
                record.started_monotonic = time.monotonic()
            if time.monotonic() - record.started_monotonic <= limit:
                continue
            self.backend.cancel(handle)
            attempt = record.current_attempt
            assert attempt is not None
            outcome = AttemptOutcome(
                succeeded=False,
                error=f"Step {record.node.name!r} timed out after {limit:g} s "
                f"(@step(timeout=...)).",
                status=JobStatus(state=JobState.FAILED, reason="timed out"),
            )
            self._record_outcome(record, outcome)
            changed = True
        return changed

    # --- outcomes ------------------------------------------------------------------------

    def _record_outcome(self, record: StepRecord, outcome: AttemptOutcome) -> None:
        attempt = record.current_attempt
        assert attempt is not None
        if outcome.succeeded:
            self.launcher.record_success(record, outcome)
            self.tracking.record(record, outcome)
            return
        if outcome.cancelled:
            self.launcher.record_failure(record, outcome, StepState.CANCELLED)
            return
        infrastructure = outcome.status.infrastructure_failure or (
            outcome.status.state == JobState.LOST
        )
        row = record.row
        if infrastructure and row.infrastructure_failures < MAX_INFRASTRUCTURE_RETRIES:
            self.launcher.record_retry(
                record,
                outcome,
                infrastructure_failures=row.infrastructure_failures + 1,
                delay=record.node.retry_backoff_seconds,
            )
        elif not infrastructure and outcome.status.retryable and row.failures < record.node.retries:
            delay = record.node.retry_backoff_seconds * (2**row.failures)
            self.launcher.record_retry(record, outcome, failures=row.failures + 1, delay=delay)
        else:
            self.launcher.record_failure(record, outcome, StepState.FAILED)
            self.tracking.record(record, outcome)

    # --- scheduling ----------------------------------------------------------------------

    def _schedule_ready(self) -> bool:
        changed = False
        now = utcnow()
        for record in self._open:
            if record.state != StepState.PENDING:
                continue
            upstream = [self.steps[name] for name in record.node.upstream]
            if any(
                up.state in (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED)
                for up in upstream
            ):
                failed = ", ".join(u.node.name for u in upstream if not u.state.produced_outputs)
                write_through(
                    self.metadata,
                    record.row,
                    state=StepState.SKIPPED.value,
                    reason=f"upstream step {failed} did not succeed",
                    finished_at=now,
                )
                changed = True
                continue
            if not all(up.state.produced_outputs for up in upstream):
                continue
            due = record.row.next_attempt_at
            if due is not None and as_utc(due) > now:
                continue
            if self.launcher.try_cache(record, self.steps):
                changed = True
                continue
            # MLflow's start-up runs on the tracking thread while the steps do: only a run
            # that executes something needs it.
            self.tracking.prepare()
            refused = self.launcher.submit_new(record, self.steps)
            if refused is not None:
                self._record_outcome(record, refused)
            changed = True
        return changed

    # --- endings -------------------------------------------------------------------------

    def _finish_run(self) -> None:
        final, error = run_outcome(self.steps.values())
        self.tracking.finish(final, self.steps.values())
        write_through(self.metadata, self.run, state=final.value, finished_at=utcnow(), error=error)

    def _cancel_everything(self, reason: str) -> None:
        # A second Ctrl-C must not interrupt the cleanup and leave step processes behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            write_through(self.metadata, self.run, cancel_requested=True)
            for record in self.steps.values():
                handle = record.active_handle
                if handle is not None:
                    self.backend.cancel(handle)
                if not record.state.is_terminal:
                    attempt = record.current_attempt
                    if attempt is not None and not StepState(attempt.state).is_terminal:
                        write_through(
                            self.metadata,
                            attempt,
                            state=StepState.CANCELLED.value,
                            finished_at=utcnow(),
                            reason=reason,
                        )
                    write_through(
                        self.metadata,
                        record.row,
                        state=StepState.CANCELLED.value,
                        reason=reason,
                        finished_at=utcnow(),
                    )
            write_through(
                self.metadata,
                self.run,
                state=RunState.CANCELLED.value,
                finished_at=utcnow(),
                error=f"Run {reason}.",
            )
            self.tracking.finish(RunState.CANCELLED, self.steps.values(), cancelled=True)
            self._notify()
        finally:
            signal.signal(signal.SIGINT, previous)


__all__ = ["Orchestrator", "RunObserver"]
