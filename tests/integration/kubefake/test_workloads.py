"""Deployments on the fake: replicas that each bind their own pod IP, readiness probes, the
scale subresource, and status as the Deployment controller reports it."""

from __future__ import annotations

import urllib.request
import uuid
from typing import Any

import pytest

from tests.integration.kubefake.conftest import NAMESPACE, wait_for

pytestmark = pytest.mark.integration

SERVER = (
    "import http.server, os\n"
    "class Hello(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['POD_NAME'].encode()\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
    "    def log_message(self, *args): pass\n"
    "http.server.HTTPServer((os.environ['POD_IP'], 8080), Hello).serve_forever()\n"
)


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "server",
                            "image": "python:3.11-slim",
                            "command": ["python", "-c", SERVER],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                                {
                                    "name": "POD_NAME",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                                },
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }
                    ],
                },
            },
        },
    }


def _answers(url: str) -> str | None:
    try:
        return str(urllib.request.urlopen(url, timeout=5).read().decode())
    except OSError:
        return None


def _ready_pods(core: Any, name: str) -> list[Any]:
    pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}").items
    return [
        p
        for p in pods
        if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        and p.metadata.deletion_timestamp is None
    ]


def test_a_deployment_of_two_replicas_serves_from_two_pod_ips_and_scales_to_one(
    apps: Any, core: Any
) -> None:
    name = f"web-{uuid.uuid4().hex[:6]}"
    apps.create_namespaced_deployment(NAMESPACE, _deployment(name, 2))
    wait_for(
        lambda: apps.read_namespaced_deployment(name, NAMESPACE).status.ready_replicas == 2,
        timeout=30,
        what="two ready replicas",
    )
    deployment = apps.read_namespaced_deployment(name, NAMESPACE)
    status = deployment.status
    assert (status.replicas, status.updated_replicas, status.available_replicas) == (2, 2, 2)
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Available"].reason == "MinimumReplicasAvailable"
    assert conditions["Progressing"].reason == "NewReplicaSetAvailable"
    pods = _ready_pods(core, name)
    addresses = {p.status.pod_ip for p in pods}
    assert len(addresses) == 2
    answers = {
        urllib.request.urlopen(f"http://{ip}:8080/", timeout=5).read().decode() for ip in addresses
    }
    assert answers == {p.metadata.name for p in pods}
    service = core.create_namespaced_service(
        NAMESPACE,
        {
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    )
    url = f"http://{service.spec.cluster_ip}/"
    wait_for(lambda: _answers(url), what="kube-proxy to listen on the cluster IP")
    through_service = {_answers(url) for _ in range(4)}
    assert through_service == answers  # kube-proxy takes the ready pods in turn
    (replica_set,) = apps.list_namespaced_replica_set(NAMESPACE, label_selector=f"app={name}").items
    assert pods[0].metadata.owner_references[0].uid == replica_set.metadata.uid
    assert replica_set.metadata.owner_references[0].uid == deployment.metadata.uid

    scale = apps.patch_namespaced_deployment_scale(name, NAMESPACE, {"spec": {"replicas": 1}})
    assert scale.spec.replicas == 1
    wait_for(
        lambda: len(core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}").items) == 1,
        timeout=20,
        what="one pod left",
    )
    wait_for(
        lambda: apps.read_namespaced_deployment(name, NAMESPACE).status.replicas == 1,
        what="status replicas 1",
    )
    read = apps.read_namespaced_deployment_scale(name, NAMESPACE)
    assert (read.spec.replicas, read.status.replicas) == (1, 1)
    assert read.status.selector == f"app={name}"

    core.delete_namespaced_service(name, NAMESPACE)
    apps.delete_namespaced_deployment(name, NAMESPACE)
    wait_for(
        lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=f"app={name}").items,
        timeout=20,
        what="the pods to go with the Deployment",
    )


def test_a_failing_liveness_probe_restarts_the_container(core: Any) -> None:
    name = f"live-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "main",
                        "image": "python:3.11-slim",
                        "command": ["python", "-c", "import time; time.sleep(60)"],
                        "livenessProbe": {
                            "exec": {"command": ["sh", "-c", "echo not alive; exit 1"]},
                            "periodSeconds": 1,
                            "failureThreshold": 1,
                        },
                    }
                ],
            },
        },
    )
    status = wait_for(
        lambda: (
            (s := core.read_namespaced_pod(name, NAMESPACE).status.container_statuses)
            and s[0].restart_count >= 1
            and s[0]
        ),
        timeout=30,
        what="a restart",
    )
    assert status.last_state.terminated is not None
    events = {
        (e.reason, e.message)
        for e in core.list_namespaced_event(
            NAMESPACE, field_selector=f"involvedObject.name={name}"
        ).items
    }
    assert ("Unhealthy", "Liveness probe failed: not alive") in events
    assert ("Killing", "Container main failed liveness probe, will be restarted") in events
    core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
