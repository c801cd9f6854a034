"""Starting attempts, reusing cached results, and recording how attempts ended."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, SubmittedTask
from mlyard.errors import BackendError
from mlyard.models.backends import JobState, JobStatus
from mlyard.models.runs import StepState
from mlyard.models.tasks import (
    ArtifactRef,
    CodePackage,
    TaskResult,
    TaskSpec,
    TrackingTarget,
    Usage,
)
from mlyard.orchestration.accounting import merge_usage, with_cost
from mlyard.orchestration.cache import cache_key
from mlyard.orchestration.run_state import StepRecord, write_through
from mlyard.store.repository import AttemptRow, MetadataStore, RunRow, utcnow

RESULT_DOCUMENT = "result.json"
TASK_DOCUMENT = "task.json"


@dataclass(frozen=True)
class AttemptOutcome:
    """How an attempt ended, from the backend's status and the attempt's result document."""

    succeeded: bool
    status: JobStatus
    result: TaskResult | None = None
    error: str | None = None
    cancelled: bool = False
    usage: Usage = field(default_factory=Usage)


def read_outcome(
    artifacts: ArtifactStore, attempt: AttemptRow, status: JobStatus
) -> AttemptOutcome:
    """Combine a terminal job status with the result document the runtime wrote (if any)."""
    raw = artifacts.read_document(attempt.id, RESULT_DOCUMENT)
    result = TaskResult.model_validate_json(raw) if raw is not None else None
    measured = result.usage if result is not None else Usage()
    usage = merge_usage(measured, status.usage)
    if status.state == JobState.CANCELLED and (result is None or result.status != "succeeded"):
        return AttemptOutcome(
            succeeded=False, status=status, result=result, cancelled=True, usage=usage
        )
    if result is not None and result.status == "succeeded":
        return AttemptOutcome(succeeded=True, status=status, result=result, usage=usage)
    if result is not None and result.error is not None:
        error = result.error.message
    else:
        error = f"The step's job ended without a result ({status.reason or status.state.value})."
    return AttemptOutcome(succeeded=False, status=status, result=result, error=error, usage=usage)


class AttemptLauncher:
    """Creates and records attempts of one run's steps."""

    def __init__(
        self, metadata: MetadataStore, artifacts: ArtifactStore, backend: Backend, run: RunRow
    ) -> None:
        self.metadata = metadata
        self.artifacts = artifacts
        self.backend = backend
        self.run = run
        #: Where steps may log live; None: they buffer and the orchestrator replays.
        self.tracking_target: TrackingTarget | None = None

    # --- inputs --------------------------------------------------------------------------

    def _inputs(
        self, record: StepRecord, steps: Mapping[str, StepRecord]
    ) -> tuple[dict[str, Any], dict[str, ArtifactRef], dict[str, list[ArtifactRef]]]:
        literals: dict[str, Any] = {}
        single: dict[str, ArtifactRef] = {}
        lists: dict[str, list[ArtifactRef]] = {}
        for name, binding in record.node.inputs.items():
            if binding.kind == "literal":
                literals[name] = binding.value
            elif binding.kind == "ref":
                ref = binding.refs[0]
                single[name] = steps[ref.step].outputs[ref.output]
            else:
                lists[name] = [steps[r.step].outputs[r.output] for r in binding.refs]
        return literals, single, lists

    def _cache_key(self, record: StepRecord, steps: Mapping[str, StepRecord]) -> str:
        literals, single, lists = self._inputs(record, steps)
        return cache_key(record.node, literals, _grouped(single, lists))

    # --- cache ---------------------------------------------------------------------------

    def try_cache(self, record: StepRecord, steps: Mapping[str, StepRecord]) -> bool:
        """Reuse an earlier run's result for this step when its cache key matches."""
        key = self._cache_key(record, steps)
        record.cache_key = key  # stored with the step's next state change
        if not (record.node.cache and self.run.use_cache):
            return False
        hit = self.metadata.lookup_cache(key)
        if hit is None:
            return False
        source, outputs = hit
        complete = set(outputs) == set(record.node.output_names)
        if not complete or not all(self.artifacts.exists(r.digest) for r in outputs.values()):
            self.metadata.forget_cache_entry(key)  # its artifacts are gone: run it again
            return False
        _, single, lists = self._inputs(record, steps)
        now = utcnow()
        with self.metadata.transaction() as connection:
            self.metadata.record_outputs(
                connection, record.row.id, outputs, _grouped(single, lists)
            )
            write_through(
                self.metadata,
                record.row,
                connection=connection,
                state=StepState.CACHED.value,
                cache_key=key,
                cached_from_run_id=source.run_id,
                cached_from_step_run_id=source.id,
                started_at=now,
                finished_at=now,
                reason=None,
                usage=source.usage,
            )
        record.outputs = outputs
        return True

    # --- submission ----------------------------------------------------------------------

    def submit_new(
        self, record: StepRecord, steps: Mapping[str, StepRecord]
    ) -> AttemptOutcome | None:
        """Persist a new attempt and its task document, then hand it to the backend.

        Returns the failed outcome when the backend refused the job (e.g. SLURM rejecting a
        partition), so the step fails with the backend's own message; None when submitted.
        """
        literals, single, lists = self._inputs(record, steps)
        number = len(record.attempts) + 1
        attempt_id = f"{record.row.id}.{number}"
        spec = TaskSpec(
            run_id=self.run.id,
            step_run_id=record.row.id,
            attempt_id=attempt_id,
            attempt=number,
            step_name=record.node.name,
            function=record.node.function,
            code=CodePackage(digest=self.run.code_digest, module=self.run.code_module),
            inputs=single,
            input_lists=lists,
            params=literals,
            output_names=record.node.output_names,
            resources=record.node.resources,
            environment=record.node.environment,
            artifact_store=self.artifacts.url,
            tracking=self.tracking_target or TrackingTarget(),
        )
        self.artifacts.write_document(attempt_id, TASK_DOCUMENT, spec.model_dump_json().encode())
        attempt = AttemptRow(
            id=attempt_id,
            step_run_id=record.row.id,
            number=number,
            state=StepState.QUEUED.value,
            infrastructure_failure=False,
            tracked=False,
        )
        with self.metadata.transaction() as connection:
            self.metadata.insert_in(connection, attempt)
            write_through(
                self.metadata,
                record.row,
                connection=connection,
                state=StepState.QUEUED.value,
                cache_key=record.cache_key or record.row.cache_key,
                started_at=record.row.started_at or utcnow(),
                next_attempt_at=None,
                reason=None,
            )
        record.attempts.append(attempt)
        record.attempt_inputs = _grouped_inputs(spec)
        return self._hand_to_backend(record, spec)

    def submit_persisted(self, record: StepRecord) -> AttemptOutcome | None:
        """Submit an attempt whose task was persisted but never reached the backend."""
        attempt = record.current_attempt
        assert attempt is not None
        raw = self.artifacts.read_document(attempt.id, TASK_DOCUMENT)
        assert raw is not None, "the task document is written before the attempt row"
        spec = TaskSpec.model_validate_json(raw)
        record.attempt_inputs = _grouped_inputs(spec)
        return self._hand_to_backend(record, spec)

    def _hand_to_backend(self, record: StepRecord, spec: TaskSpec) -> AttemptOutcome | None:
        attempt = record.current_attempt
        assert attempt is not None
        task_uri = self.artifacts.document_uri(spec.attempt_id, TASK_DOCUMENT)
        try:
            handle = self.backend.submit(SubmittedTask(spec=spec, task_uri=task_uri))
        except BackendError as error:
            message = error.message + (f" {error.hint}" if error.hint else "")
            return AttemptOutcome(
                succeeded=False,
                status=JobStatus(state=JobState.FAILED, reason="refused by the backend"),
                error=f"Backend {self.backend.name!r} refused the job: {message}",
            )
        write_through(
            self.metadata, attempt, handle=handle.model_dump(mode="json"), submitted_at=utcnow()
        )
        record.started_monotonic = None
        return None

    # --- endings -------------------------------------------------------------------------

    def record_success(self, record: StepRecord, outcome: AttemptOutcome) -> None:
        result = outcome.result
        assert result is not None
        attempt = record.current_attempt
        assert attempt is not None
        usage = with_cost(outcome.usage, self.backend.profile.costs)
        now = utcnow()
        inputs = record.attempt_inputs
        if inputs is None:  # submitted by an earlier orchestrator process
            raw = self.artifacts.read_document(attempt.id, TASK_DOCUMENT)
            inputs = {} if raw is None else _grouped_inputs(TaskSpec.model_validate_json(raw))
        with self.metadata.transaction() as connection:
            self.metadata.record_outputs(connection, record.row.id, result.outputs, inputs)
            self.metadata.record_metrics(connection, record.row.id, result.metrics, [])
            if record.row.cache_key and record.node.cache:
                self.metadata.remember_cache_entry(
                    connection, record.row.cache_key, record.row.id, self.run.id
                )
            self._close_attempt(attempt, outcome, StepState.SUCCEEDED, usage, connection=connection)
            write_through(
                self.metadata,
                record.row,
                connection=connection,
                state=StepState.SUCCEEDED.value,
                finished_at=now,
                reason=None,
                error=None,
                usage=usage.model_dump(mode="json"),
            )
        record.outputs = dict(result.outputs)

    def record_retry(
        self,
        record: StepRecord,
        outcome: AttemptOutcome,
        *,
        delay: float,
        failures: int | None = None,
        infrastructure_failures: int | None = None,
    ) -> None:
        attempt = record.current_attempt
        assert attempt is not None
        self._close_attempt(attempt, outcome, StepState.FAILED, outcome.usage)
        fields: dict[str, Any] = {
            "state": StepState.PENDING.value,
            "next_attempt_at": utcnow() + timedelta(seconds=delay),
            "reason": f"retrying in {delay:g} s after: {outcome.error}",
        }
        if failures is not None:
            fields["failures"] = failures
        if infrastructure_failures is not None:
            fields["infrastructure_failures"] = infrastructure_failures
        write_through(self.metadata, record.row, **fields)
        record.started_monotonic = time.monotonic()

    def record_failure(self, record: StepRecord, outcome: AttemptOutcome, state: StepState) -> None:
        attempt = record.current_attempt
        assert attempt is not None
        self._close_attempt(attempt, outcome, state, outcome.usage)
        write_through(
            self.metadata,
            record.row,
            state=state.value,
            finished_at=utcnow(),
            error=outcome.error if state == StepState.FAILED else None,
            reason=outcome.status.reason if state == StepState.FAILED else "cancelled",
            usage=outcome.usage.model_dump(mode="json"),
        )

    def _close_attempt(
        self,
        attempt: AttemptRow,
        outcome: AttemptOutcome,
        state: StepState,
        usage: Usage,
        connection: Connection | None = None,
    ) -> None:
        result = outcome.result
        write_through(
            self.metadata,
            attempt,
            connection=connection,
            state=state.value,
            finished_at=utcnow(),
            exit_code=outcome.status.exit_code,
            reason=outcome.error or outcome.status.reason,
            infrastructure_failure=outcome.status.infrastructure_failure,
            usage=usage.model_dump(mode="json"),
            submit_script=outcome.status.submit_script,
            error=result.error.model_dump(mode="json") if result and result.error else None,
        )


def _grouped(
    single: Mapping[str, ArtifactRef], lists: Mapping[str, list[ArtifactRef]]
) -> dict[str, list[ArtifactRef]]:
    """Artifact inputs by name, a single input as a list of one (lineage, cache keys)."""
    return {name: [ref] for name, ref in single.items()} | dict(lists)


def _grouped_inputs(spec: TaskSpec) -> dict[str, list[ArtifactRef]]:
    """The artifacts a task reads, by input name."""
    return _grouped(spec.inputs, spec.input_lists)
