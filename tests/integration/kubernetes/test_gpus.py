"""GPU requests on fake GPU nodes: the short gpu_type finds the node's full product name, GPU
steps tolerate the GPU taint, and a time-sliced fraction takes its slices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import SubmittedTask
from mlyard.errors import ResourceError
from mlyard.models.backends import JobState
from mlyard.models.resources import Resources
from tests.contracts.backend_contract import make_task, wait_terminal
from tests.integration.kubernetes.conftest import NAMESPACE, make_backend

pytestmark = pytest.mark.integration
NODE = "gpu-a100-test"


@pytest.fixture
def gpu_node(core_api: Any) -> Iterator[str]:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE,
            "labels": {
                "pool": "a100-test",
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                "nvidia.com/gpu.memory": "81920",
            },
        },
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {
                "cpu": "4",
                "memory": "16Gi",
                "nvidia.com/gpu": "2",
                "nvidia.com/gpu.shared": "8",
            }
        },
    }
    core_api.create_node(node)
    yield NODE
    core_api.delete_node(NODE)


def gpu_task(store: ArtifactStore, tmp_path: Path, resources: Resources) -> SubmittedTask:
    task = make_task(store, tmp_path, "add", {"a": 1, "b": 2})
    spec = task.spec.model_copy(update={"resources": resources})
    uri = store.write_document(spec.attempt_id, "task.json", spec.model_dump_json().encode())
    return SubmittedTask(spec=spec, task_uri=uri)


def pod_of(core_api: Any, attempt_id: str) -> Any:
    selector = f"mlyard.io/attempt-id={attempt_id}"
    [pod] = core_api.list_namespaced_pod(NAMESPACE, label_selector=selector).items
    return pod


def test_a_short_gpu_type_runs_on_the_tainted_node_with_that_product(
    kube: dict[str, str],
    store: ArtifactStore,
    tmp_path: Path,
    core_api: Any,
    credentials_secret: str,
    gpu_node: str,
) -> None:
    backend = make_backend(kube, store)
    resources = Resources(gpus=1, gpu_type="a100", gpu_memory="40GB")
    backend.check_resources(resources)  # the inventory has the product and the memory
    task = gpu_task(store, tmp_path, resources)
    status = wait_terminal(backend, backend.submit(task))
    assert status.state == JobState.SUCCEEDED, status.reason
    pod = pod_of(core_api, task.spec.attempt_id)
    assert pod.spec.node_name == gpu_node
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    with pytest.raises(ResourceError, match="The nodes have"):
        backend.check_resources(Resources(gpus=4))  # no node has four
    backend.close()


def test_a_time_sliced_fraction_takes_its_slices(
    kube: dict[str, str],
    store: ArtifactStore,
    tmp_path: Path,
    core_api: Any,
    credentials_secret: str,
    gpu_node: str,
) -> None:
    backend = make_backend(
        kube,
        store,
        gpu_sharing="time-slicing",
        shared_gpu_resource="nvidia.com/gpu.shared",
        replicas_per_gpu=4,
    )
    resources = Resources(gpus=0.5)
    backend.check_resources(resources)
    task = gpu_task(store, tmp_path, resources)
    status = wait_terminal(backend, backend.submit(task))
    assert status.state == JobState.SUCCEEDED, status.reason
    pod = pod_of(core_api, task.spec.attempt_id)
    assert pod.spec.node_name == gpu_node
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu.shared"] == "2"
    backend.close()
