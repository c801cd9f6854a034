"""Job scripts generated from Resources and the profile."""

from __future__ import annotations

import pytest

from mlyard.backends.slurm.profile import SlurmGpuType, SlurmProfile
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


# -- GPU requests: GRES types, shards and node features ------------------------------------------

CATALOG = PROFILE.model_copy(
    update={
        "gres_shard": True,
        "shards_per_gpu": 4,
        "gpu_types": [
            SlurmGpuType(name="v100", memory="32GB", feature="gpu_v100"),
            SlurmGpuType(name="a100", memory="80GB", feature="gpu_a100"),
            SlurmGpuType(name="h100", memory="94GB", feature="gpu_h100"),
        ],
    }
)


def _gpu_options(resources: Resources, profile: SlurmProfile = CATALOG) -> list[str]:
    options = sbatch_options(resources, profile, name="n", log_path="l")
    return [o for o in options if o.startswith(("--gres", "--constraint"))]


def test_gpu_memory_picks_the_smallest_listed_model_that_holds_it() -> None:
    unfeatured = CATALOG.model_copy(
        update={"gpu_types": [t.model_copy(update={"feature": None}) for t in CATALOG.gpu_types]}
    )
    assert _gpu_options(Resources(gpus=2, gpu_memory="40GB"), unfeatured) == [
        "--gres=gpu:a100:2",
        "--constraint=v100",  # the site's own constraint stays as it was
    ]


def test_gpu_memory_held_by_several_featured_models_lets_slurm_pick_among_them() -> None:
    assert _gpu_options(Resources(gpus=1, gpu_memory="40GB")) == [
        "--gres=gpu:1",
        "--constraint=v100&(gpu_a100|gpu_h100)",
    ]


def test_gpu_type_with_gpu_memory_narrows_to_one_model() -> None:
    assert _gpu_options(Resources(gpus=1, gpu_type="A100", gpu_memory="40GB")) == [
        "--gres=gpu:a100:1",
        "--constraint=v100",
    ]


def test_a_typed_shard_asks_for_the_model_by_node_feature() -> None:
    assert _gpu_options(Resources(gpus=0.5, gpu_type="h100")) == [
        "--gres=shard:2",
        "--constraint=v100&gpu_h100",
    ]
    assert _gpu_options(Resources(gpus=0.25, gpu_memory="64GB")) == [
        "--gres=shard:1",
        "--constraint=v100&(gpu_a100|gpu_h100)",
    ]


def test_an_untyped_shard_keeps_the_site_constraint_alone() -> None:
    assert _gpu_options(Resources(gpus=0.5)) == ["--gres=shard:2", "--constraint=v100"]


def test_the_site_constraint_in_any_spelling_is_merged_not_repeated() -> None:
    for spelling in ("--constraint=ib|eth", "--constraint ib|eth", "-C ib|eth", "-Cib|eth"):
        site = CATALOG.model_copy(update={"extra_sbatch": [spelling, "--exclusive"]})
        assert sbatch_options(Resources(gpus=0.5, gpu_type="a100"), site, name="n", log_path="l")[
            -3:
        ] == ["--gres=shard:2", "--exclusive", "--constraint=(ib|eth)&gpu_a100"]


def test_gpu_memory_on_a_profile_without_gpu_types_is_refused() -> None:
    with pytest.raises(ResourceError, match="cannot ask for GPU memory") as refused:
        _gpu_options(Resources(gpus=1, gpu_memory="16GB"), PROFILE)
    assert "gpu_types" in (refused.value.hint or "")
