"""The orchestrator's in-memory mirror of a run, written through to the metadata store."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from mlyard.models.backends import JobHandle, JobState, JobStatus
from mlyard.models.pipelines import StepNode
from mlyard.models.runs import RunState, StepState
from mlyard.models.tasks import ArtifactRef
from mlyard.store.repository import AttemptRow, MetadataStore, StepRunRow
from mlyard.store.rows import Row

_STATES = {state.value: state for state in StepState}
_ACTIVE = (StepState.QUEUED, StepState.RUNNING)


@dataclass
class StepRecord:
    """A step of the run: its graph node, its row, its current attempt and its outputs."""

    node: StepNode
    row: StepRunRow
    attempts: list[AttemptRow] = field(default_factory=list)
    outputs: dict[str, ArtifactRef] = field(default_factory=dict)
    started_monotonic: float | None = None
    #: The cache key computed at scheduling, stored with the next state change.
    cache_key: str | None = None
    #: The artifacts the current attempt was given, by input name (for its lineage); None
    #: when this process did not submit it (a resumed run reads them from the task).
    attempt_inputs: dict[str, list[ArtifactRef]] | None = None
    #: ``active_handle`` parsed once per handle document (it is read at every poll).
    _parsed_handle: tuple[object, JobHandle] | None = field(default=None, init=False, repr=False)

    @property
    def state(self) -> StepState:
        return _STATES[self.row.state]

    @property
    def current_attempt(self) -> AttemptRow | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def active_handle(self) -> JobHandle | None:
        attempt = self.current_attempt
        if attempt is None or attempt.handle is None:
            return None
        if self.state not in _ACTIVE:
            return None
        if self._parsed_handle is None or self._parsed_handle[0] is not attempt.handle:
            self._parsed_handle = (attempt.handle, JobHandle.model_validate(attempt.handle))
        return self._parsed_handle[1]


def run_outcome(records: Iterable[StepRecord]) -> tuple[RunState, str | None]:
    """The final state of a run whose steps are all terminal, and the first failure's error."""
    finished = list(records)
    states = [record.state for record in finished]
    if any(state == StepState.CANCELLED for state in states):
        final = RunState.CANCELLED
    elif all(state.produced_outputs for state in states):
        final = RunState.SUCCEEDED
    else:
        final = RunState.FAILED
    failed = [record for record in finished if record.state == StepState.FAILED]
    error = f"Step {failed[0].node.name!r} failed: {failed[0].row.error}" if failed else None
    return final, error


def moved_on(record: StepRecord, status: JobStatus) -> bool:
    """Whether the status of a job that has not ended is news: it started running, or it waits
    for another reason than the one recorded."""
    if status.state == JobState.RUNNING:
        return record.state != StepState.RUNNING
    return status.reason != record.row.reason


def record_progress(
    metadata: MetadataStore, progressed: Iterable[tuple[StepRecord, JobStatus]]
) -> None:
    """Persist the jobs that started running or changed why they wait, in one transaction for
    all of them (a fan-out queues dozens of steps at once)."""
    with metadata.transaction() as connection:
        for record, status in progressed:
            if status.state == JobState.PENDING:
                write_through(metadata, record.row, connection=connection, reason=status.reason)
                continue
            attempt = record.current_attempt
            assert attempt is not None
            write_through(metadata, attempt, connection=connection, state=StepState.RUNNING.value)
            write_through(
                metadata,
                record.row,
                connection=connection,
                state=StepState.RUNNING.value,
                reason=None,
            )
            record.started_monotonic = time.monotonic()


def write_through(
    metadata: MetadataStore, row: Row, *, connection: Connection | None = None, **fields: Any
) -> None:
    """Persist ``fields`` first, then apply them to the in-memory row (persist-before-act).

    With ``connection``, the write joins its transaction (several changes, one commit).
    """
    metadata.update(type(row), row.primary_key, connection, **fields)
    for name, value in fields.items():
        setattr(row, name, value)
