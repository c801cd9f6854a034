"""SLURM states mapped to mlyard job states, with reasons."""

from __future__ import annotations

import pytest

from mlyard.backends.slurm.states import SlurmJobFacts, map_state, normalize_state
from mlyard.models.backends import JobState


@pytest.mark.parametrize(
    ("slurm_state", "expected"),
    [
        ("PENDING", JobState.PENDING),
        ("REQUEUED", JobState.PENDING),
        ("CONFIGURING", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("COMPLETED", JobState.SUCCEEDED),
        ("FAILED", JobState.FAILED),
        ("TIMEOUT", JobState.FAILED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("NODE_FAIL", JobState.FAILED),
        ("PREEMPTED", JobState.FAILED),
        ("CANCELLED by 1001", JobState.CANCELLED),
        ("REVOKED", JobState.LOST),
    ],
)
def test_state_mapping(slurm_state: str, expected: JobState) -> None:
    assert map_state(SlurmJobFacts(job_id="1", state=slurm_state)).state is expected


def test_pending_keeps_slurms_reason() -> None:
    mapped = map_state(SlurmJobFacts(job_id="1", state="PENDING", reason="Resources"))
    assert mapped.reason == "Resources"
    assert map_state(SlurmJobFacts(job_id="1", state="PENDING", reason="None")).reason is None


def test_infrastructure_failures_are_flagged() -> None:
    for state in ("NODE_FAIL", "PREEMPTED", "BOOT_FAIL"):
        mapped = map_state(SlurmJobFacts(job_id="1", state=state))
        assert mapped.infrastructure_failure, state
        assert state in (mapped.reason or "")
    assert not map_state(SlurmJobFacts(job_id="1", state="FAILED")).infrastructure_failure


def test_timeout_names_the_limit_and_oom_the_memory() -> None:
    timeout = map_state(SlurmJobFacts(job_id="1", state="TIMEOUT", time_limit_seconds=120))
    assert "time limit of 00:02:00" in (timeout.reason or "")
    oom = map_state(SlurmJobFacts(job_id="1", state="OUT_OF_MEMORY", memory_bytes=100 * 1024**2))
    assert "memory limit of 100M" in (oom.reason or "")


def test_failure_reasons() -> None:
    assert "exit code 3" in (map_state(SlurmJobFacts("1", "FAILED", exit_code=3)).reason or "")
    setup = map_state(SlurmJobFacts("1", "FAILED", exit_code=97)).reason or ""
    assert "setup lines failed" in setup
    assert "signal 9" in (map_state(SlurmJobFacts("1", "FAILED", signal=9)).reason or "")
    killed = SlurmJobFacts("1", "FAILED", signal=9, memory_bytes=200 * 1024**2)
    assert "memory limit of 200M" in (map_state(killed).reason or "")


def test_normalize_state() -> None:
    assert normalize_state("CANCELLED+") == "CANCELLED"
    assert normalize_state("") == "UNKNOWN"
