"""The local backend passes the backend contract."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend
from mlyard.backends.registry import create_backend
from mlyard.models.backends import JobState
from mlyard.settings import load_settings
from tests.contracts.backend_contract import BackendContract, make_task, wait_terminal


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture(params=[True, False], ids=["fork-server", "plain-processes"])
def backend(request: pytest.FixtureRequest, store: ArtifactStore) -> Iterator[Backend]:
    settings = load_settings(
        backends={"local": {"type": "local", "fork_server": request.param, "cpus": 2}}
    )
    created = create_backend("local", settings, store)
    yield created
    created.close()


class TestLocalBackend(BackendContract):
    def test_a_new_backend_instance_reattaches_to_a_running_job(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        task = make_task(store, tmp_path, "sleep", {"seconds": 1.5})
        handle = backend.submit(task)
        while backend.status([handle])[handle.job_id].state != JobState.RUNNING:
            time.sleep(0.05)
        # What a restarted orchestrator does: a fresh backend, the same handle.
        restarted = create_backend("local", backend.settings, store)
        assert restarted.status([handle])[handle.job_id].state == JobState.RUNNING
        assert restarted.submit(task).job_id == handle.job_id  # nothing started twice
        assert wait_terminal(restarted, handle).state == JobState.SUCCEEDED
        restarted.close()

    def test_a_journal_line_cut_short_by_a_crash_leaves_the_phase_before_it(
        self, backend: Backend, store: ArtifactStore, tmp_path: Path
    ) -> None:
        task = make_task(store, tmp_path, "sleep", {"seconds": 0.1})
        handle = backend.submit(task)
        assert wait_terminal(backend, handle).state == JobState.SUCCEEDED
        journal = Path(backend.settings.home) / "local" / "jobs" / f"{handle.job_id}.jsonl"
        lines = [json.loads(line) for line in journal.read_text().splitlines()]
        phases = [line["phase"] for line in lines if "phase" in line]
        assert phases == ["starting", "running", "ended"]
        assert {line["pid"] for line in lines if set(line) == {"pid"}} == {lines[1]["pid"]}
        text = journal.read_text()
        journal.write_text(text[: len(text) - 20])  # the last append, as a power cut could leave it

        restarted = create_backend("local", backend.settings, store)
        status = restarted.status([handle])[handle.job_id]
        # From the "running" phase: the process is gone, so its result document decides.
        assert status.state == JobState.SUCCEEDED
        assert status.reason == "ended while detached"
        assert restarted.submit(task).job_id == handle.job_id
        assert restarted.status([handle])[handle.job_id].state == JobState.SUCCEEDED  # not rerun
        restarted.close()


def test_a_step_whose_fork_server_ended_before_forking_it_fails_as_an_infrastructure_failure(
    store: ArtifactStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(backends={"local": {"type": "local", "fork_server": True}})
    backend = create_backend("local", settings, store)
    try:
        task = make_task(store, tmp_path, "sleep", {"seconds": 0.1})
        warm = backend.submit(make_task(store, tmp_path, "sleep", {"seconds": 0.1}))
        assert wait_terminal(backend, warm).state == JobState.SUCCEEDED  # the server is up
        server = backend._fork_server  # type: ignore[attr-defined]
        # The request is lost and the server dies before it forks anything.
        monkeypatch.setattr(server, "start", lambda *args, **kwargs: None)
        handle = backend.submit(task)
        server._process.kill()
        server._process.wait()
        status = wait_terminal(backend, handle)
        assert status.state == JobState.FAILED and status.infrastructure_failure
        assert "fork server ended" in (status.reason or "")
    finally:
        backend.close()
