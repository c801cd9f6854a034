"""The launch lines of job scripts: plain, torchrun on every node, or a Ray driver."""

from __future__ import annotations

import shlex
import subprocess

from mlyard.backends.slurm.launchers import launch_lines
from mlyard.models.resources import Resources

TASK = ["s3://b/tasks/a/task.json", "--endpoint-url", "http://s3:8333"]


def test_a_single_node_step_runs_the_runtime_alone() -> None:
    lines = launch_lines(Resources(), "python3", TASK)
    assert lines == [
        "python3 -m mlyard.runtime s3://b/tasks/a/task.json --endpoint-url http://s3:8333"
    ]


def test_torchrun_starts_one_agent_per_node_with_c10d_rendezvous() -> None:
    lines = launch_lines(Resources(nodes=4, gpus=2, launcher="torchrun"), "/v/bin/python", TASK)
    assert "export WORLD_SIZE=8" in lines  # 4 nodes x 2 GPUs: one rank per GPU
    assert "export MLYARD_LAUNCHER=torchrun" in lines
    command = shlex.split(lines[-1])
    srun = command[: command.index("/v/bin/python")]
    assert srun[:4] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1"]
    assert "--kill-on-bad-exit=1" in srun
    launched = command[command.index("/v/bin/python") :]
    assert launched[:3] == ["/v/bin/python", "-m", "torch.distributed.run"]
    assert "--nnodes=4" in launched and "--nproc-per-node=2" in launched
    assert "--rdzv-backend=c10d" in launched
    assert "--rdzv-id=$SLURM_JOB_ID" in launched
    assert "--rdzv-endpoint=$MASTER_ADDR:$MASTER_PORT" in launched
    assert launched[-5:] == ["-m", "mlyard.runtime", *TASK]


def test_torchrun_without_gpus_runs_one_process_per_node() -> None:
    resources = Resources(nodes=2, cpus=8, launcher="torchrun")
    assert resources.ranks_per_node == 1
    line = launch_lines(resources, "python", TASK)[-1]
    assert "--cpus-per-task=8" in line and "--nproc-per-node=1" in line


def test_ray_runs_the_runtime_as_the_driver_of_a_cluster_over_all_nodes() -> None:
    lines = launch_lines(Resources(nodes=3, cpus=4, gpus=1, launcher="ray"), "python", TASK)
    command = shlex.split(lines[-1])
    assert command[:3] == ["python", "-m", "mlyard.runtime.ray_driver"]
    assert {"--nodes=3", "--cpus=4", "--gpus=1"} <= set(command)
    driver = command[command.index("--") + 1 :]
    assert driver == ["python", "-m", "mlyard.runtime", *TASK]
    assert "export MASTER_ADDR" in lines


def test_the_launch_lines_are_valid_bash_that_expands_the_job_variables() -> None:
    """Run the torchrun line with srun stubbed by echo: the shell expands the rendezvous."""
    lines = launch_lines(Resources(nodes=2, launcher="torchrun"), "python", TASK)
    script = "\n".join(
        [
            "srun() { printf '%s\\n' \"$@\"; }",
            "scontrol() { echo node-a; echo node-b; }",
            "SLURM_JOB_ID=1234",
            "SLURM_JOB_NODELIST='node-[a-b]'",
            *lines,
        ]
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    printed = done.stdout.splitlines()
    assert "--rdzv-id=1234" in printed
    assert "--rdzv-endpoint=node-a:21234" in printed
