"""The s3 data route over SSH: the job reads and writes the S3 artifact store itself, with
credentials passed through sbatch's environment and never written anywhere on the cluster."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.slurm.backend import SlurmBackend
from mlyard.models.backends import JobState
from mlyard.models.tasks import TaskResult
from mlyard.settings import BackendProfile, Settings, StorageSettings
from tests.integration.slurm.conftest import make_task, profile_fields, wait_for_end

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def test_a_task_runs_against_the_s3_store_without_leaving_credentials_behind(
    cluster: dict[str, str],
    services: Callable[[str], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    s3 = services("seaweedfs")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(key, s3[key])
    url = f"s3://{s3['S3_BUCKET']}/slurm-{uuid.uuid4().hex[:8]}"
    store = ArtifactStore(url, endpoint_url=s3["S3_ENDPOINT_URL"])
    workdir = f"~/mlyard-s3-{uuid.uuid4().hex[:8]}"
    profile = BackendProfile.model_validate(
        {"type": "slurm", **profile_fields(cluster, data_route="s3", remote_workdir=workdir)}
    )
    settings = Settings(
        home=tmp_path / "home",
        storage=StorageSettings(artifacts=url, endpoint_url=s3["S3_ENDPOINT_URL"]),
        backends={"hpc": profile},
    )
    backend = SlurmBackend("hpc", profile, settings, store)
    try:
        task = make_task(store, "count_lines", {"lines": 2})
        handle = backend.submit(task)
        status = wait_for_end(backend, handle)
        assert status.state is JobState.SUCCEEDED, (status, list(backend.logs(handle)))
        assert "--endpoint-url" in (status.submit_script or "")
        document = store.read_document(task.spec.attempt_id, "result.json")
        assert document is not None
        assert store.exists(TaskResult.model_validate_json(document).outputs["output"].digest)

        secret = s3["AWS_SECRET_ACCESS_KEY"]
        assert secret not in (status.submit_script or "")
        remote = Path(cluster["SSH_HOME"]) / workdir.removeprefix("~/")
        found = subprocess.run(
            ["grep", "-rl", secret, str(remote)], capture_output=True, text=True, check=False
        )
        assert found.stdout == "", f"credentials written to {found.stdout}"
    finally:
        backend.close()
