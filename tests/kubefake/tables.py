"""``meta.k8s.io/v1`` Tables, which ``kubectl get`` asks for (``Accept: ...;as=Table``): the
server-side columns of the kinds tests look at, NAME and AGE for the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.kubefake.resources import ResourceType
from tests.kubefake.store import Obj, parse_time

Column = tuple[str, str, Callable[[Obj], Any]]


def _age(obj: Obj) -> str:
    created = obj["metadata"].get("creationTimestamp")
    if not created:
        return "<unknown>"
    seconds = int(time.time() - parse_time(created))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pod_ready(pod: Obj) -> str:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    total = len(pod.get("spec", {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: Obj) -> str:
    """What kubectl's STATUS column shows: a waiting or terminated reason before the phase."""
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status", {})
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        reason = (state.get("waiting") or state.get("terminated") or {}).get("reason")
        if (reason and reason != "ContainerCreating") or (
            "waiting" in state and status.get("phase") == "Pending" and reason
        ):
            return str(reason)
    return str(status.get("reason") or status.get("phase") or "Pending")


def _restarts(pod: Obj) -> int:
    return sum(
        int(s.get("restartCount", 0)) for s in pod.get("status", {}).get("containerStatuses") or []
    )


def _job_status(job: Obj) -> str:
    for condition in job.get("status", {}).get("conditions") or []:
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return str(condition["type"])
    return "Suspended" if job.get("spec", {}).get("suspend") else "Running"


def _node_status(node: Obj) -> str:
    ready = any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in node.get("status", {}).get("conditions") or []
    )
    text = "Ready" if ready else "NotReady"
    return text + (",SchedulingDisabled" if node.get("spec", {}).get("unschedulable") else "")


_COLUMNS: dict[str, list[Column]] = {
    "Pod": [
        ("Ready", "string", _pod_ready),
        ("Status", "string", _pod_status),
        ("Restarts", "string", lambda p: str(_restarts(p))),
        ("IP", "string", lambda p: p.get("status", {}).get("podIP") or "<none>"),
        ("Node", "string", lambda p: p.get("spec", {}).get("nodeName") or "<none>"),
    ],
    "Job": [
        ("Status", "string", _job_status),
        (
            "Completions",
            "string",
            lambda j: (
                f"{j.get('status', {}).get('succeeded', 0)}/"
                f"{j.get('spec', {}).get('completions', 1)}"
            ),
        ),
    ],
    "Deployment": [
        (
            "Ready",
            "string",
            lambda d: (
                f"{d.get('status', {}).get('readyReplicas', 0)}/"
                f"{d.get('spec', {}).get('replicas', 1)}"
            ),
        ),
        ("Up-to-date", "integer", lambda d: d.get("status", {}).get("updatedReplicas", 0)),
        ("Available", "integer", lambda d: d.get("status", {}).get("availableReplicas", 0)),
    ],
    "Node": [
        ("Status", "string", _node_status),
        (
            "Version",
            "string",
            lambda n: n.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", ""),
        ),
    ],
    "Service": [
        ("Type", "string", lambda s: s.get("spec", {}).get("type", "ClusterIP")),
        ("Cluster-IP", "string", lambda s: s.get("spec", {}).get("clusterIP", "")),
    ],
    "Event": [
        ("Type", "string", lambda e: e.get("type", "")),
        ("Reason", "string", lambda e: e.get("reason", "")),
        (
            "Object",
            "string",
            lambda e: (
                f"{e['involvedObject'].get('kind', '').lower()}/"
                f"{e['involvedObject'].get('name', '')}"
            ),
        ),
        ("Message", "string", lambda e: e.get("message", "")),
    ],
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def table(rtype: ResourceType, items: list[Obj], resource_version: str) -> dict[str, Any]:
    """A Table of ``items`` with PartialObjectMetadata rows, as the server sends kubectl."""
    columns: list[Column] = [
        ("Name", "string", lambda o: o["metadata"]["name"]),
        *_COLUMNS.get(rtype.kind, []),
        ("Age", "string", _age),
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": 0,
            }
            for name, kind, _ in columns
        ],
        "rows": [
            {
                "cells": [value(item) for _, _, value in columns],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item["metadata"],
                },
            }
            for item in items
        ],
    }
