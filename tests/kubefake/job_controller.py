"""The Job controller, as kube-controller-manager's (1.31+): pods named ``<job>-<random>``
(Indexed: ``<job>-<index>-<random>``) with the job labels, owner reference and tracking
finalizer; parallelism, completions, backoffLimit, activeDeadlineSeconds, suspend and
podFailurePolicy; status counts; FailureTarget / SuccessCriteriaMet before Failed / Complete."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import TYPE_CHECKING, Any

from tests.kubefake.admission import admit
from tests.kubefake.errors import ApiError
from tests.kubefake.resources import BY_KIND
from tests.kubefake.store import Change, Obj, now_rfc3339, parse_time

if TYPE_CHECKING:
    from tests.kubefake.cluster import Cluster

_JOB, _POD = BY_KIND["Job"], BY_KIND["Pod"]
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
_UID_LABEL = "batch.kubernetes.io/controller-uid"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
_TERMINAL = ("Succeeded", "Failed")


def _condition(kind: str, reason: str, message: str) -> dict[str, Any]:
    now = now_rfc3339()
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def _has(job: Obj, kind: str) -> dict[str, Any] | None:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition["type"] == kind and condition["status"] == "True":
            return condition  # type: ignore[no-any-return]
    return None


def _ready(pod: Obj) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def _format_indexes(indexes: set[int]) -> str:
    """``completedIndexes`` as the controller writes it: ``0-2,5``."""
    parts, ordered = [], sorted(indexes)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _parse_indexes(text: str | None) -> set[int]:
    found: set[int] = set()
    for part in (text or "").split(","):
        if "-" in part:
            low, high = part.split("-")
            found.update(range(int(low), int(high) + 1))
        elif part:
            found.add(int(part))
    return found


def _failure_rule(job: Obj, pod: Obj) -> tuple[str, str] | None:
    """The podFailurePolicy rule a failed pod matches: (action, message)."""
    policy = job["spec"].get("podFailurePolicy") or {}
    statuses = pod.get("status", {}).get("containerStatuses") or []
    for index, rule in enumerate(policy.get("rules") or []):
        on_codes = rule.get("onExitCodes")
        if on_codes:
            for status in statuses:
                code = (status.get("state") or {}).get("terminated", {}).get("exitCode")
                if code in (None, 0) or (
                    on_codes.get("containerName") not in (None, status["name"])
                ):
                    continue
                inside = code in (on_codes.get("values") or [])
                if inside == (on_codes.get("operator", "In") == "In"):
                    meta = pod["metadata"]
                    return rule["action"], (
                        f"Container {status['name']} for pod {meta['namespace']}/{meta['name']} "
                        f"failed with exit code {code} matching {rule['action']} rule at index "
                        f"{index}"
                    )
        for pattern in rule.get("onPodConditions") or []:
            for condition in pod.get("status", {}).get("conditions") or []:
                if condition["type"] == pattern["type"] and condition["status"] == pattern.get(
                    "status", "True"
                ):
                    meta = pod["metadata"]
                    return rule["action"], (
                        f"Pod {meta['namespace']}/{meta['name']} has condition "
                        f"{condition['type']} matching {rule['action']} rule at index {index}"
                    )
    return None


class JobController:
    """Reconciles every Job with its pods whenever either changes (and twice a second, for
    deadlines and back-off)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self._wake = asyncio.Event()
        self._not_before: dict[str, float] = {}
        self.store.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.rtype.kind in ("Job", "Pod"):
            self._wake.set()

    def _release_orphans(self) -> None:
        """Pods whose Job is gone lose the tracking finalizer, as the real controller does."""
        jobs = {j["metadata"]["uid"] for j in self.store.peek(_JOB)}
        for pod in list(self.store.peek(_POD)):
            meta = pod["metadata"]
            if TRACKING_FINALIZER not in (meta.get("finalizers") or []):
                continue
            owner = (meta.get("labels") or {}).get("batch.kubernetes.io/controller-uid")
            if owner in jobs:
                continue
            current = self.store.find(_POD, meta["namespace"], meta["name"])
            if current is not None:
                current["metadata"]["finalizers"] = [
                    f for f in current["metadata"]["finalizers"] if f != TRACKING_FINALIZER
                ]
                self.store.update(_POD, current)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            self._release_orphans()
            # one pass over the pods for every Job (read-only: reconcile copies what it changes)
            by_job: dict[str, list[Obj]] = {}
            for pod in self.store.peek(_POD):
                owner = (pod["metadata"].get("labels") or {}).get(_UID_LABEL)
                if owner:
                    by_job.setdefault(owner, []).append(pod)
            for job in list(self.store.peek(_JOB)):
                uid = job["metadata"]["uid"]
                pods = [
                    p
                    for p in by_job.get(uid, ())
                    if any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])
                ]
                if (_has(job, "Complete") or _has(job, "Failed")) and not any(
                    TRACKING_FINALIZER in (p["metadata"].get("finalizers") or ()) for p in pods
                ):
                    continue  # finished and fully counted: nothing left to do
                try:
                    self.reconcile(copy.deepcopy(job), pods)
                except ApiError as exc:
                    if exc.code not in (404, 409):
                        raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)

    def reconcile(self, job: Obj, pods: list[Obj]) -> None:
        """Bring ``job``'s pods and status one step closer to its spec; ``pods`` (its pods as
        stored) are not changed in place."""
        spec, status = job["spec"], job.setdefault("status", {})
        original = copy.deepcopy(status)
        finished = _has(job, "Complete") or _has(job, "Failed")
        indexed = spec.get("completionMode") == "Indexed"
        completed = _parse_indexes(status.get("completedIndexes"))
        # count each finished pod once, then release its tracking finalizer
        for pod in pods:
            meta = pod["metadata"]
            phase = pod.get("status", {}).get("phase")
            gone = (
                meta.get("deletionTimestamp")
                and phase not in _TERMINAL
                and not pod.get("spec", {}).get("nodeName")
            )
            if TRACKING_FINALIZER not in (meta.get("finalizers") or []):
                continue
            if phase not in _TERMINAL and not gone:
                continue
            if phase == "Succeeded":
                if indexed:
                    completed.add(int((meta.get("annotations") or {}).get(INDEX_KEY, 0)))
                status["succeeded"] = status.get("succeeded", 0) + 1
            elif not finished:
                rule = _failure_rule(job, pod) if spec.get("podFailurePolicy") else None
                if rule is not None and rule[0] == "FailJob" and not _has(job, "FailureTarget"):
                    status.setdefault("conditions", []).append(
                        _condition("FailureTarget", "PodFailurePolicy", rule[1])
                    )
                if rule is None or rule[0] != "Ignore":
                    status["failed"] = status.get("failed", 0) + 1
                    self._not_before[job["metadata"]["uid"]] = time.monotonic() + min(
                        self.cluster.kubelet.settings.backoff_base * 2 ** (status["failed"] - 1),
                        60.0,
                    )
            released = copy.deepcopy(pod)
            released["metadata"]["finalizers"] = [
                f for f in meta["finalizers"] if f != TRACKING_FINALIZER
            ]
            self.store.update(_POD, released)
        if indexed:
            status["completedIndexes"] = _format_indexes(completed)
        live = [p for p in pods if p.get("status", {}).get("phase") not in _TERMINAL]
        active = [p for p in live if not p["metadata"].get("deletionTimestamp")]
        terminating = [p for p in live if p["metadata"].get("deletionTimestamp")]
        if finished or job["metadata"].get("deletionTimestamp"):
            self._write(job, original)
            return
        now = now_rfc3339()
        if spec.get("suspend"):
            for pod in active:
                self._delete_pod(pod)
            if not _has(job, "Suspended"):
                status.setdefault("conditions", []).append(
                    _condition("Suspended", "JobSuspended", "Job suspended")
                )
            status["active"] = 0
            self._write(job, original)
            return
        status.setdefault("startTime", now)
        failure = _has(job, "FailureTarget")
        success = _has(job, "SuccessCriteriaMet")
        succeeded = status.get("succeeded", 0)
        completions = spec.get("completions")
        if not failure and not success:
            deadline = spec.get("activeDeadlineSeconds")
            # with OnFailure, container restarts count against the back-off limit too
            restarts = 0
            if (spec["template"].get("spec") or {}).get("restartPolicy") == "OnFailure":
                restarts = sum(
                    int(c.get("restartCount", 0))
                    for p in active
                    for c in p.get("status", {}).get("containerStatuses") or []
                )
            if status.get("failed", 0) + restarts > int(spec.get("backoffLimit", 6)):
                failure = _condition(
                    "FailureTarget",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
            elif deadline is not None and time.time() - parse_time(status["startTime"]) >= deadline:
                failure = _condition(
                    "FailureTarget",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
                self.cluster.recorder.record(
                    job, "DeadlineExceeded", failure["message"], "Warning", "job-controller"
                )
            if failure is not None:
                status.setdefault("conditions", []).append(failure)
            elif (
                (indexed and len(completed) >= (completions or 0))
                or (not indexed and completions is not None and succeeded >= completions)
                or (completions is None and succeeded > 0 and not active)
            ):
                success = _condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                )
                status.setdefault("conditions", []).append(success)
        if failure is not None or success is not None:
            for pod in active:
                self._delete_pod(pod)
            if not live:
                if failure is not None:
                    status["conditions"].append(
                        _condition("Failed", failure["reason"], failure["message"])
                    )
                    self.cluster.recorder.record(
                        job, failure["reason"], failure["message"], "Warning", "job-controller"
                    )
                else:
                    status["conditions"].append(
                        _condition(
                            "Complete",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                        )
                    )
                    status["completionTime"] = now
                    self.cluster.recorder.record(
                        job, "Completed", "Job completed", component="job-controller"
                    )
            active = []
        elif time.monotonic() >= self._not_before.get(job["metadata"]["uid"], 0):
            active += self._create_pods(job, active, completed)
        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if _ready(p))
        status["terminating"] = len(terminating)
        status.setdefault("uncountedTerminatedPods", {})
        self._write(job, original)

    def _write(self, job: Obj, original: dict[str, Any]) -> None:
        for zero in ("active", "succeeded", "failed"):
            if job["status"].get(zero) == 0:
                del job["status"][zero]  # omitempty, as the real status is serialized
        if job["status"] != original:
            current = self.store.find(_JOB, job["metadata"]["namespace"], job["metadata"]["name"])
            if current is not None:
                current["status"] = job["status"]
                self.store.update(_JOB, current)

    def _create_pods(self, job: Obj, active: list[Obj], completed: set[int]) -> list[Obj]:
        spec = job["spec"]
        parallelism = int(spec.get("parallelism", 1))
        completions = spec.get("completions")
        succeeded = job["status"].get("succeeded", 0)
        created = []
        if spec.get("completionMode") == "Indexed":
            running = {
                int((p["metadata"].get("annotations") or {}).get(INDEX_KEY, -1)) for p in active
            }
            todo = [
                i for i in range(int(completions or 0)) if i not in completed and i not in running
            ]
            for index in todo[: max(parallelism - len(active), 0)]:
                pod = self._create_pod(job, index)
                if pod is not None:
                    created.append(pod)
            return created
        remaining = (
            parallelism if completions is None else min(parallelism, completions - succeeded)
        )
        for _ in range(max(remaining - len(active), 0)):
            pod = self._create_pod(job, None)
            if pod is not None:
                created.append(pod)
        return created

    def _create_pod(self, job: Obj, index: int | None) -> Obj | None:
        meta, template = job["metadata"], copy.deepcopy(job["spec"]["template"])
        pod_meta = template.get("metadata") or {}
        name = meta["name"] if index is None else f"{meta['name']}-{index}"
        pod_meta.update(
            generateName=f"{name}-",
            namespace=meta["namespace"],
            ownerReferences=[
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            finalizers=[TRACKING_FINALIZER],
        )
        pod_spec = template["spec"]
        if index is not None:
            pod_meta.setdefault("annotations", {})[INDEX_KEY] = str(index)
            pod_meta.setdefault("labels", {})[INDEX_KEY] = str(index)
            pod_spec["hostname"] = name
            for container in [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]:
                container.setdefault("env", []).insert(
                    0,
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}
                        },
                    },
                )
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}
        try:
            created = self.store.create(_POD, admit(self.store, _POD, pod, self.cluster.ips))
        except ApiError as exc:
            self.cluster.recorder.record(
                job, "FailedCreate", f"Error creating: {exc.message}", "Warning", "job-controller"
            )
            return None
        self.cluster.recorder.record(
            job,
            "SuccessfulCreate",
            f"Created pod: {created['metadata']['name']}",
            component="job-controller",
        )
        return created

    def _delete_pod(self, pod: Obj) -> None:
        with contextlib.suppress(ApiError):
            self.store.delete(_POD, pod["metadata"]["namespace"], pod["metadata"]["name"])
