"""``python -m mlyard.runtime --store-log`` keeps the attempt's output in the store as well as
printing it, so its log outlives the job (a pod removed after its TTL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlyard.artifacts.store import ArtifactStore
from mlyard.runtime.stored_log import LOG_DOCUMENT
from tests.contracts.backend_contract import make_task


def run_runtime(task_uri: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlyard.runtime", task_uri, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_log_is_printed_and_stored(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    task = make_task(store, tmp_path, "add", {"a": 2, "b": 3})
    done = run_runtime(task.task_uri, "--store-log")
    assert done.returncode == 0, done.stderr
    assert "adding 2 3" in done.stdout
    stored = store.read_document(task.spec.attempt_id, LOG_DOCUMENT)
    assert stored is not None and b"adding 2 3" in stored


def test_a_failing_step_stores_its_traceback(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    task = make_task(store, tmp_path, "fail", {"message": "gate not met"})
    done = run_runtime(task.task_uri, "--store-log")
    assert done.returncode == 1
    stored = store.read_document(task.spec.attempt_id, LOG_DOCUMENT)
    assert stored is not None and b"ValueError: gate not met" in stored


def test_without_the_option_nothing_is_stored(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    task = make_task(store, tmp_path, "add", {"a": 1, "b": 1})
    assert run_runtime(task.task_uri).returncode == 0
    assert store.read_document(task.spec.attempt_id, LOG_DOCUMENT) is None
