"""What backends hand back: job handles and job states."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from mlyard.models.tasks import Usage


class JobState(StrEnum):
    """The state of one submitted job, as a backend sees it."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    # The job is gone and the backend cannot say how it ended (e.g. lost with its node).
    LOST = "LOST"

    @property
    def is_terminal(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


class JobHandle(BaseModel):
    """Enough to find a submitted job again, also from a restarted orchestrator."""

    model_config = ConfigDict(frozen=True)

    backend: str = Field(description="Name of the backend profile that ran the job.")
    job_id: str = Field(description="The backend's own id: a pid, a SLURM job id, a pod name.")
    data: dict[str, str] = Field(
        default_factory=dict, description="Backend-specific extras needed to re-attach."
    )


class JobStatus(BaseModel):
    """A job's state plus what the backend can tell people about it."""

    model_config = ConfigDict(frozen=True)

    state: JobState
    reason: str | None = Field(
        default=None, description="Why the job is pending or how it ended, in the backend's words."
    )
    # True when the infrastructure, not the user's code, ended the job (preemption, node failure):
    # such failures are retried without consuming the step's retries.
    infrastructure_failure: bool = False
    # False when another attempt cannot help (an image that cannot be pulled, a missing Secret,
    # a request no node can schedule): the step fails at once instead of using its retries.
    retryable: bool = True
    exit_code: int | None = None
    usage: Usage | None = Field(
        default=None,
        description="What the backend measured (queue wait, accounting); merged over the "
        "runtime's own figures.",
    )
    submit_script: str | None = Field(
        default=None, description="The job script the backend generated, when it has one."
    )
