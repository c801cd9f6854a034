"""What Jobs and pods say, mapped to mlyard states with reasons people can act on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlyard.backends.kubernetes.states import map_attempt
from mlyard.models.backends import JobState
from tests.unit.backends.kubernetes.shapes import (
    condition,
    job,
    pod,
    unschedulable_pod,
)

NOW = datetime(2026, 12, 3, 14, 1, tzinfo=UTC)


def test_a_running_pod_is_running() -> None:
    assert map_attempt(job(), [pod()], now=NOW).state == JobState.RUNNING


def test_a_job_without_pods_yet_is_pending() -> None:
    mapped = map_attempt(job(active=0), [], now=NOW)
    assert mapped.state == JobState.PENDING and "create its pod" in (mapped.reason or "")


def test_a_complete_job_succeeded() -> None:
    done = job(active=0, succeeded=1, conditions=[condition("Complete", "CompletionsReached")])
    finished = pod(phase="Succeeded", terminated={"exitCode": 0, "reason": "Completed"})
    assert map_attempt(done, [finished], now=NOW).state == JobState.SUCCEEDED


def test_unschedulable_is_queued_with_the_schedulers_message() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    mapped = map_attempt(job(), [unschedulable_pod(message)], now=NOW, schedule_timeout=600)
    assert mapped.state == JobState.PENDING and mapped.reason == message
    assert not mapped.stop_job


def test_unschedulable_past_schedule_timeout_fails() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    later = NOW + timedelta(minutes=20)
    mapped = map_attempt(job(), [unschedulable_pod(message)], now=later, schedule_timeout=600)
    assert mapped.state == JobState.FAILED and mapped.stop_job
    assert message in (mapped.reason or "") and "schedule_timeout" in (mapped.reason or "")
    assert not mapped.infrastructure_failure and not mapped.retryable


def test_an_image_that_cannot_be_pulled_fails_naming_the_image() -> None:
    for reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
        stuck = pod(phase="Pending", waiting=(reason, 'Back-off pulling image "x"'))
        mapped = map_attempt(job(), [stuck], now=NOW)
        assert mapped.state == JobState.FAILED and mapped.stop_job, reason
        assert "registry.example.com/mlyard:1" in (mapped.reason or "")
        assert not mapped.infrastructure_failure and not mapped.retryable, reason


def test_a_missing_secret_fails_naming_it() -> None:
    stuck = pod(
        phase="Pending",
        waiting=("CreateContainerConfigError", 'secret "s3-credentials" not found'),
    )
    mapped = map_attempt(job(), [stuck], now=NOW)
    assert mapped.state == JobState.FAILED and mapped.stop_job
    assert 'secret "s3-credentials" not found' in (mapped.reason or "")
    assert not mapped.retryable


def test_oomkilled_names_the_memory_limit_and_the_fix() -> None:
    failed = job(active=0, failed=1, conditions=[condition("Failed", "BackoffLimitExceeded")])
    killed = pod(
        phase="Failed",
        terminated={"exitCode": 137, "reason": "OOMKilled"},
        memory_limit="2Gi",
    )
    mapped = map_attempt(failed, [killed], now=NOW)
    assert mapped.state == JobState.FAILED and mapped.exit_code == 137
    assert "2Gi" in (mapped.reason or "") and "Resources(memory=" in (mapped.reason or "")


def test_a_failed_step_reports_its_exit_code() -> None:
    failed = job(active=0, failed=1, conditions=[condition("Failed", "BackoffLimitExceeded")])
    ended = pod(phase="Failed", terminated={"exitCode": 1, "reason": "Error"})
    mapped = map_attempt(failed, [ended], now=NOW)
    assert mapped.state == JobState.FAILED and mapped.exit_code == 1
    assert not mapped.infrastructure_failure


def test_the_job_failing_before_its_condition_is_set_counts_already() -> None:
    ended = pod(phase="Failed", terminated={"exitCode": 1, "reason": "Error"})
    assert map_attempt(job(), [ended], now=NOW).state == JobState.FAILED


def test_eviction_preemption_and_a_lost_node_are_infrastructure_failures() -> None:
    evicted = pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    preempted = pod(
        phase="Failed",
        terminated={"exitCode": 143, "reason": "Error"},
        conditions=[condition("DisruptionTarget", "PreemptionByScheduler", "preempted")],
    )
    lost = pod(
        phase="Failed",
        conditions=[condition("DisruptionTarget", "DeletionByTaintManager", "node lost")],
    )
    failed = job(active=0, failed=1, conditions=[condition("Failed", "BackoffLimitExceeded")])
    for ended in (evicted, preempted, lost):
        mapped = map_attempt(failed, [ended], now=NOW)
        assert mapped.state == JobState.FAILED and mapped.infrastructure_failure, ended
    gone = map_attempt(failed, [], now=NOW)
    assert gone.state == JobState.FAILED and gone.infrastructure_failure


def test_a_disruption_on_a_running_pod_is_an_infrastructure_failure_at_once() -> None:
    draining = pod(conditions=[condition("DisruptionTarget", "EvictionByEvictionAPI", "drain")])
    mapped = map_attempt(job(), [draining], now=NOW)
    assert mapped.state == JobState.FAILED and mapped.infrastructure_failure


def test_deadline_exceeded_is_a_timeout() -> None:
    failed = job(
        active=0,
        failed=1,
        deadline=3600,
        conditions=[condition("Failed", "DeadlineExceeded", "Job was active longer")],
    )
    mapped = map_attempt(failed, [], now=NOW)
    assert mapped.state == JobState.FAILED and not mapped.infrastructure_failure
    assert "3600 s" in (mapped.reason or "") and "time_limit" in (mapped.reason or "")


def test_a_job_marked_cancelled_is_cancelled() -> None:
    going = job(annotations={"mlyard.io/cancelled": "true"})
    assert map_attempt(going, [pod()], now=NOW).state == JobState.CANCELLED


def test_a_suspended_job_waits_for_kueue() -> None:
    queued = job(active=0, suspend=True, labels={"kueue.x-k8s.io/queue-name": "gpu"})
    mapped = map_attempt(queued, [], now=NOW)
    assert mapped.state == JobState.PENDING and "gpu" in (mapped.reason or "")


def test_a_pod_starting_on_its_node_is_pending() -> None:
    starting = pod(phase="Pending", waiting=("ContainerCreating", ""))
    mapped = map_attempt(job(), [starting], now=NOW)
    assert mapped.state == JobState.PENDING and "gpu-node-1" in (mapped.reason or "")
