"""A killed orchestrator's run on the cluster: `mlyard runs resume` re-attaches to the running
Job and launches nothing twice; `mlyard runs cancel` deletes the Job of a run nobody follows."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli import PROJECTS, mlyard, mlyard_json, runs_of, spawn, stop_spawned
from tests.integration.kubernetes.conftest import NAMESPACE, S3_VARIABLES, profile_fields

pytestmark = pytest.mark.integration
COUNTING = str(PROJECTS / "counting" / "counting.py")


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    yield
    stop_spawned()


@pytest.fixture
def project(
    kube: dict[str, str], s3: dict[str, str], credentials_secret: str, tmp_path: Path
) -> tuple[Path, dict[str, str]]:
    # Settings through the environment: the spawned orchestrator runs in the test's directory.
    env = {
        "MLYARD_BACKENDS": json.dumps({"cluster": profile_fields(kube)}),
        "MLYARD_TRACKING__URI": "none",
        "MLYARD_STORAGE__ARTIFACTS": f"s3://{s3['S3_BUCKET']}/resume-{uuid.uuid4().hex[:8]}",
        "MLYARD_STORAGE__ENDPOINT_URL": s3["S3_ENDPOINT_URL"],
        **{key: s3[key] for key in S3_VARIABLES},
    }
    return tmp_path, env


def killed_while_slow_runs(
    project: tuple[Path, dict[str, str]], markers: Path, seconds: float
) -> str:
    """Start the chain on the cluster, wait until its slow step runs, SIGKILL the orchestrator."""
    directory, env = project
    orchestrator = spawn(
        "run",
        f"{COUNTING}:chain",
        "--backend",
        "cluster",
        "-p",
        f"marker_dir={markers}",
        "-p",
        f"seconds={seconds}",
        env={**env, "MLYARD_HOME": str(directory / "home")},
    )
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "the slow step never ran"
        runs = mlyard_json("runs", "ls", env={**env, "MLYARD_HOME": str(directory / "home")})
        if runs:
            view = mlyard_json(
                "runs", "show", runs[0]["id"], env={**env, "MLYARD_HOME": str(directory / "home")}
            )
            if any(s["name"] == "slow" and s["state"] == "RUNNING" for s in view["steps"]):
                break
        time.sleep(0.2)
    orchestrator.send_signal(signal.SIGKILL)
    orchestrator.wait(timeout=10)
    return str(view["id"])


def jobs_of_run(core_api: Any, run_id: str) -> list[Any]:
    from kubernetes import client

    batch = client.BatchV1Api(core_api.api_client)
    return list(
        batch.list_namespaced_job(NAMESPACE, label_selector=f"mlyard.io/run-id={run_id}").items
    )


def test_resume_reattaches_and_runs_every_step_once(
    project: tuple[Path, dict[str, str]], tmp_path: Path, core_api: Any
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    run_id = killed_while_slow_runs(project, markers, seconds=6)
    env = {**project[1], "MLYARD_HOME": str(project[0] / "home")}
    resumed = mlyard("runs", "resume", run_id, "--json", env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    view = mlyard_json("runs", "show", run_id, env=env)
    assert view["state"] == "SUCCEEDED"
    assert [runs_of(markers, s) for s in ("first", "slow", "last")] == [1, 1, 1]
    assert len(jobs_of_run(core_api, run_id)) == 3  # one Job per step: none launched twice


def test_cancel_deletes_the_job_of_a_run_nobody_follows(
    project: tuple[Path, dict[str, str]], tmp_path: Path, core_api: Any
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    run_id = killed_while_slow_runs(project, markers, seconds=120)
    env = {**project[1], "MLYARD_HOME": str(project[0] / "home")}
    cancelled = mlyard_json("runs", "cancel", run_id, env=env, timeout=120)
    assert cancelled["state"] == "CANCELLED"
    states = {s["name"]: s["state"] for s in cancelled["steps"]}
    assert states["slow"] == "CANCELLED"
    deadline = time.monotonic() + 30
    while any(j.metadata.labels["mlyard.io/step"] == "slow" for j in jobs_of_run(core_api, run_id)):
        assert time.monotonic() < deadline, "the cancelled step's Job was not deleted"
        time.sleep(0.2)
    assert runs_of(markers, "last") == 0


def test_an_image_that_cannot_be_pulled_fails_the_step_without_using_its_retries(
    kube: dict[str, str], s3: dict[str, str], credentials_secret: str, tmp_path: Path
) -> None:
    """`flaky` has retries=2: another attempt would fail to pull the same image, so one is made."""
    home = tmp_path / "home"
    markers = tmp_path / "markers"
    markers.mkdir()
    env = {
        "MLYARD_BACKENDS": json.dumps(
            {"cluster": profile_fields(kube, image="registry.invalid/mlyard:1")}
        ),
        "MLYARD_TRACKING__URI": "none",
        "MLYARD_STORAGE__ARTIFACTS": f"s3://{s3['S3_BUCKET']}/pull-{uuid.uuid4().hex[:8]}",
        "MLYARD_STORAGE__ENDPOINT_URL": s3["S3_ENDPOINT_URL"],
        "MLYARD_HOME": str(home),
        **{key: s3[key] for key in S3_VARIABLES},
    }
    done = mlyard(
        "run",
        f"{COUNTING}:retrying",
        "--backend",
        "cluster",
        "-p",
        f"marker_dir={markers}",
        env=env,
        timeout=180,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    runs = mlyard_json("runs", "ls", env=env)
    view = mlyard_json("runs", "show", runs[0]["id"], env=env)
    (flaky,) = view["steps"]
    assert flaky["state"] == "FAILED" and flaky["attempts"] == 1, flaky
    assert "registry.invalid/mlyard:1" in json.dumps(flaky)
    assert runs_of(markers, "flaky") == 0, "the step's code never ran: its image was never pulled"
