"""What sharing GPU leases between processes costs: the lease file against in-process leases.

``.venv/bin/python benchmarks/gpu_leases/run.py [--repetitions N] [--no-write]`` times one GPU
lease and its release through the local backend's allocator, with the machine's lease file
(``gpu_leases.FileLeases``, what ``mlyard run``, ``serve`` and ``consume`` now share) and, as the
peer, with in-process leases only (what each process had before, blind to the others). The
inventory is made up (no NVML call is timed). Writes the "## GPU leases" section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "src"))

from mlyard.backends.local.gpu_allocator import GpuAllocator  # noqa: E402
from mlyard.backends.local.gpu_leases import (  # noqa: E402
    FileLeases,
    GpuLease,
    HeldLease,
    LeaseHolder,
    lease_file_of,
)
from mlyard.models.resources import Resources  # noqa: E402
from mlyard.platform.gpu_inventory import GpuDevice  # noqa: E402

RESULTS = REPOSITORY / "benchmarks" / "RESULTS.md"
SECTION = "## GPU leases"
GIB = 1024**3
DEVICES = [GpuDevice(index, f"GPU-{index}", "NVIDIA A100", 80 * GIB) for index in range(8)]
WHOLE = Resources(gpus=1)
QUARTER = Resources(gpus=0.25)

#: A second process leasing and releasing the one GPU as fast as it can, N times.
CONTENDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from mlyard.backends.local.gpu_allocator import GpuAllocator
from mlyard.models.resources import Resources
from mlyard.platform.gpu_inventory import GpuDevice
allocator = GpuAllocator([GpuDevice(0, "GPU-0", "NVIDIA A100", 80 * 2**30)],
                         lease_file=Path(sys.argv[1]))
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.0005)
held = 0
started = time.perf_counter()
for turn in range(int(sys.argv[4])):
    if allocator.try_lease(f"{sys.argv[5]}-{turn}", Resources(gpus=0.25)) is not None:
        held += 1
        allocator.release(f"{sys.argv[5]}-{turn}")
print(time.perf_counter() - started, held, flush=True)
"""


