"""mlyard on the login node itself: sbatch and squeue run locally, without SSH, and the job
reads and writes the orchestrator's artifact store on the shared file system."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.slurm.ssh import LocalShell
from mlyard.models.backends import JobState
from mlyard.models.resources import Resources
from mlyard.models.tasks import TaskResult
from tests.integration.slurm.conftest import BackendFactory, make_task, wait_for_end

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def test_login_node_local_submits_without_ssh(
    make_backend: BackendFactory, store: ArtifactStore, tmp_path: Path
) -> None:
    backend = make_backend(
        login_node_local=True, data_route="s3", remote_workdir=str(tmp_path / "workdir")
    )
    assert isinstance(backend.shell, LocalShell)
    task = make_task(store, "nap", {"seconds": 0.5})
    handle = backend.submit(task)
    status = wait_for_end(backend, handle)
    assert status.state is JobState.SUCCEEDED, status
    assert handle.data["route"] == "s3"
    document = store.read_document(task.spec.attempt_id, "result.json")
    assert document is not None
    assert TaskResult.model_validate_json(document).status == "succeeded"


def test_a_job_over_its_memory_is_killed_naming_the_request(
    make_backend: BackendFactory, store: ArtifactStore, tmp_path: Path
) -> None:
    backend = make_backend(
        login_node_local=True, data_route="s3", remote_workdir=str(tmp_path / "workdir")
    )
    task = make_task(
        store, "hog_memory", {"megabytes": 600, "seconds": 20}, Resources(memory="200MiB")
    )
    status = wait_for_end(backend, backend.submit(task), timeout=90)
    assert status.state is JobState.FAILED, status
    # With cgroups SLURM says OUT_OF_MEMORY (unit-tested); this cgroup-less test cluster's
    # memory enforcement kills the job with SIGKILL, and the reason still names the request.
    assert "memory limit of 200M" in (status.reason or ""), status.reason
