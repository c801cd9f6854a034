"""The default scheduler's filters (NodeUnschedulable, TaintToleration, NodeAffinity,
NodeResourcesFit) and its Unschedulable condition and FailedScheduling message, worded as
kube-scheduler words them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from kubernetes.utils import parse_quantity

from tests.kubefake.resources import BY_KIND
from tests.kubefake.store import Change, Obj, now_rfc3339

if TYPE_CHECKING:
    from tests.kubefake.cluster import Cluster

_POD, _NODE = BY_KIND["Pod"], BY_KIND["Node"]
#: Filter failures preemption cannot fix (kube-scheduler's UnschedulableAndUnresolvable).
_UNRESOLVABLE = "Preemption is not helpful for scheduling"
_NO_VICTIMS = "No preemption victims found for incoming pod"
_RETRY_SECONDS = 5.0


def _quantity(value: Any) -> float:
    return float(parse_quantity(value))


def pod_requests(pod: Obj) -> dict[str, float]:
    """What a pod asks of a node: the sum over its containers, at least each init container's,
    plus one pod."""
    spec = pod.get("spec", {})
    total: dict[str, float] = {}
    for container in spec.get("containers") or []:
        for name, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[name] = total.get(name, 0.0) + _quantity(value)
    for container in spec.get("initContainers") or []:
        for name, value in ((container.get("resources") or {}).get("requests") or {}).items():
            total[name] = max(total.get(name, 0.0), _quantity(value))
    total["pods"] = total.get("pods", 0.0) + 1
    return total


def _tolerates(taint: dict[str, Any], tolerations: list[dict[str, Any]]) -> bool:
    for toleration in tolerations:
        effect = toleration.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        if toleration.get("operator") == "Exists":
            if not toleration.get("key") or toleration.get("key") == taint.get("key"):
                return True
        elif toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def _expression(labels: dict[str, str], expr: dict[str, Any]) -> bool:
    key, operator, values = expr["key"], expr["operator"], expr.get("values") or []
    present = key in labels
    if operator == "In":
        return present and labels[key] in values
    if operator == "NotIn":
        return not present or labels[key] not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present:
        try:
            actual, bound = int(labels[key]), int(values[0])
        except (ValueError, IndexError):
            return False
        return actual > bound if operator == "Gt" else actual < bound
    return False


def matches_node(pod: Obj, node: Obj) -> bool:
    """nodeSelector and required node affinity (terms OR-ed, expressions AND-ed)."""
    labels = node["metadata"].get("labels") or {}
    spec = pod.get("spec", {})
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    fields = {"metadata.name": node["metadata"]["name"]}
    for term in required.get("nodeSelectorTerms") or []:
        if all(_expression(labels, e) for e in term.get("matchExpressions") or []) and all(
            _expression(fields, e) for e in term.get("matchFields") or []
        ):
            return True
    return False


class Scheduler:
    """Binds pending pods to nodes, or marks them Unschedulable with the scheduler's message."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self._wake = asyncio.Event()
        self._reported: dict[str, tuple[str, float]] = {}
        self._devices: dict[tuple[str, str], list[str]] = {}
        self._node_of: dict[str, str] = {}
        self.store.subscribe(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.rtype.kind == "Node" or (
            change.rtype.kind == "Pod" and change.type != "MODIFIED"
        ):
            self._wake.set()
        elif (
            change.rtype.kind == "Pod"
            and change.old is not None
            and (
                change.obj.get("status", {}).get("phase")
                != change.old.get("status", {}).get("phase")
            )
        ):
            self._wake.set()  # a pod that finished frees its resources

    async def run(self) -> None:
        while True:
            self._wake.clear()
            self.schedule_pending()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=_RETRY_SECONDS)

    def _used(self) -> dict[str, Counter[str]]:
        used: dict[str, Counter[str]] = {}
        for pod in self.store.peek(_POD):
            node = pod.get("spec", {}).get("nodeName")
            if node and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                used.setdefault(node, Counter()).update(pod_requests(pod))
        return used

    def _failures(self, pod: Obj, node: Obj, used: Counter[str]) -> tuple[list[str], bool]:
        """Why ``pod`` does not fit ``node`` (empty when it fits), and whether preemption could
        help at all."""
        spec = pod.get("spec", {})
        tolerations = spec.get("tolerations") or []
        if node.get("spec", {}).get("unschedulable") and not _tolerates(
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}, tolerations
        ):
            return ["node(s) were unschedulable"], False
        for taint in node.get("spec", {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(
                taint, tolerations
            ):
                return [
                    f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
                ], False
        if not matches_node(pod, node):
            return ["node(s) didn't match Pod's node affinity/selector"], False
        allocatable = node.get("status", {}).get("allocatable") or {}
        failures = []
        for name, amount in sorted(pod_requests(pod).items()):
            if amount <= 0:
                continue
            available = _quantity(allocatable.get(name, 0)) - used.get(name, 0)
            if amount > available + 1e-9:
                failures.append("Too many pods" if name == "pods" else f"Insufficient {name}")
        return failures, True

    def schedule_pending(self) -> None:
        pending = [
            p
            for p in self.store.peek(_POD)
            if not p.get("spec", {}).get("nodeName")
            and not p["metadata"].get("deletionTimestamp")
            and p.get("spec", {}).get("schedulerName", "default-scheduler") == "default-scheduler"
            and p.get("status", {}).get("phase", "Pending") == "Pending"
        ]
        pending.sort(
            key=lambda p: (-int(p["spec"].get("priority", 0)), p["metadata"]["creationTimestamp"])
        )
        for pod in pending:
            nodes = sorted(self.store.peek(_NODE), key=lambda n: n["metadata"]["name"])
            used = self._used()
            fits, reasons, preemption = [], Counter[str](), Counter[str]()
            for node in nodes:
                failures, resolvable = self._failures(
                    pod, node, used.get(node["metadata"]["name"], Counter())
                )
                if not failures:
                    fits.append(node)
                    continue
                reasons.update(failures)
                preemption[_NO_VICTIMS if resolvable else _UNRESOLVABLE] += 1
            if fits:
                self._bind(pod, self._least_allocated(pod, fits, used))
            else:
                self._unschedulable(pod, len(nodes), reasons, preemption)

    @staticmethod
    def _least_allocated(pod: Obj, nodes: list[Obj], used: dict[str, Counter[str]]) -> Obj:
        def free_share(node: Obj) -> float:
            allocatable = node.get("status", {}).get("allocatable") or {}
            taken = used.get(node["metadata"]["name"], Counter())
            shares = [
                1 - taken.get(r, 0) / max(_quantity(allocatable.get(r, 0)), 1e-9)
                for r in ("cpu", "memory")
            ]
            return sum(shares) / len(shares)

        return max(nodes, key=free_share)

    def _bind(self, pod: Obj, node: Obj) -> None:
        current = self.store.find(_POD, pod["metadata"]["namespace"], pod["metadata"]["name"])
        if current is None:
            return
        node_name = node["metadata"]["name"]
        self._assign_devices(current, node)
        current["spec"]["nodeName"] = node_name
        conditions = [
            c
            for c in current.setdefault("status", {}).get("conditions", [])
            if c["type"] != "PodScheduled"
        ]
        conditions.insert(
            0,
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339(),
            },
        )
        current["status"]["conditions"] = conditions
        bound = self.store.update(_POD, current)
        self._reported.pop(bound["metadata"]["uid"], None)
        meta = bound["metadata"]
        self.cluster.recorder.record(
            bound,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {node_name}",
            component="default-scheduler",
        )

    def _unschedulable(
        self, pod: Obj, count: int, reasons: Counter[str], preemption: Counter[str]
    ) -> None:
        if count == 0:
            message = "no nodes available to schedule pods"
        else:
            found = ", ".join(sorted(f"{n} {r}" for r, n in reasons.items()))
            victims = ", ".join(sorted(f"{n} {r}" for r, n in preemption.items()))
            message = (
                f"0/{count} nodes are available: {found}. preemption: 0/{count} nodes are "
                f"available: {victims}."
            )
        uid = pod["metadata"]["uid"]
        last = self._reported.get(uid)
        if last is not None and last[0] == message and time.monotonic() - last[1] < 30:
            return
        self._reported[uid] = (message, time.monotonic())
        current = self.store.find(_POD, pod["metadata"]["namespace"], pod["metadata"]["name"])
        if current is None:
            return
        conditions = [
            c
            for c in current.setdefault("status", {}).get("conditions", [])
            if c["type"] != "PodScheduled"
        ]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339(),
                "reason": "Unschedulable",
                "message": message,
            }
        )
        current["status"]["conditions"] = conditions
        updated = self.store.update(_POD, current)
        self.cluster.recorder.record(
            updated, "FailedScheduling", message, "Warning", "default-scheduler"
        )

    # -- devices -------------------------------------------------------------------------------

    def _assign_devices(self, pod: Obj, node: Obj) -> None:
        """Give each container that asks for ``nvidia.com/gpu`` distinct device indexes of its
        node, as the device plugin does (the kubelet exports them as NVIDIA_VISIBLE_DEVICES)."""
        node_name = node["metadata"]["name"]
        total = int(
            _quantity((node.get("status", {}).get("allocatable") or {}).get("nvidia.com/gpu", 0))
        )
        taken = {
            d
            for (uid, _c), devices in self._devices.items()
            for d in devices
            if self._node_of.get(uid) == node_name and self._live(uid)
        }
        free = [str(i) for i in range(total) if str(i) not in taken]
        for container in pod["spec"].get("containers") or []:
            want = ((container.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
            if want:
                count = int(_quantity(want))
                self._devices[(pod["metadata"]["uid"], container["name"])] = free[:count]
                free = free[count:]
        self._node_of[pod["metadata"]["uid"]] = node_name

    def _live(self, uid: str) -> bool:
        return any(
            p["metadata"]["uid"] == uid
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            for p in self.store.peek(_POD)
        )

    def assigned_devices(self, pod_uid: str, container: str) -> list[str]:
        return self._devices.get((pod_uid, container), [])
