"""A real one-node SLURM cluster and a real sshd, started by scripts/services, plus helpers that
submit real runtime tasks (a code package of plain functions) to it."""

from __future__ import annotations

import io
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import SubmittedTask
from mlyard.backends.slurm.backend import SlurmBackend
from mlyard.models.backends import JobHandle, JobStatus
from mlyard.models.resources import Resources
from mlyard.models.tasks import CodePackage, TaskSpec
from mlyard.settings import BackendProfile, CostRates, Settings

PROJECT = Path(__file__).parent / "project"
#: The interpreter running the tests has mlyard; sshd.sh lets the test user run it.
SETUP = [f"source {Path(sys.prefix) / 'bin' / 'activate'}"]

BackendFactory = Callable[..., SlurmBackend]


@pytest.fixture(scope="session")
def cluster(services: Callable[[str], dict[str, str]]) -> dict[str, str]:
    """SLURM and sshd, once per session: SSH_* and SLURM_* variables."""
    slurm = services("slurm")
    sshd = services("sshd")
    return {**slurm, **sshd}


def profile_fields(cluster: dict[str, str], **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "host": cluster["SSH_HOST"],
        "port": int(cluster["SSH_PORT"]),
        "user": cluster["SSH_USER"],
        "identity_file": cluster["SSH_IDENTITY_FILE"],
        "known_hosts": cluster["SSH_KNOWN_HOSTS"],
        "use_agent": False,
        "partition": cluster["SLURM_PARTITION"],
        "setup": SETUP,
        "python": "python",
        "data_route": "sftp",
        "remote_workdir": "~/mlyard-tests",
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def make_backend(
    cluster: dict[str, str], store: ArtifactStore, tmp_path: Path
) -> Iterator[BackendFactory]:
    """``make_backend(**profile overrides)``: a SlurmBackend on the test cluster, closed after."""
    created: list[SlurmBackend] = []

    def make(**overrides: Any) -> SlurmBackend:
        profile = BackendProfile(
            type="slurm",
            costs=CostRates(cpu_hour=2.0, memory_gb_hour=0.5),
            **profile_fields(cluster, **overrides),
        )
        settings = Settings(home=tmp_path / "home", backends={"hpc": profile})
        backend = SlurmBackend("hpc", profile, settings, store)
        created.append(backend)
        return backend

    yield make
    for backend in created:
        backend.close()


def code_package(store: ArtifactStore) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(PROJECT / "jobs_for_tests.py", "jobs_for_tests.py")
    return store.put_bytes(buffer.getvalue())


def make_task(
    store: ArtifactStore,
    function: str,
    params: dict[str, Any],
    resources: Resources | None = None,
) -> SubmittedTask:
    """A real runtime task calling ``jobs_for_tests.<function>(**params)``."""
    attempt_id = f"t{uuid.uuid4().hex[:12]}.1.1"
    spec = TaskSpec(
        run_id="r" + attempt_id[:8],
        step_run_id=attempt_id[:-2],
        attempt_id=attempt_id,
        attempt=1,
        step_name=function,
        function=f"jobs_for_tests:{function}",
        code=CodePackage(digest=code_package(store), module="jobs_for_tests"),
        params=params,
        resources=resources or Resources(time_limit="5m"),
        artifact_store=store.url,
    )
    uri = store.write_document(attempt_id, "task.json", spec.model_dump_json().encode())
    return SubmittedTask(spec=spec, task_uri=uri)


def wait_until_state(
    backend: SlurmBackend,
    handle: JobHandle,
    done: Callable[[JobStatus], bool],
    timeout: float = 60.0,
) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = backend.status([handle])[handle.job_id]
        if done(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {handle.job_id} stayed {status}")
        time.sleep(0.3)


def wait_for_end(backend: SlurmBackend, handle: JobHandle, timeout: float = 60.0) -> JobStatus:
    return wait_until_state(backend, handle, lambda s: s.state.is_terminal, timeout)
