"""The contract every backend passes (docs/adding-a-backend.md). A backend's test module
subclasses ``BackendContract`` and provides the ``backend`` and ``store`` fixtures.

The tasks are real: a tiny project is packaged into the artifact store and each job runs
``python -m mlyard.runtime`` on it, so a backend passes only if the runtime protocol works
end to end through it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, SubmittedTask
from mlyard.models.backends import JobHandle, JobState, JobStatus
from mlyard.models.resources import Resources
from mlyard.models.tasks import CodePackage, TaskResult, TaskSpec
from mlyard.orchestration.code_package import build_code_package

PROJECT = """
import time
from mlyard import step

@step
def add(a: int, b: int) -> int:
    print("adding", a, b, flush=True)
    return a + b

@step
def sleep(seconds: float) -> None:
    print("sleeping", flush=True)
    time.sleep(seconds)

@step
def fail(message: str) -> None:
    raise ValueError(message)
"""


def make_task(
    store: ArtifactStore, tmp_path: Path, function: str, params: dict[str, object]
) -> SubmittedTask:
    project = tmp_path / "contract_project"
    project.mkdir(exist_ok=True)
    (project / "contract_steps.py").write_text(PROJECT)
    digest = store.put_bytes(build_code_package(project))
    attempt_id = f"contract-{uuid.uuid4().hex[:10]}.1.1"
    spec = TaskSpec(
        run_id="contract",
        step_run_id=attempt_id.rsplit(".", 1)[0],
        attempt_id=attempt_id,
        attempt=1,
        step_name=function,
        function=f"contract_steps:{function}",
        code=CodePackage(digest=digest, module="contract_steps"),
        params=params,
        output_names=["output"] if function == "add" else [],
        resources=Resources(cpus=1),
        artifact_store=store.url,
    )
    uri = store.write_document(attempt_id, "task.json", spec.model_dump_json().encode())
    return SubmittedTask(spec=spec, task_uri=uri)


def wait_terminal(backend: Backend, handle: JobHandle, timeout: float = 120) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = backend.status([handle])[handle.job_id]
        if status.state.is_terminal:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {handle.job_id} did not end within {timeout} s")


def result_of(store: ArtifactStore, task: SubmittedTask) -> TaskResult:
    raw = store.read_document(task.spec.attempt_id, "result.json")
    assert raw is not None, "a terminal job must have written its result"
    return TaskResult.model_validate_json(raw)


class BackendContract:
    """Behaviour every backend must show; subclasses provide ``backend`` and ``store``."""

    def test_a_task_runs_and_its_result_is_readable(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        task = make_task(store, tmp_path, "add", {"a": 2, "b": 3})
        handle = backend.submit(task)
        assert handle.backend == backend.name
        status = wait_terminal(backend, handle)
        assert status.state == JobState.SUCCEEDED
        result = result_of(store, task)
        assert result.status == "succeeded"
        assert "output" in result.outputs

    def test_submit_is_idempotent_per_attempt(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        task = make_task(store, tmp_path, "add", {"a": 1, "b": 1})
        first = backend.submit(task)
        second = backend.submit(task)
        assert first.job_id == second.job_id
        wait_terminal(backend, first)

    def test_a_failing_step_reports_its_error(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        task = make_task(store, tmp_path, "fail", {"message": "gate not met"})
        status = wait_terminal(backend, backend.submit(task))
        assert status.state == JobState.FAILED
        result = result_of(store, task)
        assert result.error is not None and result.error.message == "gate not met"

    def test_status_answers_for_many_jobs_at_once(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        tasks = [make_task(store, tmp_path, "add", {"a": i, "b": i}) for i in range(3)]
        handles = [backend.submit(task) for task in tasks]
        statuses = backend.status(handles)
        assert set(statuses) == {h.job_id for h in handles}
        for handle in handles:
            assert wait_terminal(backend, handle).state == JobState.SUCCEEDED

    def test_cancel_stops_a_running_job_and_is_idempotent(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        task = make_task(store, tmp_path, "sleep", {"seconds": 120})
        handle = backend.submit(task)
        deadline = time.monotonic() + 60
        while backend.status([handle])[handle.job_id].state != JobState.RUNNING:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        backend.cancel(handle)
        assert wait_terminal(backend, handle, timeout=60).state == JobState.CANCELLED
        backend.cancel(handle)

    def test_logs_show_what_the_step_printed(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        task = make_task(store, tmp_path, "add", {"a": 4, "b": 5})
        handle = backend.submit(task)
        wait_terminal(backend, handle)
        assert any("adding 4 5" in line for line in backend.logs(handle))

    def test_impossible_requests_are_refused_before_submission(self, backend: Backend) -> None:
        from mlyard.errors import ResourceError

        with pytest.raises(ResourceError):
            backend.check_resources(Resources(cpus=100_000))
