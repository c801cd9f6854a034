"""Each bad input the fake cluster can produce gets a clear MlyardError naming the problem and
the fix, and leaves nothing half-created."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, SubmittedTask
from mlyard.errors import BackendError, ConfigError, ResourceError
from mlyard.models.backends import JobState
from mlyard.models.resources import Resources
from tests.contracts.backend_contract import make_task, wait_terminal
from tests.integration.kubernetes.conftest import NAMESPACE, make_backend, write_kubeconfig

pytestmark = pytest.mark.integration


def jobs_of(core_api: Any, attempt_id: str) -> list[Any]:
    from kubernetes import client

    batch = client.BatchV1Api(core_api.api_client)
    selector = f"mlyard.io/attempt-id={attempt_id}"
    return list(batch.list_namespaced_job(NAMESPACE, label_selector=selector).items)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_missing_kubeconfig_is_refused_before_the_run(
    kube: dict[str, str], store: ArtifactStore, tmp_path: Path
) -> None:
    backend = make_backend(kube, store, kubeconfig=str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError) as caught:
        backend.check_resources(Resources())
    assert "absent.yaml does not exist" in str(caught.value) and "KUBECONFIG" in str(caught.value)


def test_an_unknown_context_lists_the_contexts(kube: dict[str, str], store: ArtifactStore) -> None:
    backend = make_backend(kube, store, context="production")
    with pytest.raises(ConfigError) as caught:
        backend.check_resources(Resources())
    assert "no context 'production'" in str(caught.value) and "fake" in str(caught.value)


def test_an_unreachable_api_server_is_named(
    kube: dict[str, str], store: ArtifactStore, tmp_path: Path
) -> None:
    server = f"https://127.0.0.1:{closed_port()}"
    config = write_kubeconfig(tmp_path / "kubeconfig", server, kube["KUBECONFIG"])
    backend = make_backend(kube, store, kubeconfig=str(config))
    with pytest.raises(BackendError) as caught:
        backend.check_resources(Resources())
    assert server in str(caught.value) and "cannot be reached" in str(caught.value)


def test_rejected_credentials_are_a_401_with_the_fix(
    kube: dict[str, str], store: ArtifactStore, tmp_path: Path
) -> None:
    config = yaml.safe_load(Path(kube["KUBECONFIG"]).read_text())
    for user in config["users"]:
        user["user"] = {"token": "not-a-valid-token"}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    backend = make_backend(kube, store, kubeconfig=str(path))
    with pytest.raises(BackendError) as caught:
        backend.check_resources(Resources())
    assert "401" in str(caught.value) and "credentials" in str(caught.value)


def test_forbidden_names_verb_and_resource_and_prints_the_role_rule(
    kube: dict[str, str],
    store: ArtifactStore,
    tmp_path: Path,
    core_api: Any,
    credentials_secret: str,
) -> None:
    backend = make_backend(kube, store, context="fake-restricted")
    backend.check_resources(Resources())  # what it may not read is skipped, not refused
    task = make_task(store, tmp_path, "add", {"a": 1, "b": 2})
    with pytest.raises(BackendError) as caught:
        backend.submit(task)
    text = str(caught.value)
    assert "forbids mlyard to create jobs" in text and "(403)" in text
    assert 'apiGroups: ["batch"]' in text and 'resources: ["jobs"]' in text
    assert jobs_of(core_api, task.spec.attempt_id) == []


def test_a_missing_namespace_is_refused_before_the_run(
    kube: dict[str, str], store: ArtifactStore
) -> None:
    backend = make_backend(kube, store, namespace="nowhere")
    with pytest.raises(ConfigError) as caught:
        backend.check_resources(Resources())
    assert "namespace 'nowhere' does not exist" in str(caught.value)
    assert "kubectl create namespace nowhere" in str(caught.value)


def test_a_missing_secret_is_refused_before_the_run(
    kube: dict[str, str], store: ArtifactStore
) -> None:
    backend = make_backend(kube, store, artifact_credentials_secret="no-such-secret")
    with pytest.raises(ConfigError) as caught:
        backend.check_resources(Resources())
    assert "'no-such-secret'" in str(caught.value)
    assert "create secret generic no-such-secret" in str(caught.value)


def test_an_image_that_cannot_be_pulled_fails_naming_it_and_the_job_goes(
    kube: dict[str, str],
    store: ArtifactStore,
    tmp_path: Path,
    core_api: Any,
    credentials_secret: str,
) -> None:
    image = "registry.invalid/mlyard:1"
    backend = make_backend(kube, store, image=image)
    task = make_task(store, tmp_path, "add", {"a": 1, "b": 2})
    status = wait_terminal(backend, backend.submit(task), timeout=60)
    assert status.state == JobState.FAILED and not status.infrastructure_failure
    assert not status.retryable, "another attempt would fail to pull the same image"
    assert image in (status.reason or "") and "image_pull_secrets" in (status.reason or "")
    deadline = time.monotonic() + 30
    while jobs_of(core_api, task.spec.attempt_id):
        assert time.monotonic() < deadline, "the Job of a failed pull was left behind"
        time.sleep(0.2)


def gpu_task(store: ArtifactStore, tmp_path: Path, params: dict[str, object]) -> SubmittedTask:
    """A sleeping step that asks for the whole GPU."""
    task = make_task(store, tmp_path, "sleep", params)
    spec = task.spec.model_copy(update={"resources": Resources(gpus=1)})
    uri = store.write_document(spec.attempt_id, "task.json", spec.model_dump_json().encode())
    return SubmittedTask(spec=spec, task_uri=uri)


def test_a_pod_that_stays_unschedulable_is_queued_then_fails(
    kube: dict[str, str],
    store: ArtifactStore,
    tmp_path: Path,
    core_api: Any,
    credentials_secret: str,
) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gpu-node-test", "labels": {"pool": "gpu-test"}},
        "status": {"capacity": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}},
    }
    core_api.create_node(node)
    try:
        backend: Backend = make_backend(
            kube, store, node_selector={"pool": "gpu-test"}, schedule_timeout="3s"
        )
        holder = backend.submit(gpu_task(store, tmp_path, {"seconds": 30}))
        deadline = time.monotonic() + 60
        while backend.status([holder])[holder.job_id].state != JobState.RUNNING:
            assert time.monotonic() < deadline, "the first GPU step never started"
            time.sleep(0.1)
        waiting = backend.submit(gpu_task(store, tmp_path, {"seconds": 1}))
        seen_pending = None
        deadline = time.monotonic() + 60
        while True:
            status = backend.status([waiting])[waiting.job_id]
            if status.state == JobState.PENDING and "Insufficient" in (status.reason or ""):
                seen_pending = status.reason
            if status.state.is_terminal:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert seen_pending is not None and "nvidia.com/gpu" in seen_pending
        assert status.state == JobState.FAILED and "schedule_timeout" in (status.reason or "")
        backend.cancel(holder)
    finally:
        core_api.delete_node("gpu-node-test")


def test_requests_the_cluster_cannot_express_or_hold_are_refused(
    kube: dict[str, str], store: ArtifactStore, credentials_secret: str
) -> None:
    exclusive = make_backend(kube, store)
    with pytest.raises(ResourceError) as fraction:
        exclusive.check_resources(Resources(gpus=0.5))
    assert "gpu_sharing" in str(fraction.value) and "time-slicing" in str(fraction.value)
    with pytest.raises(ResourceError) as product:
        exclusive.check_resources(Resources(gpus=1, gpu_type="h100"))
    assert "h100" in str(product.value) and "The nodes have" in str(product.value)
    mig = make_backend(kube, store, gpu_sharing="mig", mig_profiles=["1g.10gb", "7g.80gb"])
    with pytest.raises(ResourceError) as too_large:
        mig.check_resources(Resources(gpus=0.5, gpu_memory="100GB"))
    assert "7g.80gb" in str(too_large.value)


def test_a_local_artifact_store_is_refused_with_the_fix(
    kube: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_backend(kube, ArtifactStore(str(tmp_path / "artifacts")))
    assert "s3://" in str(caught.value)
