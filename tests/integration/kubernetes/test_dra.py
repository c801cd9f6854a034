"""With gpu_sharing = 'dra' the step's ResourceClaimTemplate is created beside its Job, owned by
it, and goes when the Job goes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import SubmittedTask
from mlyard.models.resources import Resources
from tests.contracts.backend_contract import make_task
from tests.integration.kubernetes.conftest import NAMESPACE, make_backend

pytestmark = pytest.mark.integration


def templates(core_api: Any, attempt_id: str) -> list[dict[str, Any]]:
    from kubernetes import client

    custom = client.CustomObjectsApi(core_api.api_client)
    answer = custom.list_namespaced_custom_object(
        "resource.k8s.io",
        "v1",
        NAMESPACE,
        "resourceclaimtemplates",
        label_selector=f"mlyard.io/attempt-id={attempt_id}",
    )
    items: list[dict[str, Any]] = answer["items"]
    return items


def test_the_claim_template_is_owned_by_the_job_and_deleted_with_it(
    kube: dict[str, str],
    store: ArtifactStore,
    tmp_path: Path,
    core_api: Any,
    credentials_secret: str,
) -> None:
    from kubernetes import client

    backend = make_backend(kube, store, gpu_sharing="dra")
    task = make_task(store, tmp_path, "sleep", {"seconds": 60})
    spec = task.spec.model_copy(update={"resources": Resources(gpus=1, gpu_memory="40GiB")})
    uri = store.write_document(spec.attempt_id, "task.json", spec.model_dump_json().encode())
    handle = backend.submit(SubmittedTask(spec=spec, task_uri=uri))
    job = client.BatchV1Api(core_api.api_client).read_namespaced_job(handle.job_id, NAMESPACE)
    [template] = templates(core_api, spec.attempt_id)
    [owner] = template["metadata"]["ownerReferences"]
    assert owner["kind"] == "Job" and owner["uid"] == job.metadata.uid
    claim = template["spec"]["spec"]["devices"]["requests"][0]["exactly"]
    assert claim["deviceClassName"] == "gpu.nvidia.com"
    backend.cancel(handle)
    deadline = time.monotonic() + 30
    while templates(core_api, spec.attempt_id):
        assert time.monotonic() < deadline, "the claim template outlived its Job"
        time.sleep(0.2)
    backend.close()
