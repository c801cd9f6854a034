"""The fake Kubernetes API server (tests/kubefake), started by scripts/services/kube-fake.sh
in a state directory of its own with three nodes (one CPU node, two GPU nodes), and the
official client on it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servicekit import start_service, stop_service

NAMESPACE = "mlyard"
#: Kept small, so that a test can push a watch's resourceVersion out of the history.
WATCH_HISTORY = 60

NODES = [
    {"metadata": {"name": "cpu-node"}},
    {
        "metadata": {
            "name": "gpu-a100",
            "labels": {
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                "nvidia.com/gpu.count": "4",
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"}},
    },
    {
        "metadata": {"name": "gpu-small", "labels": {"nvidia.com/gpu.product": "NVIDIA-L4"}},
        "status": {
            "capacity": {
                "cpu": "4",
                "memory": "16Gi",
                "nvidia.com/gpu": "1",
                "nvidia.com/mig-1g.10gb": "7",
            }
        },
    },
]


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fake cluster of its own for this folder; yields its env (``KUBECONFIG``) and
    ``STATE_DIR``."""
    state_dir = tmp_path_factory.mktemp("kube-fake")
    (state_dir / "nodes.json").write_text(json.dumps(NODES))
    (state_dir / "images.json").write_text(json.dumps({"missing": ["example.org/team/gone:1"]}))
    previous = os.environ.get("KUBE_FAKE_WATCH_HISTORY")
    os.environ["KUBE_FAKE_WATCH_HISTORY"] = str(WATCH_HISTORY)
    try:
        env = start_service("kube-fake", state_dir)
    finally:
        if previous is None:
            os.environ.pop("KUBE_FAKE_WATCH_HISTORY")
        else:
            os.environ["KUBE_FAKE_WATCH_HISTORY"] = previous
    yield {**env, "STATE_DIR": str(state_dir)}
    stop_service("kube-fake", state_dir)


@pytest.fixture(scope="session")
def api_client(kube_cluster: dict[str, str]) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=kube_cluster["KUBECONFIG"], context="fake")
    yield client
    client.close()


@pytest.fixture(scope="session")
def core(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def batch(api_client: Any) -> Any:
    from kubernetes import client

    return client.BatchV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(api_client)


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def job_body(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A Job of one container running ``command`` (the image is never run by the fake)."""
    container: dict[str, Any] = {"name": "main", "image": "python:3.11-slim", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


def pod_body(name: str, command: list[str], **container: Any) -> dict[str, Any]:
    spec = container.pop("pod_spec", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            **spec,
            "containers": [
                {"name": "main", "image": "python:3.11-slim", "command": command, **container}
            ],
        },
    }


def container_state(core: Any, name: str) -> Any:
    pod = core.read_namespaced_pod(name, NAMESPACE)
    statuses = pod.status.container_statuses or []
    return statuses[0].state if statuses else None


def state_dir(kube_cluster: dict[str, str]) -> Path:
    return Path(kube_cluster["STATE_DIR"])
