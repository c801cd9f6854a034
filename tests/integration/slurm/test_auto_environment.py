"""env = "auto": mlyard builds a venv on the cluster once, layered over the site's Python, and
every later run (also from a restarted orchestrator) reuses it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.models.backends import JobState
from mlyard.models.tasks import TaskResult
from tests.integration.slurm.conftest import BackendFactory, make_task, wait_for_end

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def run_prefix(make_backend: BackendFactory, store: ArtifactStore, workdir: str) -> str:
    # The site's Python (the test venv, as `module load python` would give) plus a requirement
    # it already satisfies: layering means nothing is downloaded.
    backend = make_backend(env="auto", requirements=["numpy"], remote_workdir=workdir)
    task = make_task(store, "interpreter_prefix", {})
    status = wait_for_end(backend, backend.submit(task), timeout=120)
    assert status.state is JobState.SUCCEEDED, status
    document = store.read_document(task.spec.attempt_id, "result.json")
    assert document is not None
    output = TaskResult.model_validate_json(document).outputs["output"]
    backend.close()
    return str(json.loads(store.get_bytes(output.digest)))


def test_the_environment_is_created_once_and_reused(
    make_backend: BackendFactory, store: ArtifactStore, cluster: dict[str, str]
) -> None:
    workdir = f"~/mlyard-auto-{uuid.uuid4().hex[:8]}"
    first = run_prefix(make_backend, store, workdir)
    assert f"/{workdir.removeprefix('~/')}/envs/" in first
    ready = Path(first) / ".mlyard-ready"
    created_at = ready.stat().st_mtime

    assert run_prefix(make_backend, store, workdir) == first  # a new orchestrator reuses it
    assert ready.stat().st_mtime == created_at
    assert cluster["SSH_HOME"] in first
