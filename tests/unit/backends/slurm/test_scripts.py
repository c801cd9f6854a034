"""Job scripts generated from Resources and the profile."""

from __future__ import annotations

import pytest

from mlyard.backends.slurm.profile import SlurmProfile
from mlyard.backends.slurm.scripts import (
    JobScript,
    format_memory,
    format_time_limit,
    render_job_script,
    sbatch_options,
)
from mlyard.errors import ResourceError
from mlyard.models.resources import Resources

PROFILE = SlurmProfile(
    host="login.example.org",
    partition="gpu",
    account="project_123",
    qos="normal",
    extra_sbatch=["#SBATCH --constraint=v100", "--exclusive"],
)


def test_every_resource_becomes_its_sbatch_option() -> None:
    resources = Resources(cpus=3.5, memory="4GiB", gpus=2, gpu_type="a100", time_limit="1h30m")
    options = sbatch_options(resources, PROFILE, name="mlyard-a.1.1", log_path="/w/logs/a.log")
    assert options == [
        "--job-name=mlyard-a.1.1",
        "--output=/w/logs/a.log",
        "--open-mode=append",
        "--partition=gpu",
        "--account=project_123",
        "--qos=normal",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--cpus-per-task=4",
        "--mem=4096M",
        "--time=01:30:00",
        "--gres=gpu:a100:2",
        "--constraint=v100",
        "--exclusive",
    ]


def test_fractional_gpu_maps_to_shards_only_when_the_site_has_them() -> None:
    with_shards = PROFILE.model_copy(update={"gres_shard": True, "shards_per_gpu": 4})
    options = sbatch_options(Resources(gpus=0.5), with_shards, name="n", log_path="l")
    assert "--gres=shard:2" in options
    with pytest.raises(ResourceError, match="cannot share a GPU") as refused:
        sbatch_options(Resources(gpus=0.5), PROFILE, name="n", log_path="l")
    assert "gres_shard" in (refused.value.hint or "")


def test_time_and_memory_formats() -> None:
    assert format_time_limit(59.2) == "00:01:00"
    assert format_time_limit(2 * 86400 + 3661) == "2-01:01:01"
    assert format_memory(1) == "1M"
    assert format_memory(3 * 1024**3) == "3072M"


def test_script_runs_setup_lines_checked_then_the_runtime() -> None:
    job = JobScript(
        name="mlyard-a.1.1",
        log_path="/w/logs/a.log",
        workdir="/w",
        python="python3",
        task_arguments=["s3://b/tasks/a/task.json"],
        setup=["module load pytorch", "source ~/venv/bin/activate"],
        environment={"OMP_NUM_THREADS": "4"},
        done_marker="/w/jobs/a.done",
    )
    script = render_job_script(job, Resources(nodes=2), PROFILE)
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert "trap 'touch /w/jobs/a.done' EXIT" in lines
    assert "#SBATCH --nodes=2" in lines
    setup = [line for line in lines if line.startswith("module load pytorch ||")]
    assert setup and "exit 97" in setup[0]
    assert "export OMP_NUM_THREADS=4" in lines
    assert "export WORLD_SIZE=2" in lines
    assert lines[-1] == "python3 -m mlyard.runtime s3://b/tasks/a/task.json"
    assert "AWS_SECRET_ACCESS_KEY" not in script
