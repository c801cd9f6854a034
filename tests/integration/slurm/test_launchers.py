"""Multi-node launchers on the real one-node cluster: a Ray cluster booted inside the allocation
with the step as its driver, and torchrun's rendezvous for distributed PyTorch."""

from __future__ import annotations

import subprocess
import time

import pytest

from mlyard.artifacts.materializers import load_value
from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.slurm.backend import SlurmBackend
from mlyard.models.backends import JobHandle, JobState, JobStatus
from mlyard.models.resources import Resources
from mlyard.models.tasks import TaskResult
from tests.integration.slurm.conftest import BackendFactory, make_task, wait_for_end

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def _assert_succeeded(backend: SlurmBackend, handle: JobHandle, status: JobStatus) -> None:
    if status.state is not JobState.SUCCEEDED:
        pytest.fail(f"{status.reason}; the job log:\n" + "\n".join(backend.logs(handle)))


def _output(store: ArtifactStore, attempt_id: str) -> object:
    document = store.read_document(attempt_id, "result.json")
    assert document is not None
    result = TaskResult.model_validate_json(document)
    assert result.status == "succeeded", result.error
    return load_value(store, result.outputs["output"])


def _ray_processes() -> list[str]:
    done = subprocess.run(
        ["pgrep", "-af", "gcs_server|raylet"], capture_output=True, text=True, check=False
    )
    return [line for line in done.stdout.splitlines() if "pgrep" not in line]


def test_the_ray_launcher_runs_the_step_as_driver_of_a_cluster_it_stops_after(
    make_backend: BackendFactory, store: ArtifactStore
) -> None:
    assert not _ray_processes(), "a Ray cluster is already running on this machine"
    backend = make_backend()
    resources = Resources(cpus=2, nodes=1, launcher="ray", time_limit="5m")
    task = make_task(store, "ray_squares", {"count": 20}, resources)
    handle = backend.submit(task)
    status = wait_for_end(backend, handle, timeout=240)
    _assert_succeeded(backend, handle, status)

    output = _output(store, task.spec.attempt_id)
    assert isinstance(output, dict)
    assert output["total"] == sum(value * value for value in range(20))
    assert output["nodes"] == 1
    # The step attached to the cluster the launcher started, not a private one of its own.
    assert output["gcs_address"] == output["address"]
    assert any("Ray cluster of 1 node(s)" in line for line in backend.logs(handle))
    deadline = time.monotonic() + 30
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes(), "the launcher left Ray processes behind"


def test_the_torchrun_launcher_gives_the_step_a_process_group(
    make_backend: BackendFactory, store: ArtifactStore
) -> None:
    backend = make_backend()
    resources = Resources(nodes=1, launcher="torchrun", time_limit="5m")
    task = make_task(store, "torch_all_reduce", {}, resources)
    handle = backend.submit(task)
    status = wait_for_end(backend, handle, timeout=180)
    _assert_succeeded(backend, handle, status)
    assert status.submit_script and "torch.distributed.run" in status.submit_script

    output = _output(store, task.spec.attempt_id)
    assert output == {
        "rank": 0,
        "world_size": 1,
        "sum": 1.0,
        "master_addr": output["master_addr"],  # type: ignore[index]
        "launcher": "torchrun",
    }
