"""What a Job and its pods say, mapped to mlyard job states with a reason people can act on.

Pure: takes the Job and Pod objects as the API returns them (camelCase JSON), so every row is
unit-tested on real-shaped objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlyard.backends.kubernetes.names import CANCELLED_ANNOTATION, KUEUE_QUEUE_LABEL
from mlyard.models.backends import JobState

Manifest = Mapping[str, Any]

_IMAGE_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_CONFIG_ERRORS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# Pod-level reasons of a pod ended by its node or the cluster, not by the step.
_INFRASTRUCTURE_REASONS = {
    "Evicted",
    "NodeLost",
    "NodeShutdown",
    "Shutdown",
    "Terminated",
    "UnexpectedAdmissionError",
    "Preempting",
}
#: Exit status of ``python -m mlyard.runtime`` when it could not read its task at all.
TASK_UNREADABLE_EXIT = 2


@dataclass(frozen=True)
class MappedState:
    state: JobState
    reason: str | None = None
    infrastructure_failure: bool = False
    exit_code: int | None = None
    #: The attempt's end was decided here while its Job is still active (an image that cannot
    #: be pulled, a pod unschedulable too long): the backend deletes the Job.
    stop_job: bool = False
    #: False when another attempt would fail the same way (see ``JobStatus.retryable``).
    retryable: bool = True


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API (``2026-12-03T14:05:00Z``)."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _condition(conditions: Sequence[Manifest] | None, kind: str) -> Manifest | None:
    for condition in conditions or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def _container_statuses(pod: Manifest) -> list[Manifest]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _memory_limit(pod: Manifest) -> str | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if limit:
            return str(limit)
    return None


def _image_of(pod: Manifest, container_name: str | None) -> str:
    for container in (pod.get("spec") or {}).get("containers") or []:
        if container.get("name") == container_name or container_name is None:
            return str(container.get("image", "?"))
    return "?"


def _newest(pods: Sequence[Manifest]) -> Manifest | None:
    if not pods:
        return None
    return max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")


def map_attempt(
    job: Manifest,
    pods: Sequence[Manifest],
    *,
    now: datetime | None = None,
    schedule_timeout: float = 600.0,
) -> MappedState:
    """The state of one attempt from its Job and the Job's pods."""
    now = now or datetime.now(UTC)
    metadata = job.get("metadata") or {}
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    conditions = status.get("conditions")
    if (metadata.get("annotations") or {}).get(CANCELLED_ANNOTATION):
        return MappedState(JobState.CANCELLED, "cancelled (its Job was deleted)")
    if _condition(conditions, "Complete") or _condition(conditions, "SuccessCriteriaMet"):
        return MappedState(JobState.SUCCEEDED, exit_code=0)
    failed = _condition(conditions, "Failed") or _condition(conditions, "FailureTarget")
    if failed is not None:
        if failed.get("reason") == "DeadlineExceeded":
            limit = spec.get("activeDeadlineSeconds")
            of = f" of {limit} s" if limit else ""
            return MappedState(
                JobState.FAILED,
                f"DeadlineExceeded: the step ran past its time limit{of}; raise "
                "Resources(time_limit=...)",
            )
        ended = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        pod = _newest(ended) or _newest(pods)
        if pod is None:
            return MappedState(
                JobState.FAILED,
                f"the step's pod is gone ({failed.get('reason')}: {failed.get('message', '')}); "
                "its node was probably lost",
                infrastructure_failure=True,
            )
        return pod_end(pod)
    if spec.get("suspend"):
        queue = (metadata.get("labels") or {}).get(KUEUE_QUEUE_LABEL)
        if queue:
            return MappedState(JobState.PENDING, f"waiting for Kueue to admit it (queue {queue})")
        return MappedState(JobState.PENDING, "the Job is suspended")
    completions = spec.get("completions") or 1
    if (status.get("succeeded") or 0) >= completions:
        return MappedState(JobState.SUCCEEDED, exit_code=0)
    if not pods:
        return MappedState(JobState.PENDING, "waiting for the Job controller to create its pod")
    ended = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if ended:  # backoffLimit is 0: one failed pod fails the Job; the controller will say so
        return pod_end(_newest(ended) or ended[0])
    succeeded = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
    if len(succeeded) >= completions:
        return MappedState(JobState.SUCCEEDED, exit_code=0)
    live = [p for p in pods if p not in succeeded]
    states = [pod_live(p, now=now, schedule_timeout=schedule_timeout) for p in live]
    for mapped in states:  # the worst pod speaks for the attempt
        if mapped.state.is_terminal:
            return mapped
    for mapped in states:
        if mapped.state == JobState.PENDING:
            return mapped
    return states[0] if states else MappedState(JobState.RUNNING)


