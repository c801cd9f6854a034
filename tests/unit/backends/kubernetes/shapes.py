"""Job and Pod objects shaped as the API server returns them (fields from real clusters)."""

from __future__ import annotations

from typing import Any

CREATED = "2026-12-03T14:00:00Z"


def job(
    *,
    conditions: list[dict[str, Any]] | None = None,
    active: int = 1,
    succeeded: int = 0,
    failed: int = 0,
    suspend: bool = False,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    deadline: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "suspend": suspend,
        "template": {"spec": {"containers": [{"name": "step", "image": "mlyard:1"}]}},
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    status: dict[str, Any] = {"startTime": CREATED, "active": active}
    if succeeded:
        status["succeeded"] = succeeded
    if failed:
        status["failed"] = failed
    if conditions:
        status["conditions"] = conditions
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "mlyard-r1-1-1",
            "namespace": "mlyard",
            "uid": "6b1d2c3e-0000-4000-8000-000000000001",
            "creationTimestamp": CREATED,
            "labels": labels or {"mlyard.io/attempt-id": "r1.1.1"},
            "annotations": annotations or {},
        },
        "spec": spec,
        "status": status,
    }


def condition(kind: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": CREATED,
        "lastTransitionTime": CREATED,
    }


def pod(
    *,
    phase: str = "Running",
    waiting: tuple[str, str] | None = None,
    terminated: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    reason: str | None = None,
    message: str | None = None,
    memory_limit: str | None = "4Gi",
    created: str = CREATED,
    node: str | None = "gpu-node-1",
) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"startedAt": "2026-12-03T14:00:05Z"}}
    if waiting is not None:
        state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if terminated is not None:
        state = {"terminated": terminated}
    limits = {"cpu": "1"} | ({"memory": memory_limit} if memory_limit else {})
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions
        if conditions is not None
        else [{"type": "PodScheduled", "status": "True", "lastTransitionTime": created}],
        "containerStatuses": [
            {
                "name": "step",
                "image": "registry.example.com/mlyard:1",
                "imageID": "",
                "ready": phase == "Running",
                "restartCount": 0,
                "started": phase == "Running",
                "state": state,
            }
        ],
    }
    if reason:
        status["reason"] = reason
    if message:
        status["message"] = message
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "step",
                "image": "registry.example.com/mlyard:1",
                "resources": {"limits": limits, "requests": limits},
            }
        ],
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "mlyard-r1-1-1-x7k2p",
            "namespace": "mlyard",
            "creationTimestamp": created,
            "labels": {"mlyard.io/attempt-id": "r1.1.1", "job-name": "mlyard-r1-1-1"},
        },
        "spec": spec,
        "status": status,
    }


def unschedulable_pod(message: str, *, created: str = CREATED) -> dict[str, Any]:
    """A pending pod the scheduler could not place (no container statuses yet)."""
    pending = pod(phase="Pending", node=None, created=created)
    pending["status"] = {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": created,
            }
        ],
    }
    return pending
