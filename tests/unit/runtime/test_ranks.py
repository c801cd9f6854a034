"""Distributed steps: every rank runs the step, rank 0 alone stores outputs and the result."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.models.resources import Resources
from mlyard.models.tasks import CodePackage, TaskSpec
from mlyard.runtime.__main__ import main
from mlyard.runtime.execute import RESULT_DOCUMENT, run_worker_rank, worker_rank

STEP_MODULE = """
import os
from pathlib import Path

from mlyard import log_metric, log_model


def train(marks: str) -> int:
    rank = os.environ.get("RANK", "0")
    Path(marks, f"rank-{rank}").write_text("ran")
    log_metric("loss", 0.5)
    log_model({"weights": [1, 2]}, "ddp-model")
    if os.environ.get("FAIL_RANK") == rank:
        raise RuntimeError(f"rank {rank} failed")
    return int(rank) + 100
"""


@pytest.fixture
def task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ArtifactStore, TaskSpec, str]:
    monkeypatch.setenv("MLYARD_CODE_CACHE", str(tmp_path / "code"))
    store = ArtifactStore(str(tmp_path / "artifacts"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ddp_step.py", STEP_MODULE)
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = TaskSpec(
        run_id="r1",
        step_run_id="s1",
        attempt_id="s1.1",
        attempt=1,
        step_name="train",
        function="ddp_step:train",
        code=CodePackage(digest=store.put_bytes(buffer.getvalue()), module="ddp_step"),
        params={"marks": str(marks)},
        output_names=["rank"],
        resources=Resources(nodes=2, launcher="torchrun"),
        artifact_store=store.url,
    )
    uri = store.write_document(spec.attempt_id, "task.json", spec.model_dump_json().encode())
    return store, spec, uri


def test_rank_comes_from_torchrun_and_defaults_to_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    assert worker_rank() == 0
    monkeypatch.setenv("RANK", "3")
    assert worker_rank() == 3


def test_a_worker_rank_runs_the_step_but_writes_no_result_or_output(
    task: tuple[ArtifactStore, TaskSpec, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, spec, uri = task
    artifacts_before = set(Path(store.url).rglob("*"))
    assert _run_as_rank(1, uri, monkeypatch) == 0
    assert Path(spec.params["marks"], "rank-1").read_text() == "ran"
    assert store.read_document(spec.attempt_id, RESULT_DOCUMENT) is None
    assert set(Path(store.url).rglob("*")) == artifacts_before  # no output, model or result


def test_rank_zero_writes_the_result_with_its_own_output(
    task: tuple[ArtifactStore, TaskSpec, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, spec, uri = task
    assert _run_as_rank(0, uri, monkeypatch) == 0
    result = store.read_document(spec.attempt_id, RESULT_DOCUMENT)
    assert result is not None and b'"succeeded"' in result
    assert [model["name"] for model in json.loads(result)["models"]] == ["ddp-model"]


def test_a_failing_worker_rank_exits_non_zero_with_its_traceback(
    task: tuple[ArtifactStore, TaskSpec, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, spec, _ = task
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("FAIL_RANK", "2")
    assert run_worker_rank(spec, store) == 1
    assert "rank 2 failed" in capsys.readouterr().err


def test_worker_ranks_of_an_attempt_that_already_ended_do_not_run_again(
    task: tuple[ArtifactStore, TaskSpec, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, spec, uri = task
    assert _run_as_rank(0, uri, monkeypatch) == 0
    Path(spec.params["marks"], "rank-0").unlink()
    monkeypatch.setenv("RANK", "1")
    assert run_worker_rank(spec, store) == 0
    assert not Path(spec.params["marks"], "rank-1").exists()


def _run_as_rank(rank: int, uri: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """``python -m mlyard.runtime URI`` as torchrun starts it for ``rank``."""
    monkeypatch.setenv("RANK", str(rank))
    return main([uri])
