"""The garbage collector (owner references; Background, Foreground and Orphan deletion), the
TTL-after-finished controller, pod GC for pods of deleted nodes, and namespace deletion."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from tests.kubefake.errors import ApiError
from tests.kubefake.resources import BY_KIND, RESOURCE_TYPES, ResourceType
from tests.kubefake.store import Change, Obj, now_rfc3339, parse_time

if TYPE_CHECKING:
    from tests.kubefake.cluster import Cluster

_POD, _NODE, _JOB, _NS = BY_KIND["Pod"], BY_KIND["Node"], BY_KIND["Job"], BY_KIND["Namespace"]


class GarbageCollector:
    """Deletes dependents whose owners are gone, and finishes Foreground / Orphan deletions."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self._wake = asyncio.Event()
        self.store.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if (
            change.type == "DELETED"
            or change.obj["metadata"].get("deletionTimestamp")
            or (change.rtype.kind == "Node")
        ):
            self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            self.collect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    def _all(self) -> list[tuple[ResourceType, Obj]]:
        return [(t, o) for t in RESOURCE_TYPES for o in self.store.peek(t)]

    def collect(self) -> None:
        objects = self._all()
        uids = {o["metadata"]["uid"]: o for _t, o in objects}
        for rtype, obj in objects:
            meta = obj["metadata"]
            owners = meta.get("ownerReferences") or []
            if owners and not any(o["uid"] in uids for o in owners):
                self._delete(rtype, obj, "Background")
            if not meta.get("deletionTimestamp"):
                continue
            finalizers = meta.get("finalizers") or []
            dependents = [
                (t, d)
                for t, d in objects
                if any(o["uid"] == meta["uid"] for o in d["metadata"].get("ownerReferences") or [])
            ]
            if "orphan" in finalizers:
                for dtype, dependent in dependents:
                    self._drop_owner(dtype, dependent, meta["uid"])
                self._drop_finalizer(rtype, obj, "orphan")
            elif "foregroundDeletion" in finalizers:
                for dtype, dependent in dependents:
                    self._delete(dtype, dependent, "Foreground")
                if not dependents:
                    self._drop_finalizer(rtype, obj, "foregroundDeletion")
        self._pod_gc()
        self._namespaces()

    def _delete(self, rtype: ResourceType, obj: Obj, policy: str) -> None:
        if obj["metadata"].get("deletionTimestamp") and policy != "Foreground":
            return
        finalizer = "foregroundDeletion" if policy == "Foreground" else None
        with contextlib.suppress(ApiError):
            self.store.delete(
                rtype,
                obj["metadata"].get("namespace", ""),
                obj["metadata"]["name"],
                add_finalizer=finalizer,
            )

    def _fresh(self, rtype: ResourceType, obj: Obj) -> Obj | None:
        return self.store.find(
            rtype,
            obj["metadata"].get("namespace", ""),
            obj["metadata"]["name"],
        )

    def _drop_owner(self, rtype: ResourceType, obj: Obj, uid: str) -> None:
        current = self._fresh(rtype, obj)
        if current is not None:
            current["metadata"]["ownerReferences"] = [
                o for o in current["metadata"].get("ownerReferences") or [] if o["uid"] != uid
            ]
            self.store.update(rtype, current)

    def _drop_finalizer(self, rtype: ResourceType, obj: Obj, finalizer: str) -> None:
        current = self._fresh(rtype, obj)
        if current is not None:
            current["metadata"]["finalizers"] = [
                f for f in current["metadata"].get("finalizers") or [] if f != finalizer
            ]
            self.store.update(rtype, current)

    def _pod_gc(self) -> None:
        """Pods bound to a node that no longer exists fail with DisruptionTarget, then go."""
        nodes = {n["metadata"]["name"] for n in self.store.peek(_NODE)}
        for pod in list(self.store.peek(_POD)):
            node = pod.get("spec", {}).get("nodeName")
            if not node or node in nodes:
                continue
            current = self._fresh(_POD, pod)
            if current is None:
                continue
            status = current.setdefault("status", {})
            if status.get("phase") not in ("Succeeded", "Failed"):
                now = now_rfc3339()
                status["phase"] = "Failed"
                status["conditions"] = [
                    c for c in status.get("conditions", []) if c["type"] != "DisruptionTarget"
                ] + [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                        "reason": "DeletionByPodGC",
                        "message": "PodGC: node no longer exists",
                    }
                ]
                for container in status.get("containerStatuses") or []:
                    if "terminated" not in container.get("state", {}):
                        container["state"] = {
                            "terminated": {
                                "exitCode": 137,
                                "reason": "ContainerStatusUnknown",
                                "message": "The container could not be located when the pod was "
                                "terminated",
                                "finishedAt": now,
                            }
                        }
                        container["ready"] = False
                current = self.store.update(_POD, current)
            with contextlib.suppress(ApiError):
                self.store.delete(
                    _POD,
                    current["metadata"]["namespace"],
                    current["metadata"]["name"],
                    grace_seconds=0,
                )

    def _namespaces(self) -> None:
        for namespace in list(self.store.peek(_NS)):
            if not namespace["metadata"].get("deletionTimestamp"):
                continue
            name = namespace["metadata"]["name"]
            left = 0
            for rtype in RESOURCE_TYPES:
                if not rtype.namespaced:
                    continue
                for obj in self.store.list(rtype, name):
                    left += 1
                    self._delete(rtype, obj, "Background")
            if not left:
                self._drop_finalizer(_NS, namespace, "kubernetes")


class TtlController:
    """Deletes finished Jobs ``ttlSecondsAfterFinished`` after they finished (Foreground, as
    the real TTL-after-finished controller does)."""

    def __init__(self, cluster: Cluster) -> None:
        self.store = cluster.store

    async def run(self) -> None:
        while True:
            for job in list(self.store.peek(_JOB)):
                ttl = job.get("spec", {}).get("ttlSecondsAfterFinished")
                if ttl is None or job["metadata"].get("deletionTimestamp"):
                    continue
                done = [
                    c
                    for c in job.get("status", {}).get("conditions") or []
                    if c["type"] in ("Complete", "Failed") and c["status"] == "True"
                ]
                if done and time.time() >= parse_time(done[0]["lastTransitionTime"]) + int(ttl):
                    with contextlib.suppress(ApiError):
                        self.store.delete(
                            _JOB,
                            job["metadata"]["namespace"],
                            job["metadata"]["name"],
                            add_finalizer="foregroundDeletion",
                        )
            await asyncio.sleep(0.5)
