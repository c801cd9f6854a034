"""The status of a Kubernetes backend's attempts: one poll is two list requests (the runs' Jobs
and their Pods, by label selector) however many attempts are active; ``states.map_attempt``
says what each Job and its pods mean. A Job that is gone is answered from its ``result.json``
(removed after its TTL), as cancelled, or as lost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.kubernetes.api import ClusterApi, Manifest
from mlyard.backends.kubernetes.names import (
    ATTEMPT_ID_ANNOTATION,
    ATTEMPT_ID_LABEL,
    RUN_ID_LABEL,
    backend_selector,
    label_value,
)
from mlyard.backends.kubernetes.profile import KubernetesProfile
from mlyard.backends.kubernetes.states import map_attempt, parse_time
from mlyard.models.backends import JobHandle, JobState, JobStatus
from mlyard.models.tasks import TaskResult, Usage

RESULT_DOCUMENT = "result.json"


class AttemptPoller:
    """What the attempts of backend ``name`` are doing; it remembers the attempts that ended
    (asked no more), those cancelled here, and each Job's manifest (the ``submit_script``)."""

    def __init__(
        self,
        name: str,
        profile: KubernetesProfile,
        api: Callable[[], ClusterApi],
        store: ArtifactStore,
    ) -> None:
        self.name = name
        self.profile = profile
        self._api = api
        self.store = store
        self.finished: dict[str, JobStatus] = {}
        self.cancelled: set[str] = set()
        #: Job name -> the YAML of what was applied for it.
        self.manifests: dict[str, str] = {}

    def _selector(self, handles: Sequence[JobHandle]) -> str:
        runs = sorted({label_value(h.data.get("run_id", "")) for h in handles} - {""})
        if not runs:
            return backend_selector(self.name)
        return f"{backend_selector(self.name)},{RUN_ID_LABEL} in ({','.join(runs)})"

    def statuses(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        """Each handle's status by job id: two list requests for those not ended yet."""
        finished = self.finished
        statuses = {h.job_id: finished[h.job_id] for h in handles if h.job_id in finished}
        open_handles = [h for h in handles if h.job_id not in finished]
        if not open_handles:
            return statuses
        api = self._api()
        selector = self._selector(open_handles)
        jobs = {j["metadata"]["name"]: j for j in api.list_objects("Job", selector)}
        pods: dict[str, list[Manifest]] = {}
        for pod in api.list_objects("Pod", selector):
            attempt = (pod["metadata"].get("labels") or {}).get(ATTEMPT_ID_LABEL, "")
            pods.setdefault(attempt, []).append(pod)
        now = datetime.now(UTC)
        for handle in open_handles:
            job = jobs.get(handle.job_id)
            if job is None:
                status = self._gone(handle)
            else:
                attempt = (job["metadata"].get("labels") or {}).get(ATTEMPT_ID_LABEL, "")
                status = self._mapped(handle, job, pods.get(attempt, []), now)
            statuses[handle.job_id] = status
            if status.state.is_terminal:
                finished[handle.job_id] = status
        return statuses

    def _mapped(
        self, handle: JobHandle, job: Manifest, pods: list[Manifest], now: datetime
    ) -> JobStatus:
        timeout = self.profile.schedule_timeout or 600
        mapped = map_attempt(job, pods, now=now, schedule_timeout=timeout)
        if mapped.stop_job:
            # Decided here while the Job is still active (it would back off pulling forever).
            self._api().delete("Job", handle.job_id)
        if handle.job_id not in self.manifests:
            self.manifests[handle.job_id] = manifests_yaml([_as_applied(job)])
        return JobStatus(
            state=mapped.state,
            reason=mapped.reason,
            infrastructure_failure=mapped.infrastructure_failure,
            retryable=mapped.retryable,
            exit_code=mapped.exit_code,
            usage=_usage(job, pods) if mapped.state.is_terminal else None,
            submit_script=self.manifests.get(handle.job_id),
        )

    def _gone(self, handle: JobHandle) -> JobStatus:
        """A Job that no longer exists: cancelled here, ended and removed after its TTL (its
        result says how), or lost."""
        if handle.job_id in self.cancelled:
            return JobStatus(state=JobState.CANCELLED, reason="cancelled (its Job was deleted)")
        attempt_id = handle.data.get("attempt_id")
        raw = self.store.read_document(attempt_id, RESULT_DOCUMENT) if attempt_id else None
        if raw is not None:
            result = TaskResult.model_validate_json(raw)
            succeeded = result.status == "succeeded"
            return JobStatus(
                state=JobState.SUCCEEDED if succeeded else JobState.FAILED,
                reason="ended; its Job was removed after ttl_after_finished",
                exit_code=0 if succeeded else 1,
            )
        return JobStatus(
            state=JobState.LOST,
            reason=f"the Job {handle.job_id} no longer exists in namespace "
            f"{handle.data.get('namespace', self.profile.namespace)} and left no result",
        )


def _usage(job: Manifest, pods: list[Manifest]) -> Usage | None:
    """Queue wait: the Job's creation to its first container start (the runtime measures the
    rest itself, more finely than the API's one-second timestamps)."""
    created = parse_time(job["metadata"].get("creationTimestamp"))
    started: list[datetime] = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            state = container.get("state") or {}
            for key in ("running", "terminated"):
                moment = parse_time((state.get(key) or {}).get("startedAt"))
                if moment:
                    started.append(moment)
    if created is None or not started:
        return None
    return Usage(queue_seconds=max(0.0, (min(started) - created).total_seconds()))


def _as_applied(job: Manifest) -> Manifest:
    """A live Job as it was applied: without status and server-set metadata."""
    metadata = {
        k: v
        for k, v in (job.get("metadata") or {}).items()
        if k in ("name", "namespace", "labels", "annotations")
    }
    annotations = {
        k: v for k, v in (metadata.get("annotations") or {}).items() if k == ATTEMPT_ID_ANNOTATION
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job.get("spec")}


def manifests_yaml(manifests: Sequence[Any]) -> str:
    """The manifests as one YAML stream, in the order given."""
    import yaml

    text: str = yaml.safe_dump_all(list(manifests), sort_keys=False)
    return text
