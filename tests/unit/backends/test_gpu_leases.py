"""GPU leases shared by the processes of one machine: real processes, a made-up NVML inventory.

Each child is a real Python process that finds its GPUs through mlyard's own NVML code; the
``fake_nvml`` directory first on its ``PYTHONPATH`` answers NVML's calls with the devices of
``MLYARD_TEST_FAKE_GPUS``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlyard.backends.local.gpu_allocator import GpuAllocator
from mlyard.backends.local.gpu_leases import (
    FileLeases,
    GpuLease,
    HeldLease,
    LeaseHolder,
    lease_file_of,
)
from mlyard.backends.local.processes import started_since_boot
from mlyard.models.resources import Resources
from mlyard.platform.gpu_inventory import GpuDevice

GIB = 1024**3
FAKE_NVML = Path(__file__).parent / "fake_nvml"
REPOSITORY = Path(__file__).parents[3]

#: A step leasing GPUs as the local backend does; holds them until its stdin closes.
STEP_CHILD = """
import json, sys, time
from pathlib import Path
from mlyard.backends.local.gpu_allocator import GpuAllocator
from mlyard.backends.local.gpu_leases import lease_file_of
from mlyard.models.resources import Resources
from mlyard.platform.gpu_inventory import discover_gpus

home, lease_id, gpus, go = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
allocator = GpuAllocator(discover_gpus, lease_file=lease_file_of(Path(home)))
while go and not Path(go).exists():  # racing children start leasing together
    time.sleep(0.001)
lease = allocator.try_lease(lease_id, Resources(gpus=gpus))
print(json.dumps(None if lease is None else lease.cuda_visible_devices), flush=True)
sys.stdin.read()
allocator.release(lease_id)
"""

#: Model server replicas leasing GPUs as `mlyard serve` does.
SERVE_CHILD = """
import json, sys
from pathlib import Path
from mlyard.serving.replicas import lease_devices

environments, release = lease_devices(float(sys.argv[2]), int(sys.argv[3]), home=Path(sys.argv[1]))
print(json.dumps([env["CUDA_VISIBLE_DEVICES"] for env in environments]), flush=True)
sys.stdin.read()
release()
"""


#: Leases the one GPU and gives it back, many times; records when another held it meanwhile.
RACER_CHILD = """
import json, os, sys, time
from pathlib import Path
from mlyard.backends.local.gpu_allocator import GpuAllocator
from mlyard.backends.local.gpu_leases import lease_file_of
from mlyard.models.resources import Resources
from mlyard.platform.gpu_inventory import discover_gpus

home, name, go, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]) / "held"
allocator = GpuAllocator(discover_gpus, lease_file=lease_file_of(Path(home)))
allocator.devices
while not go.exists():
    time.sleep(0.001)
held = overlaps = 0
for turn in range(150):
    lease_id = f"{name}-{turn}"
    if allocator.try_lease(lease_id, Resources(gpus=1)) is None:
        continue
    held += 1
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # fails while another holds it
        time.sleep(0.001)  # use the device a while
        os.unlink(marker)
    except FileExistsError:
        overlaps += 1
    allocator.release(lease_id)
