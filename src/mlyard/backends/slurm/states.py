"""SLURM job states mapped to mlyard job states, with the reason people are shown."""

from __future__ import annotations

from dataclasses import dataclass

from mlyard.backends.slurm.scripts import SETUP_FAILED_EXIT, format_memory, format_time_limit
from mlyard.models.backends import JobState

_WAITING = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESV_DEL_HOLD",
    "SUSPENDED",
    "STOPPED",
}
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}
# The infrastructure, not the user's code, ended these: retried without consuming retries.
_INFRASTRUCTURE = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"}
_SIGKILL = 9


@dataclass(frozen=True)
class SlurmJobFacts:
    """What SLURM says about one job, from squeue, scontrol or sacct."""

    job_id: str
    state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    time_limit_seconds: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class MappedState:
    state: JobState
    reason: str | None
    infrastructure_failure: bool = False


def normalize_state(raw: str) -> str:
    """``'CANCELLED by 1001'`` -> ``'CANCELLED'``; ``'CANCELLED+'`` -> ``'CANCELLED'``."""
    word = raw.strip().split(" ")[0] if raw.strip() else "UNKNOWN"
    return word.rstrip("+").upper()


def map_state(facts: SlurmJobFacts) -> MappedState:
    """The mlyard state and a reason a person can act on."""
    state = normalize_state(facts.state)
    reason = facts.reason if facts.reason and facts.reason not in ("None", "(null)") else None
    if state in _WAITING:
        shown = {"SUSPENDED": "suspended", "REQUEUED": "requeued by SLURM"}.get(state)
        return MappedState(JobState.PENDING, reason or shown)
    if state in _RUNNING:
        return MappedState(JobState.RUNNING, None)
    if state == "COMPLETED":
        return MappedState(JobState.SUCCEEDED, None)
    if state == "CANCELLED":
        return MappedState(JobState.CANCELLED, "cancelled (scancel)")
    if state == "TIMEOUT":
        limit = (
            f" of {format_time_limit(facts.time_limit_seconds)}" if facts.time_limit_seconds else ""
        )
        return MappedState(
            JobState.FAILED,
            f"TIMEOUT: the job exceeded its time limit{limit}; raise Resources(time_limit=...)",
        )
    if state == "OUT_OF_MEMORY":
        asked = f" of {format_memory(facts.memory_bytes)}" if facts.memory_bytes else ""
        return MappedState(
            JobState.FAILED,
            f"OUT_OF_MEMORY: the job used more than its memory limit{asked}; raise "
            "Resources(memory=...)",
        )
    if state in _INFRASTRUCTURE:
        return MappedState(
            JobState.FAILED,
            f"{state}: the job was ended by the cluster, not by the step",
            infrastructure_failure=True,
        )
    if state in ("FAILED", "DEADLINE"):
        return MappedState(JobState.FAILED, _failure_reason(state, facts))
    # REVOKED, SPECIAL_EXIT or a state a newer SLURM invented: the job is gone, outcome unknown.
    return MappedState(JobState.LOST, f"SLURM state {state}")


def _failure_reason(state: str, facts: SlurmJobFacts) -> str:
    if facts.exit_code == SETUP_FAILED_EXIT:
        return "the profile's setup lines failed on the cluster"
    if facts.signal == _SIGKILL and facts.memory_bytes:
        # Without cgroups SLURM's memory enforcement kills the job and reports only the signal.
        return (
            f"{state}: killed by signal 9, as SLURM does to a job over its memory limit of "
            f"{format_memory(facts.memory_bytes)}; raise Resources(memory=...) if it needs more"
        )
    if facts.signal:
        return f"{state}: killed by signal {facts.signal}"
    if facts.exit_code is not None:
        return f"{state}: exit code {facts.exit_code}"
    return state
