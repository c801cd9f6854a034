"""Pods ended by the cluster, not by the step (eviction, a lost node), are infrastructure
failures: retried by the orchestrator without using the step's retries."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend
from mlyard.models.backends import JobHandle, JobState
from tests.contracts.backend_contract import make_task, wait_terminal
from tests.integration.kubernetes.conftest import NAMESPACE, make_backend

pytestmark = pytest.mark.integration


def running_pod(backend: Backend, handle: JobHandle, core_api: Any) -> str:
    deadline = time.monotonic() + 60
    while backend.status([handle])[handle.job_id].state != JobState.RUNNING:
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.1)
    selector = f"mlyard.io/attempt-id={handle.data['attempt_id']}"
    [pod] = core_api.list_namespaced_pod(NAMESPACE, label_selector=selector).items
    name: str = pod.metadata.name
    return name


def test_an_evicted_pod_is_an_infrastructure_failure(
    backend: Backend, store: ArtifactStore, tmp_path: Path, core_api: Any
) -> None:
    handle = backend.submit(make_task(store, tmp_path, "sleep", {"seconds": 60}))
    pod = running_pod(backend, handle, core_api)
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": NAMESPACE},
    }
    core_api.create_namespaced_pod_eviction(pod, NAMESPACE, eviction)
    status = wait_terminal(backend, handle, timeout=60)
    assert status.state == JobState.FAILED and status.infrastructure_failure
    assert "EvictionByEvictionAPI" in (status.reason or "")


def test_a_lost_node_is_an_infrastructure_failure(
    kube: dict[str, str],
    store: ArtifactStore,
    tmp_path: Path,
    core_api: Any,
    credentials_secret: str,
) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "doomed-node", "labels": {"pool": "doomed"}},
        "status": {"capacity": {"cpu": "2", "memory": "4Gi"}},
    }
    core_api.create_node(node)
    try:
        backend = make_backend(kube, store, node_selector={"pool": "doomed"})
        handle = backend.submit(make_task(store, tmp_path, "sleep", {"seconds": 60}))
        running_pod(backend, handle, core_api)
    finally:
        core_api.delete_node("doomed-node")
    status = wait_terminal(backend, handle, timeout=60)
    assert status.state == JobState.FAILED and status.infrastructure_failure
    # Seen either while the pod GC marks the pod or after it removed it: both name the node.
    assert "node" in (status.reason or "")
    backend.close()