def pod_live(pod: Manifest, *, now: datetime, schedule_timeout: float) -> MappedState:
    """A pod that has not ended: running, waiting for a node, or stuck for good."""
    status = pod.get("status") or {}
    disruption = _condition(status.get("conditions"), "DisruptionTarget")
    if disruption is not None:
        return _infrastructure(pod, disruption)
    for container in _container_statuses(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        message = waiting.get("message") or ""
        if reason in _IMAGE_ERRORS:
            image = container.get("image") or _image_of(pod, container.get("name"))
            return MappedState(
                JobState.FAILED,
                f"{reason}: the image {image} cannot be pulled ({message or 'no detail'}); "
                "check the profile's image and image_pull_secrets",
                stop_job=True,
                retryable=False,
            )
        if reason in _CONFIG_ERRORS:
            return MappedState(
                JobState.FAILED,
                f"{reason}: {message or 'the container could not be created'}; create the "
                "Secret or ConfigMap it names in the Job's namespace, or fix the profile "
                "(artifact_credentials_secret)",
                stop_job=True,
                retryable=False,
            )
    phase = status.get("phase")
    if phase == "Running":
        return MappedState(JobState.RUNNING)
    if phase == "Unknown":
        return MappedState(JobState.RUNNING, "its node stopped reporting; waiting for it")
    scheduled = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None
    )
    if scheduled is not None and scheduled.get("status") == "False":
        message = scheduled.get("message") or scheduled.get("reason") or "unschedulable"
        created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
        waited = (now - created).total_seconds() if created else 0.0
        if waited > schedule_timeout:
            return MappedState(
                JobState.FAILED,
                f"Unschedulable for {waited:.0f} s (schedule_timeout {schedule_timeout:g} s): "
                f"{message}; ask for less, or raise schedule_timeout in the profile if the "
                "cluster will grow",
                stop_job=True,
                retryable=False,
            )
        return MappedState(JobState.PENDING, message)
    node = (pod.get("spec") or {}).get("nodeName")
    starting = next(
        (
            ((c.get("state") or {}).get("waiting") or {}).get("reason")
            for c in _container_statuses(pod)
            if (c.get("state") or {}).get("waiting")
        ),
        None,
    )
    where = f" on {node}" if node else ""
    return MappedState(JobState.PENDING, f"starting{where} ({starting or phase or 'Pending'})")


def pod_end(pod: Manifest) -> MappedState:
    """How a pod that ended (phase Failed) failed."""
    status = pod.get("status") or {}
    disruption = _condition(status.get("conditions"), "DisruptionTarget")
    if disruption is not None or status.get("reason") in _INFRASTRUCTURE_REASONS:
        return _infrastructure(pod, disruption)
    for container in _container_statuses(pod):
        terminated = (container.get("state") or {}).get("terminated")
        if not terminated:
            continue
        if terminated.get("exitCode", 0) == 0 and terminated.get("reason") != "OOMKilled":
            continue
        code = terminated.get("exitCode")
        if terminated.get("reason") == "OOMKilled":
            limit = _memory_limit(pod)
            of = f" of {limit}" if limit else ""
            return MappedState(
                JobState.FAILED,
                f"OOMKilled: the step used more than its memory limit{of}; raise "
                "Resources(memory=...)",
                exit_code=code,
            )
        if code == TASK_UNREADABLE_EXIT:
            return MappedState(
                JobState.FAILED,
                "the runtime could not read its task (exit code 2); the pod's log says why: "
                "often the artifact store's credentials or endpoint",
                exit_code=code,
            )
        detail = terminated.get("message") or terminated.get("reason") or ""
        return MappedState(
            JobState.FAILED,
            f"exit code {code}" + (f" ({detail})" if detail else ""),
            exit_code=code,
        )
    for container in _container_statuses(pod):
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_ERRORS | _CONFIG_ERRORS:
            return pod_live(pod, now=datetime.now(UTC), schedule_timeout=float("inf"))
    return MappedState(
        JobState.FAILED, f"the pod failed: {status.get('reason') or status.get('message') or '?'}"
    )


def _infrastructure(pod: Manifest, disruption: Manifest | None) -> MappedState:
    status = pod.get("status") or {}
    if disruption is not None:
        why = f"{disruption.get('reason')}: {disruption.get('message') or ''}".rstrip(": ")
    else:
        why = f"{status.get('reason')}: {status.get('message') or ''}".rstrip(": ")
    return MappedState(
        JobState.FAILED,
        f"{why} (the cluster ended the pod, not the step)",
        infrastructure_failure=True,
        stop_job=True,
    )
