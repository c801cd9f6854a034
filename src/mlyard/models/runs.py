"""Run and step states: the state machine every backend's jobs are mapped onto."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from mlyard.models.backends import JobHandle
from mlyard.models.tasks import ArtifactRef, Usage


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_RUN_STATES


_TERMINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})


class StepState(StrEnum):
    """PENDING → QUEUED → RUNNING → SUCCEEDED / FAILED / CANCELLED, plus CACHED and SKIPPED."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CACHED = "CACHED"
    SKIPPED = "SKIPPED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_STEP_STATES

    @property
    def produced_outputs(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.CACHED)


_TERMINAL_STEP_STATES = frozenset(
    {
        StepState.SUCCEEDED,
        StepState.FAILED,
        StepState.CANCELLED,
        StepState.CACHED,
        StepState.SKIPPED,
    }
)


class StepView(BaseModel):
    """One step of a run as people and scripts see it."""

    name: str
    state: StepState
    attempts: int = 0
    retries: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    cached_from_run_id: str | None = None
    reason: str | None = Field(default=None, description="Why it waits, or how it ended.")
    error: str | None = None
    outputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    usage: Usage | None = None
    submit_script: str | None = None
    log_handle: JobHandle | None = None


class RunView(BaseModel):
    """A pipeline run: its state, steps, metrics, usage and where to look further."""

    id: str
    pipeline_name: str
    state: RunState
    params: dict[str, Any] = Field(default_factory=dict)
    backend: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    error: str | None = None
    steps: list[StepView] = Field(default_factory=list)
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="Last value of each metric, as 'step.key', cached steps' included.",
    )
    cached_metrics: dict[str, str] = Field(
        default_factory=dict,
        description="The metrics (of ``metrics``) that cached steps logged in an earlier run: "
        "'step.key' -> the id of that run.",
    )
    usage: Usage = Field(default_factory=Usage)
    artifacts_url: str = ""
    mlflow_run_id: str | None = None
    mlflow_url: str | None = None
    models: list[str] = Field(default_factory=list, description="'name' version 'n' registered.")
    warnings: list[str] = Field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.state == RunState.SUCCEEDED

    def step(self, name: str) -> StepView:
        for view in self.steps:
            if view.name == name:
                return view
        raise KeyError(name)