print(json.dumps({"held": held, "overlaps": overlaps}), flush=True)
"""


class Machine:
    """One made-up machine: an inventory and an mlyard home shared by the processes on it."""

    def __init__(self, home: Path, devices: list[tuple[str, int]]) -> None:
        self.home = home
        self.environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(FAKE_NVML), str(REPOSITORY)]),
            "MLYARD_TEST_FAKE_GPUS": json.dumps([{"name": n, "memory": m} for n, m in devices]),
        }
        self.children: list[subprocess.Popen[str]] = []

    def start(self, code: str, *arguments: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(self.home), *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=self.environment,
            text=True,
        )
        self.children.append(child)
        return child

    def step(self, lease_id: str, gpus: float, go: str = "") -> subprocess.Popen[str]:
        return self.start(STEP_CHILD, lease_id, str(gpus), go)

    def leased(self, child: subprocess.Popen[str]) -> Any:
        """What the child leased (its first line): devices, or None when busy."""
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, f"the child exited with {child.wait()} before leasing"
        return json.loads(line)

    def finish(self, child: subprocess.Popen[str]) -> None:
        """Let the child release its lease and exit."""
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=30) == 0


MachineFactory = Callable[[list[tuple[str, int]]], Machine]


@pytest.fixture
def machine_with(tmp_path: Path) -> Iterator[MachineFactory]:
    machines: list[Machine] = []

    def make(devices: list[tuple[str, int]]) -> Machine:
        machine = Machine(tmp_path / "mlyard-home", devices)
        machines.append(machine)
        return machine

    yield make
    for machine in machines:
        for child in machine.children:
            child.kill()
            child.wait()


TWO_A10 = [("NVIDIA A10", 24 * GIB), ("NVIDIA A10", 24 * GIB)]


def test_a_server_and_steps_in_other_processes_never_get_the_same_gpu(
    machine_with: MachineFactory,
) -> None:
    machine = machine_with(TWO_A10)
    server = machine.start(SERVE_CHILD, "1", "1")  # `mlyard serve --gpus 1`
    served = machine.leased(server)
    step = machine.step("step-1", 1)  # a step of `mlyard run`
    stepped = machine.leased(step)
    assert sorted([*served, stepped]) == ["0", "1"]
    late = machine.step("step-2", 1)
    assert machine.leased(late) is None  # both are taken: the step waits
    machine.finish(server)
    again = machine.step("step-3", 1)
    assert machine.leased(again) == served[0]  # released for the others
    for child in (step, late, again):
        machine.finish(child)


def test_a_shared_gpu_is_never_overfilled_across_processes(machine_with: MachineFactory) -> None:
    machine = machine_with([("NVIDIA L4", 24 * GIB)])
    server = machine.start(SERVE_CHILD, "0.25", "3")  # three replicas of a quarter each
    assert machine.leased(server) == ["0", "0", "0"]
    half = machine.step("half", 0.5)
    assert machine.leased(half) is None  # 0.75 + 0.5 would overfill the device
    quarter = machine.step("quarter", 0.25)
    assert machine.leased(quarter) == "0"  # exactly full
    for child in (server, half, quarter):
        machine.finish(child)


def test_the_lease_of_a_killed_process_is_reclaimed(machine_with: MachineFactory) -> None:
    machine = machine_with([("NVIDIA A10", 24 * GIB)])
    holder = machine.step("killed", 1)
    assert machine.leased(holder) == "0"
    waiting = machine.step("waiting", 1)
    assert machine.leased(waiting) is None
    holder.kill()
    holder.wait()
    after = machine.step("after", 1)
    assert machine.leased(after) == "0"  # nobody released it: its holder's exit did
    machine.finish(after)


def test_processes_leasing_at_once_never_hold_one_gpu_together(
    machine_with: MachineFactory, tmp_path: Path
) -> None:
    machine = machine_with([("NVIDIA A10", 24 * GIB)])
    go = tmp_path / "go"
    racers = [machine.start(RACER_CHILD, f"racer-{i}", str(go), str(tmp_path)) for i in range(4)]
    time.sleep(1.0)  # every child imported mlyard and is waiting for the start
    go.touch()
    counts = [machine.leased(racer) for racer in racers]
    assert all(count["overlaps"] == 0 for count in counts), counts
    assert sum(count["held"] for count in counts) >= 4  # they did take turns on the device


# -- the lease file, in this process ---------------------------------------------------------------


def a10(index: int) -> GpuDevice:
    return GpuDevice(index, f"GPU-{index}", "NVIDIA A10", 24 * GIB)


def test_a_lease_lasts_while_any_of_its_holders_runs(tmp_path: Path) -> None:
    lease_file = lease_file_of(tmp_path)
    step = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = LeaseHolder(step.pid, started_since_boot(step.pid))
        gone = LeaseHolder(2**22 + 1, 1.0)  # an orchestrator that was killed
        with FileLeases(lease_file).open() as leases:
            leases["step"] = HeldLease(GpuLease("step", (0,), 1.0, None), (gone, running))
        allocator = GpuAllocator([a10(0)], lease_file=lease_file)
        assert allocator.try_lease("other", Resources(gpus=1)) is None  # the step still runs
    finally:
        step.kill()
        step.wait()
    assert allocator.try_lease("other", Resources(gpus=1)) is not None


def test_restore_and_hold_for_add_holders_to_the_shared_lease(tmp_path: Path) -> None:
    lease_file = lease_file_of(tmp_path)
    first = GpuAllocator([a10(0), a10(1)], lease_file=lease_file)
    lease = first.try_lease("step", Resources(gpus=1))
    assert lease is not None
    step = LeaseHolder(os.getppid(), started_since_boot(os.getppid()))
    first.hold_for("step", step)
    restarted = GpuAllocator([a10(0), a10(1)], lease_file=lease_file)
    restarted.restore(lease, step)
    document = json.loads(lease_file.read_text())
    holders = document["leases"]["step"]["holders"]
    assert [holder["pid"] for holder in holders] == [os.getpid(), os.getppid()]  # no duplicates
    restarted.release("step")
    assert json.loads(lease_file.read_text())["leases"] == {}


def test_cpu_only_leases_never_touch_the_lease_file(tmp_path: Path) -> None:
    allocator = GpuAllocator([a10(0)], lease_file=lease_file_of(tmp_path))
    assert allocator.try_lease("cpu", Resources(cpus=2)) is not None
    allocator.release("cpu")
    assert not lease_file_of(tmp_path).parent.exists()


def test_an_unreadable_lease_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lease_file = lease_file_of(tmp_path)
    lease_file.parent.mkdir(parents=True)
    lease_file.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        lease = GpuAllocator([a10(0)], lease_file=lease_file).try_lease("a", Resources(gpus=1))
    assert lease is not None and lease.device_indices == (0,)
    assert "unreadable GPU lease file" in caplog.text
    assert list(json.loads(lease_file.read_text())["leases"]) == ["a"]


def test_leasing_an_id_another_allocator_holds_returns_that_lease(tmp_path: Path) -> None:
    lease_file = lease_file_of(tmp_path)
    first = GpuAllocator([a10(0), a10(1)], lease_file=lease_file)
    lease = first.try_lease("step", Resources(gpus=1))
    again = GpuAllocator([a10(0), a10(1)], lease_file=lease_file).try_lease(
        "step", Resources(gpus=1)
    )
    assert again == lease  # idempotent across allocators: no second device
    assert GpuAllocator([a10(0), a10(1)], lease_file=lease_file).try_lease(
        "next", Resources(gpus=1)
    ) == GpuLease("next", (1,), 1.0, None)


def test_serve_and_consume_lease_in_the_settings_home_as_mlyard_run_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlyard.serving.replicas import lease_devices
    from mlyard.settings import load_settings

    monkeypatch.setattr("mlyard.platform.gpu_inventory.discover_gpus", lambda: [a10(0)])
    environments, release = lease_devices(1.0, 1, requester="Each consumer replica")
    try:
        # The file the local backend of `mlyard run` uses (it is built from the same settings).
        shared = json.loads(lease_file_of(load_settings().home).read_text())["leases"]
        assert [entry["devices"] for entry in shared.values()] == [[0]]
        assert environments[0]["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        release()
    assert json.loads(lease_file_of(load_settings().home).read_text())["leases"] == {}
