"""A two-node torchrun step is an Indexed Job whose pods meet at pod 0 through the headless
Service (the fake's cluster DNS), every rank runs the step and rank 0 stores its result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, SubmittedTask
from mlyard.models.backends import JobState
from mlyard.models.resources import Resources
from tests.contracts.backend_contract import make_task, result_of, wait_terminal
from tests.integration.kubernetes.conftest import NAMESPACE

pytestmark = pytest.mark.integration


def test_a_two_node_torchrun_step_runs_as_an_indexed_job(
    backend: Backend, store: ArtifactStore, tmp_path: Path, core_api: Any
) -> None:
    task = make_task(store, tmp_path, "add", {"a": 20, "b": 22})
    resources = Resources(cpus=0.5, nodes=2, launcher="torchrun")
    backend.check_resources(resources)
    spec = task.spec.model_copy(update={"resources": resources})
    uri = store.write_document(spec.attempt_id, "task.json", spec.model_dump_json().encode())
    multi = SubmittedTask(spec=spec, task_uri=uri)
    handle = backend.submit(multi)
    service = core_api.read_namespaced_service(handle.job_id, NAMESPACE)
    assert service.spec.cluster_ip == "None"
    status = wait_terminal(backend, handle, timeout=240)
    assert status.state == JobState.SUCCEEDED, status.reason
    selector = f"mlyard.io/attempt-id={spec.attempt_id}"
    pods = core_api.list_namespaced_pod(NAMESPACE, label_selector=selector).items
    assert len(pods) == 2
    result = result_of(store, multi)
    assert result.status == "succeeded" and "output" in result.outputs
    assert any("adding 20 22" in line for line in backend.logs(handle))
