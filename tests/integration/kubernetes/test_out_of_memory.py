"""A step over its memory limit is OOMKilled by the (fake) kubelet: FAILED, naming the limit and
how to raise it, not an infrastructure failure."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, SubmittedTask
from mlyard.models.backends import JobState
from mlyard.models.resources import Resources
from mlyard.models.tasks import CodePackage, TaskSpec
from mlyard.orchestration.code_package import build_code_package
from tests.contracts.backend_contract import wait_terminal

pytestmark = pytest.mark.integration

PROJECT = """
import time
from mlyard import step

@step
def hog(megabytes: int) -> None:
    block = bytearray(megabytes * 1024 * 1024)
    for index in range(0, len(block), 4096):
        block[index] = 1
    time.sleep(30)
"""


def hog_task(store: ArtifactStore, tmp_path: Path, megabytes: int, limit: str) -> SubmittedTask:
    project = tmp_path / "hog_project"
    project.mkdir()
    (project / "hog_steps.py").write_text(PROJECT)
    digest = store.put_bytes(build_code_package(project))
    attempt_id = f"oom-{uuid.uuid4().hex[:10]}.1.1"
    spec = TaskSpec(
        run_id="oom",
        step_run_id=attempt_id.rsplit(".", 1)[0],
        attempt_id=attempt_id,
        attempt=1,
        step_name="hog",
        function="hog_steps:hog",
        code=CodePackage(digest=digest, module="hog_steps"),
        params={"megabytes": megabytes},
        output_names=[],
        resources=Resources(cpus=0.5, memory=limit),
        artifact_store=store.url,
    )
    uri = store.write_document(attempt_id, "task.json", spec.model_dump_json().encode())
    return SubmittedTask(spec=spec, task_uri=uri)


def test_a_step_over_its_memory_limit_fails_naming_the_limit(
    backend: Backend, store: ArtifactStore, tmp_path: Path
) -> None:
    task = hog_task(store, tmp_path, megabytes=800, limit="400MiB")
    status = wait_terminal(backend, backend.submit(task), timeout=240)
    assert status.state == JobState.FAILED and not status.infrastructure_failure
    assert "OOMKilled" in (status.reason or "") and "400Mi" in (status.reason or "")
    assert "Resources(memory=" in (status.reason or "")