def per_operation_us(operation: Callable[[int], None], count: int) -> float:
    """Median microseconds of ``operation`` over ``count`` calls, in 5 batches."""
    batches = []
    for batch in range(5):
        started = time.perf_counter()
        for turn in range(count // 5):
            operation(batch * count + turn)
        batches.append((time.perf_counter() - started) / (count // 5) * 1e6)
    return statistics.median(batches)


def lease_and_release(allocator: GpuAllocator, resources: Resources) -> Callable[[int], None]:
    def operation(turn: int) -> None:
        lease_id = f"step-{turn}"
        assert allocator.try_lease(lease_id, resources) is not None
        allocator.release(lease_id)

    return operation


def gpu_step(allocator: GpuAllocator, holder: LeaseHolder) -> Callable[[int], None]:
    """What the local backend does per GPU step: lease, the step's process joins, release."""

    def operation(turn: int) -> None:
        lease_id = f"step-{turn}"
        assert allocator.try_lease(lease_id, WHOLE) is not None
        allocator.hold_for(lease_id, holder)
        allocator.release(lease_id)

    return operation


def single_process_rows(home: Path, count: int) -> list[tuple[str, float, float]]:
    """(case, peer µs, shared-file µs) for one process leasing alone."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        time.sleep(0.2)
        import psutil

        other = LeaseHolder(sleeper.pid, psutil.Process(sleeper.pid).create_time())
        rows = []
        for case, resources, others in (
            ("a whole GPU, no other lease", WHOLE, 0),
            ("a quarter GPU, no other lease", QUARTER, 0),
            ("a quarter GPU, 16 leases of another live process", QUARTER, 16),
        ):
            lease_file = lease_file_of(home / f"case-{len(rows)}")
            with FileLeases(lease_file).open() as leases:
                for index in range(others):
                    lease = GpuLease(f"other-{index}", (index % 4 + 4,), 0.25, None)
                    leases[lease.lease_id] = HeldLease(lease, (other,))
            memory = GpuAllocator(DEVICES)
            shared = GpuAllocator(DEVICES, lease_file=lease_file)
            for held in range(others):  # the peer sees the same leases, in its own memory
                memory.restore(GpuLease(f"other-{held}", (held % 4 + 4,), 0.25, None))
            peer = per_operation_us(lease_and_release(memory, resources), count)
            mine = per_operation_us(lease_and_release(shared, resources), count)
            rows.append((case, peer, mine))
        step_file = lease_file_of(home / "step")
        peer = per_operation_us(gpu_step(GpuAllocator(DEVICES), other), count)
        mine = per_operation_us(gpu_step(GpuAllocator(DEVICES, lease_file=step_file), other), count)
        rows.append(("a GPU step's bookkeeping (lease, step joins, release)", peer, mine))
        return rows
    finally:
        sleeper.kill()
        sleeper.wait()


def contention(home: Path, processes: int, count: int) -> tuple[float, int]:
    """Lease+release pairs per second of ``processes`` processes on one GPU's file at once,
    and how many leases they got in all."""
    lease_file = lease_file_of(home / f"contention-{processes}")
    lease_file.parent.mkdir(parents=True, exist_ok=True)
    go = home / f"go-{processes}"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CONTENDER,
                str(lease_file),
                str(go),
                str(REPOSITORY / "src"),
                str(count),
                f"p{index}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(processes)
    ]
    time.sleep(2.0)  # all imported and waiting
    go.touch()
    outputs = [child.communicate()[0].split() for child in children]
    slowest = max(float(seconds) for seconds, _ in outputs)
    return processes * count / slowest, sum(int(held) for _, held in outputs)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{model}, {os.cpu_count()} cores (shared with other work), Linux "
        f"{platform.release()}, Python {platform.python_version()}, lease files in "
        f"{tempfile.gettempdir()}"
    )


def report(rows: list[tuple[str, float, float]], contended: list[tuple[int, float, int]]) -> str:
    lines = [
        SECTION,
        "",
        "Command: `.venv/bin/python benchmarks/gpu_leases/run.py`  ",
        f"Machine: {machine()}  ",
        "Peer: the same allocator with in-process leases only (what each mlyard process had "
        "before the lease file, blind to the leases of every other process). Made-up inventory "
        "of 8 GPUs; median of 5 batches.",
        "",
        "| one lease and its release | in-process (peer) µs | shared lease file µs | extra µs |",
        "|---|---:|---:|---:|",
    ]
    for case, peer, mine in rows:
        lines.append(f"| {case} | {peer:.1f} | {mine:.1f} | {mine - peer:.1f} |")
    lines += [
        "",
        "Processes leasing a quarter of the one GPU and releasing it, all at once on one lease "
        "file (each decision under the file's lock):",
        "",
        "| processes | lease+release pairs/s, all together | leases granted |",
        "|---:|---:|---:|",
    ]
    for processes, rate, held in contended:
        lines.append(f"| {processes} | {rate:,.0f} | {held:,} |")
    lines += [
        "",
        "CPU-only steps never touch the file, so the per-step overhead of the Embedded core "
        "section is unchanged; a GPU step pays the last row of the first table once. Most of "
        "the extra time is the atomic replacement of the lease file (a rename over the old "
        "file, which ext4 flushes first), kept so that a process killed while writing never "
        "leaves a half-written file.",
    ]
    return "\n".join(lines) + "\n"


def replace_section(results: Path, section: str) -> None:
    """Replace this benchmark's section of RESULTS.md, leaving the others alone."""
    current = results.read_text() if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        current = pattern.sub(lambda _: section.strip() + "\n\n", current, count=1)
    else:
        current = current.rstrip() + "\n\n" + section.strip() + "\n"
    results.write_text(current.rstrip() + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=2000, help="Leases timed per case.")
    parser.add_argument("--no-write", action="store_true", help="Print only.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        rows = single_process_rows(home, args.repetitions)
        contended = [(n, *contention(home, n, args.repetitions)) for n in (1, 2, 4)]
    text = report(rows, contended)
    print(text)
    if not args.no_write:
        replace_section(RESULTS, text)
    print(json.dumps({"rows": rows, "contended": contended}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
