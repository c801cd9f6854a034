"""Submit, status, logs, cancel and failures of real jobs on the test cluster, over SSH."""

from __future__ import annotations

import subprocess

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.errors import BackendError
from mlyard.models.backends import JobState
from mlyard.models.resources import Resources
from mlyard.models.tasks import TaskResult
from tests.integration.slurm.conftest import (
    BackendFactory,
    make_task,
    wait_for_end,
    wait_until_state,
)

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def test_a_task_runs_and_its_result_comes_back_by_sftp(
    make_backend: BackendFactory, store: ArtifactStore
) -> None:
    backend = make_backend()
    task = make_task(store, "count_lines", {"lines": 3})
    handle = backend.submit(task)
    assert handle.job_id.isdigit()
    assert backend.submit(task).job_id == handle.job_id  # idempotent per attempt

    status = wait_for_end(backend, handle)
    assert status.state is JobState.SUCCEEDED, status
    assert status.exit_code == 0
    assert status.submit_script and "#SBATCH --partition=" in status.submit_script
    assert status.usage is not None and status.usage.queue_seconds is not None
    # The result and its outputs are in the orchestrator's own store before the terminal state.
    document = store.read_document(task.spec.attempt_id, "result.json")
    assert document is not None
    result = TaskResult.model_validate_json(document)
    assert result.status == "succeeded"
    assert store.exists(result.outputs["output"].digest)
    lines = list(backend.logs(handle))
    assert "line 2" in lines
    # One connection for every command of this backend.
    assert backend.shell.connections_opened == 1  # type: ignore[attr-defined]


def test_a_new_backend_reattaches_by_job_id_without_submitting_again(
    make_backend: BackendFactory, store: ArtifactStore
) -> None:
    first = make_backend()
    task = make_task(store, "nap", {"seconds": 2})
    handle = first.submit(task)
    first.close()  # the orchestrator dies

    restarted = make_backend()
    assert restarted.submit(task).job_id == handle.job_id
    status = wait_for_end(restarted, handle)
    assert status.state is JobState.SUCCEEDED
    assert status.submit_script and "mlyard.runtime" in status.submit_script


def test_follow_logs_until_the_job_ends(make_backend: BackendFactory, store: ArtifactStore) -> None:
    backend = make_backend()
    handle = backend.submit(make_task(store, "count_lines", {"lines": 20}))
    lines = list(backend.logs(handle, follow=True))
    assert [line for line in lines if line.startswith("line ")] == [f"line {n}" for n in range(20)]


def test_cancel_stops_a_running_job(make_backend: BackendFactory, store: ArtifactStore) -> None:
    backend = make_backend()
    handle = backend.submit(make_task(store, "nap", {"seconds": 120}))
    wait_until_state(backend, handle, lambda s: s.state is JobState.RUNNING)
    backend.cancel(handle)
    backend.cancel(handle)  # idempotent
    status = wait_for_end(backend, handle, timeout=30)
    assert status.state is JobState.CANCELLED


def test_a_job_over_its_time_limit_fails_naming_the_limit(
    make_backend: BackendFactory, store: ArtifactStore
) -> None:
    backend = make_backend()
    task = make_task(store, "nap", {"seconds": 300}, Resources(time_limit="1m"))
    handle = backend.submit(task)
    status = wait_for_end(backend, handle, timeout=150)
    assert status.state is JobState.FAILED
    assert "TIMEOUT" in (status.reason or "") and "00:01:00" in (status.reason or "")
    assert not status.infrastructure_failure


def test_a_partition_slurm_rejects_shows_slurms_message(
    make_backend: BackendFactory, store: ArtifactStore
) -> None:
    backend = make_backend(partition="no-such-partition")
    with pytest.raises(BackendError, match="invalid partition") as refused:
        backend.submit(make_task(store, "nap", {"seconds": 0}))
    assert "partition" in (refused.value.hint or "")


def test_failing_setup_lines_show_their_output(
    make_backend: BackendFactory, store: ArtifactStore
) -> None:
    backend = make_backend(setup=["echo loading the toolchain", "module load no-such-module"])
    handle = backend.submit(make_task(store, "nap", {"seconds": 0}))
    status = wait_for_end(backend, handle)
    assert status.state is JobState.FAILED
    reason = status.reason or ""
    assert "setup lines failed" in reason
    assert "module load no-such-module" in reason and "loading the toolchain" in reason


def test_a_job_requeued_by_slurm_is_followed_not_resubmitted(
    make_backend: BackendFactory, store: ArtifactStore
) -> None:
    backend = make_backend()
    task = make_task(store, "nap", {"seconds": 3})
    handle = backend.submit(task)
    wait_until_state(backend, handle, lambda s: s.state is JobState.RUNNING)
    # What SLURM does to a job whose node failed (the test runs as root, the cluster's admin).
    subprocess.run(["scontrol", "requeue", handle.job_id], check=True)
    seen = wait_until_state(
        backend, handle, lambda s: s.state is JobState.PENDING or s.state.is_terminal
    )
    assert seen.state is JobState.PENDING, seen  # followed through the requeue, not ended
    status = wait_for_end(backend, handle, timeout=150)
    assert status.state is JobState.SUCCEEDED, status
    assert backend.submit(task).job_id == handle.job_id
