"""The Ray driver launcher's own logic: arguments, start failures and cleanup; booting a real
cluster is covered on the SLURM test cluster (tests/integration/slurm/test_launchers.py)."""

from __future__ import annotations

import subprocess
import time

import pytest

from mlyard.runtime import ray_driver


def test_the_driver_command_follows_the_separator() -> None:
    args = ray_driver._parse(["--nodes=3", "--cpus=4", "--", "python", "-m", "mlyard.runtime"])
    assert (args.nodes, args.cpus, args.gpus) == (3, 4, 0)
    assert args.command == ["python", "-m", "mlyard.runtime"]
    with pytest.raises(SystemExit):
        ray_driver._parse(["--nodes=2"])


def test_a_start_command_that_exits_fails_the_wait_at_once_naming_it() -> None:
    failed = subprocess.Popen(["false"], start_new_session=True)
    failed.wait()
    started = time.monotonic()
    with pytest.raises(ray_driver.RayStartError, match="`false` exited with status 1"):
        ray_driver.wait_for_nodes("127.0.0.1:1", 1, 60.0, [failed])
    assert time.monotonic() - started < 30


def test_stop_ends_each_start_command_with_its_process_group() -> None:
    # A shell whose child ignores nothing: both must be gone after stop().
    parent = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    time.sleep(0.2)
    ray_driver.stop([parent])
    assert parent.poll() is not None
    assert _living_members(parent.pid) == []


def _living_members(group: int) -> list[str]:
    """Processes of the group that are not zombies (waiting for init to reap them)."""
    listed = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-g", str(group)], capture_output=True, text=True, check=False
    )
    return [line for line in listed.stdout.splitlines() if "Z" not in line.split()[1]]


def test_each_job_gets_its_own_ray_directory() -> None:
    assert ray_driver.session_directory(41) != ray_driver.session_directory(42)
    assert ray_driver.session_directory(41).endswith("ray-41")
