"""The local backend honours or refuses every field of Resources, before anything runs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, Capability, SubmittedTask
from mlyard.backends.local.gpu_leases import (
    FileLeases,
    GpuLease,
    HeldLease,
    LeaseHolder,
    lease_file_of,
)
from mlyard.backends.local.processes import started_since_boot
from mlyard.backends.registry import create_backend
from mlyard.errors import ResourceError
from mlyard.models.backends import JobState
from mlyard.models.resources import Resources
from mlyard.platform.gpu_inventory import GpuDevice
from mlyard.settings import load_settings
from tests.contracts.backend_contract import make_task, wait_terminal

GIB = 1024**3


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def local(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    # No NVIDIA GPU here: the inventory is faked at the NVML boundary only.
    devices = [GpuDevice(i, f"GPU-{i}", "NVIDIA A10", 24 * GIB) for i in (0, 1)]
    monkeypatch.setattr("mlyard.backends.local.backend.discover_gpus", lambda: devices)
    settings = load_settings(backends={"local": {"type": "local", "cpus": 2, "memory": "8GB"}})
    backend = create_backend("local", settings, store)
    yield backend
    backend.close()


def with_resources(
    task: SubmittedTask, store: ArtifactStore, resources: Resources
) -> SubmittedTask:
    spec = task.spec.model_copy(update={"resources": resources})
    uri = store.write_document(spec.attempt_id, "task.json", spec.model_dump_json().encode())
    return SubmittedTask(spec=spec, task_uri=uri)


def test_every_gpu_field_and_the_time_limit_are_honoured(local: Backend) -> None:
    local.check_resources(Resources(cpus=2, memory="8GB", gpus=2, gpu_type="a10"))
    local.check_resources(Resources(gpus=0.5, gpu_type="A10", gpu_memory="12GB", time_limit=60))
    local.check_resources(Resources(gpus=2, launcher="torchrun"))  # torch is installed here
    local.check_resources(Resources(cpus=2, launcher="ray"))  # the step's ray.init() starts Ray


def test_what_the_machine_cannot_hold_is_refused_saying_what_it_has(local: Backend) -> None:
    with pytest.raises(ResourceError, match="this machine has 2"):
        local.check_resources(Resources(cpus=3))
    with pytest.raises(ResourceError, match=r"this machine has 8\.0GB"):
        local.check_resources(Resources(memory="9GB"))
    with pytest.raises(ResourceError, match="none of them is a 'a100'"):
        local.check_resources(Resources(gpus=1, gpu_type="a100"))
    with pytest.raises(ResourceError, match="more than the largest device holds"):
        local.check_resources(Resources(gpus=1, gpu_memory="40GB"))
    with pytest.raises(ResourceError, match="asks for 3 GPUs"):
        local.check_resources(Resources(gpus=3))


def test_several_nodes_are_refused_with_the_backends_that_have_them(local: Backend) -> None:
    with pytest.raises(ResourceError, match=r"'local' \(local\) cannot honour nodes=2") as refused:
        local.check_resources(Resources(nodes=2, launcher="torchrun"))
    assert "This machine is one node" in (refused.value.hint or "")


def test_local_runs_services_and_follows_logs(local: Backend) -> None:
    local.require(Capability.SERVICES, "serve a model")
    assert Capability.LOG_FOLLOW in local.capabilities


def test_a_step_past_its_time_limit_is_stopped_and_fails_naming_the_limit(
    local: Backend, store: ArtifactStore, tmp_path: Path
) -> None:
    task = make_task(store, tmp_path, "sleep", {"seconds": 60})
    task = with_resources(task, store, Resources(time_limit=1))
    status = wait_terminal(local, local.submit(task), timeout=30)
    assert status.state == JobState.FAILED
    assert status.reason == (
        "TIMEOUT: the step exceeded its time limit of 1s; raise Resources(time_limit=...)"
    )
    assert not status.infrastructure_failure  # the step's own doing: it uses up a retry


def test_a_step_within_its_time_limit_succeeds(
    local: Backend, store: ArtifactStore, tmp_path: Path
) -> None:
    task = with_resources(
        make_task(store, tmp_path, "add", {"a": 1, "b": 2}), store, Resources(time_limit=60)
    )
    assert wait_terminal(local, local.submit(task)).state == JobState.SUCCEEDED


def test_a_running_gpu_step_holds_its_lease_in_the_machines_lease_file(
    local: Backend, store: ArtifactStore, tmp_path: Path
) -> None:
    task = with_resources(
        make_task(store, tmp_path, "sleep", {"seconds": 30}), store, Resources(gpus=1)
    )
    cpu_task = make_task(store, tmp_path, "add", {"a": 1, "b": 2})
    assert wait_terminal(local, local.submit(cpu_task)).state == JobState.SUCCEEDED
    lease_file = lease_file_of(local.settings.home)
    assert not lease_file.exists()  # CPU-only steps never touch it
    handle = local.submit(task)
    while local.status([handle])[handle.job_id].state != JobState.RUNNING:
        time.sleep(0.02)
    leases = json.loads(lease_file.read_text())["leases"]
    assert list(leases) == [handle.job_id]
    # This orchestrator and the step's process: the lease outlives either alone.
    assert len(leases[handle.job_id]["holders"]) == 2
    local.cancel(handle)
    assert wait_terminal(local, handle).state == JobState.CANCELLED
    assert json.loads(lease_file.read_text())["leases"] == {}


def test_a_gpu_step_waiting_for_a_gpu_another_process_holds_names_that_process(
    local: Backend, store: ArtifactStore, tmp_path: Path
) -> None:
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # `mlyard serve --gpus 1` in another process holds both GPUs of the machine.
        holder = LeaseHolder(server.pid, started_since_boot(server.pid))
        with FileLeases(lease_file_of(local.settings.home)).open() as leases:
            for index in (0, 1):
                lease = GpuLease(f"serve-{index}", (index,), 1.0, None)
                leases[lease.lease_id] = HeldLease(lease, (holder,))
        task = make_task(store, tmp_path, "add", {"a": 1, "b": 2})
        handle = local.submit(with_resources(task, store, Resources(gpus=1)))
        status = local.status([handle])[handle.job_id]
        assert status.state == JobState.PENDING
        assert status.reason == (
            f"waiting for 1 CPU, 1 GPU (GPUs also leased by other mlyard processes: pid "
            f"{server.pid})"
        )
    finally:
        server.kill()
        server.wait()
    # Its holder gone, the lease is reclaimed and the step runs.
    assert wait_terminal(local, handle).state == JobState.SUCCEEDED
