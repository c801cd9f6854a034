"""The ReplicaSet and Deployment controllers: replicas, scale up / down, rolling to a new
template through a new ReplicaSet, and their status counts and conditions."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
from typing import TYPE_CHECKING, Any

from tests.kubefake.admission import admit
from tests.kubefake.errors import ApiError
from tests.kubefake.resources import BY_KIND
from tests.kubefake.store import Change, Obj, now_rfc3339

if TYPE_CHECKING:
    from tests.kubefake.cluster import Cluster

_POD, _RS, _DEPLOY = BY_KIND["Pod"], BY_KIND["ReplicaSet"], BY_KIND["Deployment"]
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def _ready(pod: Obj) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def _owned(store_items: list[Obj], uid: str) -> list[Obj]:
    return [
        o
        for o in store_items
        if any(
            r.get("uid") == uid and r.get("controller")
            for r in o["metadata"].get("ownerReferences") or []
        )
    ]


def _owner_ref(obj: Obj) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(_SAFE[b % len(_SAFE)] for b in digest[:10])


class _Loop:
    kinds: tuple[str, ...] = ()

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self._wake = asyncio.Event()
        self.store.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.rtype.kind in self.kinds:
            self._wake.set()

    def sync(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.sync()
            except ApiError as exc:
                if exc.code not in (404, 409):
                    raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    def _write_status(self, rtype: Any, obj: Obj, status: dict[str, Any]) -> None:
        current = self.store.find(rtype, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if current is not None and current.get("status") != status:
            current["status"] = status
            self.store.update(rtype, current)


class ReplicaSetController(_Loop):
    """Keeps ``spec.replicas`` pods of each ReplicaSet running (terminal pods do not count)."""

    kinds = ("ReplicaSet", "Pod")

    def sync(self) -> None:
        pods = list(self.store.peek(_POD))  # read-only here
        for rs in list(self.store.peek(_RS)):
            if rs["metadata"].get("deletionTimestamp"):
                continue
            owned = _owned(pods, rs["metadata"]["uid"])
            active = [
                p
                for p in owned
                if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
                and not p["metadata"].get("deletionTimestamp")
            ]
            want = int(rs["spec"].get("replicas", 1))
            if len(active) < want:
                for _ in range(want - len(active)):
                    created = self._create_pod(rs)
                    if created is not None:
                        active.append(created)
            elif len(active) > want:
                # as the real controller: unscheduled, then not ready, then newest go first
                active.sort(
                    key=lambda p: (
                        bool(p["spec"].get("nodeName")),
                        _ready(p),
                        p["metadata"]["creationTimestamp"],
                    )
                )
                for pod in active[: len(active) - want]:
                    with contextlib.suppress(ApiError):
                        self.store.delete(
                            _POD, pod["metadata"]["namespace"], pod["metadata"]["name"]
                        )
                active = active[len(active) - want :]
            ready = sum(1 for p in active if _ready(p))
            status = {
                "replicas": len(active),
                "fullyLabeledReplicas": len(active),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            self._write_status(
                _RS,
                rs,
                {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")},
            )

    def _create_pod(self, rs: Obj) -> Obj | None:
        template = copy.deepcopy(rs["spec"]["template"])
        meta = template.get("metadata") or {}
        meta.update(
            generateName=f"{rs['metadata']['name']}-",
            namespace=rs["metadata"]["namespace"],
            ownerReferences=[_owner_ref(rs)],
        )
        pod = {"metadata": meta, "spec": template["spec"]}
        try:
            return self.store.create(_POD, admit(self.store, _POD, pod, self.cluster.ips))
        except ApiError as exc:
            self.cluster.recorder.record(
                rs,
                "FailedCreate",
                f"Error creating: {exc.message}",
                "Warning",
                "replicaset-controller",
            )
            return None


class DeploymentController(_Loop):
    """One ReplicaSet per pod template (``pod-template-hash``); the newest gets the replicas,
    older ones are scaled down as the new one becomes available."""

    kinds = ("Deployment", "ReplicaSet")

    def sync(self) -> None:
        sets = list(self.store.peek(_RS))
        for deployment in list(self.store.peek(_DEPLOY)):
            if deployment["metadata"].get("deletionTimestamp"):
                continue
            owned = _owned(sets, deployment["metadata"]["uid"])
            spec = deployment["spec"]
            digest = template_hash(spec["template"])
            new = next(
                (
                    rs
                    for rs in owned
                    if (rs["metadata"].get("labels") or {}).get("pod-template-hash") == digest
                ),
                None,
            )
            revision = 1 + max(
                (
                    int(
                        (rs["metadata"].get("annotations") or {}).get(
                            "deployment.kubernetes.io/revision", 0
                        )
                    )
                    for rs in owned
                ),
                default=0,
            )
            if new is None:
                new = self._create_set(deployment, digest, revision)
                owned.append(new)
            want = int(spec.get("replicas", 1))
            old = [rs for rs in owned if rs["metadata"]["uid"] != new["metadata"]["uid"]]
            old_live = sum(int(rs["spec"].get("replicas", 0)) for rs in old)
            recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
            new_available = int(new.get("status", {}).get("availableReplicas", 0))
            for rs in old:
                keep = (
                    0
                    if recreate
                    else max(0, min(int(rs["spec"].get("replicas", 0)), want - new_available))
                )
                self._scale(rs, keep)
            old_pods = sum(int(rs.get("status", {}).get("replicas", 0)) for rs in old)
            self._scale(new, 0 if recreate and (old_live or old_pods) else want)
            self._status(deployment, new, owned)

    def _create_set(self, deployment: Obj, digest: str, revision: int) -> Obj:
        template = copy.deepcopy(deployment["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = digest
        selector = copy.deepcopy(deployment["spec"].get("selector") or {})
        selector.setdefault("matchLabels", {})["pod-template-hash"] = digest
        rs = {
            "metadata": {
                "name": f"{deployment['metadata']['name']}-{digest}",
                "namespace": deployment["metadata"]["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                "ownerReferences": [_owner_ref(deployment)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        created = self.store.create(_RS, admit(self.store, _RS, rs, self.cluster.ips))
        self.cluster.recorder.record(
            deployment,
            "ScalingReplicaSet",
            f"Scaled up replica set {created['metadata']['name']} from 0 "
            f"to {deployment['spec'].get('replicas', 1)}",
            component="deployment-controller",
        )
        return created

    def _scale(self, rs: Obj, replicas: int) -> None:
        current = self.store.find(_RS, rs["metadata"]["namespace"], rs["metadata"]["name"])
        if current is not None and current["spec"].get("replicas") != replicas:
            current["spec"]["replicas"] = replicas
            self.store.update(_RS, current)

    def _status(self, deployment: Obj, new: Obj, owned: list[Obj]) -> None:
        want = int(deployment["spec"].get("replicas", 1))
        fresh = [
            self.store.find(_RS, rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs
            for rs in owned
        ]
        new_status = next(
            (rs for rs in fresh if rs["metadata"]["uid"] == new["metadata"]["uid"]), new
        ).get("status", {})
        replicas = sum(int(rs.get("status", {}).get("replicas", 0)) for rs in fresh)
        ready = sum(int(rs.get("status", {}).get("readyReplicas", 0)) for rs in fresh)
        available = sum(int(rs.get("status", {}).get("availableReplicas", 0)) for rs in fresh)
        updated = int(new_status.get("replicas", 0))
        previous = {c["type"]: c for c in deployment.get("status", {}).get("conditions") or []}
        now = now_rfc3339()
        max_unavailable = 0 if want <= 1 else want // 4
        is_available = available >= want - max_unavailable
        name = new["metadata"]["name"]
        complete = updated == want and available >= want and replicas == want

        def condition(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
            before = previous.get(kind)
            value = "True" if ok else "False"
            changed = before is None or before["status"] != value or before.get("reason") != reason
            return {
                "type": kind,
                "status": value,
                "lastUpdateTime": now if changed else before["lastUpdateTime"],
                "lastTransitionTime": now
                if before is None or before["status"] != value
                else before["lastTransitionTime"],
                "reason": reason,
                "message": message,
            }

        status: dict[str, Any] = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(replicas - available, 0),
            "conditions": [
                condition(
                    "Available",
                    is_available,
                    "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
                    "Deployment has minimum availability."
                    if is_available
                    else "Deployment does not have minimum availability.",
                ),
                condition(
                    "Progressing",
                    True,
                    "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                    f'ReplicaSet "{name}" has successfully progressed.'
                    if complete
                    else f'ReplicaSet "{name}" is progressing.',
                ),
            ],
        }
        status = {k: v for k, v in status.items() if v or k in ("observedGeneration", "conditions")}
        self._write_status(_DEPLOY, deployment, status)
