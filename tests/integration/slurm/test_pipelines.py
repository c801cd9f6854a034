"""Real pipelines through the CLI on the SLURM backend over SSH: the quickstart example
unchanged, and a run whose orchestrator is killed while its job runs, then resumed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli import EXAMPLES, mlyard, mlyard_json
from tests.integration.slurm.conftest import PROJECT, profile_fields

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def write_project_config(directory: Path, cluster: dict[str, str], **overrides: Any) -> None:
    """An mlyard.toml with a [backends.hpc] table for the test cluster."""
    fields = profile_fields(cluster, remote_workdir=f"~/mlyard-e2e-{directory.name}", **overrides)
    lines = ["[tracking]", 'uri = "none"', "", "[backends.hpc]", 'type = "slurm"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items()]
    lines += ["", "[backends.hpc.costs]", "cpu_hour = 0.5"]
    (directory / "mlyard.toml").write_text("\n".join(lines) + "\n")


def test_the_quickstart_example_runs_unchanged_over_ssh(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    write_project_config(tmp_path, cluster)
    # `mlyard run` reads mlyard.toml beside the pipeline file: run the example, unchanged, there.
    pipeline_file = tmp_path / "pipeline.py"
    shutil.copyfile(EXAMPLES / "quickstart" / "pipeline.py", pipeline_file)
    view = mlyard_json("run", str(pipeline_file), "--backend", "hpc", cwd=tmp_path)
    assert view["state"] == "SUCCEEDED", view
    steps = {step["name"]: step for step in view["steps"]}
    assert {step["state"] for step in steps.values()} == {"SUCCEEDED"}
    assert view["metrics"]["evaluate.accuracy"] >= 0.8
    train = steps["train"]
    assert train["usage"]["queue_seconds"] is not None
    assert train["usage"]["cost"] is not None
    assert train["log_handle"]["backend"] == "hpc"
    shown = mlyard_json("runs", "show", view["id"], cwd=tmp_path)
    assert "#SBATCH" in (shown["steps"][0]["submit_script"] or "")


def _squeue_names() -> list[str]:
    done = subprocess.run(
        ["squeue", "-h", "--states=all", "-o", "%j|%T"], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_a_killed_orchestrator_is_resumed_without_submitting_twice(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    write_project_config(tmp_path, cluster)
    pipeline_file = tmp_path / "tiny_pipeline.py"
    shutil.copyfile(PROJECT / "tiny_pipeline.py", pipeline_file)
    before = set(_squeue_names())
    command = [sys.executable, "-m", "mlyard.cli", "run", str(pipeline_file)]
    process = subprocess.Popen(
        [*command, "--backend", "hpc", "-p", "pause=6"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not any(
        line.endswith("|RUNNING") and ".2.1|" in line for line in set(_squeue_names()) - before
    ):
        assert time.monotonic() < deadline, "the second step never started on the cluster"
        assert process.poll() is None, "the orchestrator ended too early"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)  # the orchestrator dies while its job runs
    process.wait()

    runs = mlyard_json("runs", "ls", cwd=tmp_path)
    resumed = mlyard_json("runs", "resume", runs[0]["id"], cwd=tmp_path, timeout=120)
    assert resumed["state"] == "SUCCEEDED", resumed
    submitted = [line for line in set(_squeue_names()) - before if line.startswith("mlyard-")]
    # Two steps, each submitted exactly once although the orchestrator restarted.
    assert len(submitted) == 2, submitted
    assert mlyard("runs", "logs", runs[0]["id"], "total", cwd=tmp_path).returncode == 0
