"""The Kubernetes backend passes the backend contract on the fake cluster, re-attaches after a
restart, polls in a constant number of requests and keeps logs after the pod is gone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend
from mlyard.backends.kubernetes.backend import KubernetesBackend
from mlyard.models.backends import JobState
from tests.contracts.backend_contract import BackendContract, make_task, wait_terminal
from tests.integration.kubernetes.conftest import NAMESPACE, make_backend

pytestmark = pytest.mark.integration


def wait_running(backend: Backend, handle: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while backend.status([handle])[handle.job_id].state != JobState.RUNNING:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)


class TestKubernetesBackend(BackendContract):
    def test_a_new_backend_instance_reattaches_to_a_running_job(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path, kube: dict[str, str]
    ) -> None:
        task = make_task(store, tmp_path, "sleep", {"seconds": 2})
        handle = backend.submit(task)
        wait_running(backend, handle)
        restarted = make_backend(kube, store)  # what `mlyard runs resume` does
        try:
            assert restarted.status([handle])[handle.job_id].state == JobState.RUNNING
            assert restarted.submit(task).job_id == handle.job_id  # adopted, not created
            assert wait_terminal(restarted, handle).state == JobState.SUCCEEDED
        finally:
            restarted.close()

    def test_status_costs_the_same_requests_for_one_job_or_many(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        assert isinstance(backend, KubernetesBackend)
        handles = [
            backend.submit(make_task(store, tmp_path, "sleep", {"seconds": 1})) for _ in range(4)
        ]
        counts = []
        for asked in (handles[:1], handles):
            before = backend.api.requests
            backend.status(asked)
            counts.append(backend.api.requests - before)
        assert counts == [2, 2]  # one list of Jobs, one of Pods
        for handle in handles:
            assert wait_terminal(backend, handle).state == JobState.SUCCEEDED

    def test_logs_outlive_the_job_and_its_pod(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path, core_api: Any
    ) -> None:
        from kubernetes import client

        task = make_task(store, tmp_path, "add", {"a": 6, "b": 7})
        handle = backend.submit(task)
        assert wait_terminal(backend, handle).state == JobState.SUCCEEDED
        batch = client.BatchV1Api(core_api.api_client)
        batch.delete_namespaced_job(
            handle.job_id, NAMESPACE, body={"propagationPolicy": "Foreground"}
        )
        deadline = time.monotonic() + 30
        selector = f"mlyard.io/attempt-id={task.spec.attempt_id}"
        while core_api.list_namespaced_pod(NAMESPACE, label_selector=selector).items:
            assert time.monotonic() < deadline, "the pod was not deleted"
            time.sleep(0.2)
        assert any("adding 6 7" in line for line in backend.logs(handle))
        # A fresh backend (a later `mlyard runs logs`) reads the stored log too.
        assert isinstance(backend, KubernetesBackend)
        status = make_backend_status(backend, handle)
        assert status == JobState.SUCCEEDED

    def test_logs_follow_a_running_pod_to_its_end(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        task = make_task(store, tmp_path, "sleep", {"seconds": 1})
        handle = backend.submit(task)
        lines = list(backend.logs(handle, follow=True))
        assert any("sleeping" in line for line in lines)
        assert backend.status([handle])[handle.job_id].state == JobState.SUCCEEDED


def make_backend_status(backend: KubernetesBackend, handle: Any) -> JobState:
    """The state a backend that never saw the job reports once the Job is gone."""
    fresh = make_backend_from(backend)
    try:
        return fresh.status([handle])[handle.job_id].state
    finally:
        fresh.close()


def make_backend_from(backend: KubernetesBackend) -> Backend:
    from mlyard.backends.registry import create_backend

    return create_backend(backend.name, backend.settings, backend.store)
