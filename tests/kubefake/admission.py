"""Defaulting and admission on create, as the API server's defaulters and admission plugins do
(ServiceAccount, Priority, DefaultTolerationSeconds, NamespaceLifecycle)."""

from __future__ import annotations

import base64
import copy
import ipaddress
import os
import uuid
from typing import Any

import psutil

from tests.kubefake.errors import ApiError, forbidden_admission
from tests.kubefake.resources import BY_KIND, ResourceType
from tests.kubefake.store import Obj, Store, now_rfc3339
from tests.kubefake.validation import SCHEMA_VERSION

_NS = BY_KIND["Namespace"]


def _default_probe(probe: dict[str, Any] | None) -> None:
    if not probe:
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        probe.setdefault(key, value)
    if "httpGet" in probe:
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def default_pod_spec(spec: dict[str, Any]) -> None:
    """The defaults the API server fills into every pod spec (and pod templates)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            container.setdefault("imagePullPolicy", _image_pull_policy(container.get("image", "")))
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            resources = container.setdefault("resources", {})
            if resources.get("limits"):
                requests = resources.setdefault("requests", {})
                for name, value in resources["limits"].items():
                    requests.setdefault(name, value)  # requests default to limits
            for port in container.get("ports") or []:
                port.setdefault("protocol", "TCP")
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                _default_probe(container.get(probe))


def _default_pod(store: Store, pod: Obj) -> None:
    spec = pod.setdefault("spec", {})
    default_pod_spec(spec)
    meta = pod["metadata"]
    namespace = meta["namespace"]
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    if store.find(BY_KIND["ServiceAccount"], namespace, account) is None:
        raise forbidden_admission(
            BY_KIND["Pod"],
            meta.get("name"),
            f'error looking up service account {namespace}/{account}: serviceaccount "{account}" '
            "not found",
        )
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    if spec.get("priorityClassName"):
        priority_class = store.find(BY_KIND["PriorityClass"], "", spec["priorityClassName"])
        if priority_class is None:
            raise forbidden_admission(
                BY_KIND["Pod"],
                meta.get("name"),
                f"no PriorityClass with name {spec['priorityClassName']} was found",
            )
        spec["priority"] = int(priority_class.get("value", 0))
    else:
        spec.setdefault("priority", 0)
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )
    status = pod.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status["qosClass"] = _qos_class(spec)


def _qos_class(spec: dict[str, Any]) -> str:
    containers = spec.get("containers") or []
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        all(r.get("limits", {}).get(k) is not None for k in ("cpu", "memory"))
        and r.get("requests", {}).get("cpu") == r.get("limits", {}).get("cpu")
        and r.get("requests", {}).get("memory") == r.get("limits", {}).get("memory")
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _default_job(job: Obj) -> None:
    spec = job.setdefault("spec", {})
    meta = job["metadata"]
    uid = meta["uid"] = str(uuid.uuid4())
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("manualSelector", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    labels = {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": meta["name"],
        "controller-uid": uid,
        "job-name": meta["name"],
    }
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    default_pod_spec(template.setdefault("spec", {}))


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    if obj["kind"] == "Deployment":
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
        )
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))


class ServiceIPs:
    """Cluster IPs for Services from a loopback range, so kube-proxy can listen on them."""

    def __init__(self) -> None:
        self._next = int(ipaddress.IPv4Address("127.96.0.10"))

    def allocate(self) -> str:
        self._next += 1
        return str(ipaddress.IPv4Address(self._next))


def _default_service(service: Obj, ips: ServiceIPs) -> None:
    spec = service.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec.get("clusterIP") != "None":
        spec["clusterIP"] = ips.allocate()
    spec["clusterIPs"] = [spec["clusterIP"]]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    service.setdefault("status", {"loadBalancer": {}})


def default_node(name: str = "kubefake-node") -> Obj:
    """One CPU node with this machine's CPUs and memory."""
    return {
        "metadata": {"name": name},
        "status": {
            "capacity": {
                "cpu": str(os.cpu_count() or 1),
                "memory": f"{psutil.virtual_memory().total // 1024}Ki",
                "pods": "110",
                "ephemeral-storage": "100Gi",
            }
        },
    }


def complete_node(node: Obj) -> Obj:
    """Fill what a registered kubelet reports: labels, allocatable, Ready, addresses."""
    meta = node.setdefault("metadata", {})
    name = meta["name"]
    labels = meta.setdefault("labels", {})
    labels.setdefault("kubernetes.io/hostname", name)
    labels.setdefault("kubernetes.io/os", "linux")
    labels.setdefault("kubernetes.io/arch", "amd64")
    labels.setdefault("beta.kubernetes.io/os", "linux")
    labels.setdefault("beta.kubernetes.io/arch", "amd64")
    status = node.setdefault("status", {})
    capacity = status.setdefault(
        "capacity", status.get("allocatable") or default_node()["status"]["capacity"]
    )
    capacity.setdefault("pods", "110")
    status.setdefault("allocatable", dict(capacity))
    now = now_rfc3339()
    status.setdefault(
        "conditions",
        [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }
        ],
    )
    status.setdefault(
        "addresses",
        [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
    )
    status.setdefault(
        "nodeInfo",
        {
            "kubeletVersion": f"v{SCHEMA_VERSION}",
            "containerRuntimeVersion": "containerd://1.7.27",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "kubefake",
            "kernelVersion": os.uname().release,
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kubeProxyVersion": "",
        },
    )
    return node


def admit(store: Store, rtype: ResourceType, obj: Obj, ips: ServiceIPs) -> Obj:
    """The object as it will be stored: defaulted, or refused as the API server refuses it."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    for server_owned in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        meta.pop(server_owned, None)
    obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
    if rtype.namespaced:
        namespace = store.find(_NS, "", meta["namespace"])
        if namespace is None:
            raise ApiError(
                404,
                f'namespaces "{meta["namespace"]}" not found',
                details={"name": meta["namespace"], "kind": "namespaces"},
            )
        if namespace["metadata"].get("deletionTimestamp"):
            raise forbidden_admission(
                rtype,
                meta.get("name"),
                f"unable to create new content in namespace "
                f"{meta['namespace']} because it is being terminated",
            )
    if rtype.kind in ("Job", "Deployment", "ReplicaSet", "ResourceClaim"):
        obj.setdefault("status", {})  # a non-pointer struct: the server always writes it
    if rtype.kind == "Pod":
        _default_pod(store, obj)
    elif rtype.kind == "Job":
        _default_job(obj)
    elif rtype.kind in ("Deployment", "ReplicaSet"):
        _default_deployment(obj)
    elif rtype.kind == "Service":
        _default_service(obj, ips)
    elif rtype.kind == "Secret":
        data = obj.setdefault("data", {})
        for key, value in (obj.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj.setdefault("type", "Opaque")
    elif rtype.kind == "Node":
        complete_node(obj)
    elif rtype.kind == "Namespace":
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", "")
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
    return obj
