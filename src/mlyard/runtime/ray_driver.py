"""``python -m mlyard.runtime.ray_driver --nodes N -- COMMAND``: boot a Ray cluster across a
SLURM allocation and run COMMAND (the step's runtime) as its driver.

The head runs on this node (the job's first), one worker per other node through ``srun``; the
step starts once every node has joined, with ``RAY_ADDRESS`` set so that its ``ray.init()``
attaches to this cluster. Every Ray process belongs to this job and is stopped when the step
ends or the job is cancelled, so nothing outlives the allocation and no ``ray stop`` touches
another job's cluster on a shared node.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from types import FrameType

from mlyard.errors import MissingExtraError
from mlyard.extras import require_extra

#: Exit status when the Ray cluster could not be started; the job log says why.
RAY_START_FAILED_EXIT = 98
#: Ray's GCS port for this job: derived from the job id so jobs sharing a node do not collide.
_PORT_BASE = 40000
_STOP_GRACE_SECONDS = 10.0


class RayStartError(Exception):
    """The cluster did not come up; the message says what was missing."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)  # scancel: stop the cluster on the way out
    processes: list[subprocess.Popen[bytes]] = []
    try:
        try:
            address = start_cluster(args.nodes, args.cpus, args.gpus, processes)
            wait_for_nodes(address, args.nodes, args.timeout, processes)
        except RayStartError as error:
            print(f"mlyard: the Ray cluster did not start: {error}", file=sys.stderr, flush=True)
            return RAY_START_FAILED_EXIT
        print(f"mlyard: Ray cluster of {args.nodes} node(s) at {address}", flush=True)
        status = subprocess.call(args.command, env={**os.environ, "RAY_ADDRESS": address})
    finally:
        stop(processes)
    if status == 0:  # keep Ray's logs only where something went wrong
        shutil.rmtree(session_directory(_job_id()), ignore_errors=True)
    return status


def start_cluster(
    nodes: int, cpus: int, gpus: int, processes: list[subprocess.Popen[bytes]]
) -> str:
    """Start the head here and the workers on the other nodes; return the cluster address."""
    try:
        require_extra("ray", needed_by="The Ray launcher (in the job's environment)")
    except MissingExtraError as error:
        raise RayStartError(error.message) from error
    import ray.util

    command = ray_executable()
    host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    job_id = _job_id()
    port = _PORT_BASE + job_id % 20000
    address = f"{host}:{port}"
    node_options = [
        f"--num-cpus={cpus}",
        f"--num-gpus={gpus}",
        "--disable-usage-stats",
        "--block",
    ]
    head = [
        command,
        "start",
        "--head",
        f"--node-ip-address={host}",
        f"--port={port}",
        "--include-dashboard=false",
        # Ray's default /tmp/ray belongs to whoever used it first on a shared node.
        f"--temp-dir={session_directory(job_id)}",
        *node_options,
    ]
    processes.append(subprocess.Popen(head, env=_ray_environment(), start_new_session=True))
    if nodes > 1:
        workers = [
            "srun",
            f"--nodes={nodes - 1}",
            f"--ntasks={nodes - 1}",
            "--ntasks-per-node=1",
            f"--cpus-per-task={cpus}",
            f"--exclude={os.environ.get('SLURMD_NODENAME', host)}",
            "--overlap",
            command,
            "start",
            f"--address={address}",
            *node_options,
        ]
        processes.append(subprocess.Popen(workers, env=_ray_environment(), start_new_session=True))
    return address


def wait_for_nodes(
    address: str, nodes: int, timeout: float, processes: Sequence[subprocess.Popen[bytes]]
) -> None:
    """Return once ``nodes`` Ray nodes are alive; fail early when a start command exits."""
    import ray

    deadline = time.monotonic() + timeout
    alive = 0
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RayStartError(
                    f"`{' '.join(map(str, process.args))}` exited with status "  # type: ignore[arg-type]
                    f"{process.returncode}; its output is above."
                )
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            try:
                listed: list[dict[str, object]] = ray.nodes()  # type: ignore[no-untyped-call]
                alive = sum(1 for node in listed if node.get("Alive"))
            finally:
                ray.shutdown()
        except ConnectionError:
            alive = 0
        if alive >= nodes:
            return
        time.sleep(1.0)
    raise RayStartError(
        f"{alive} of {nodes} node(s) joined within {timeout:g} s. Check that the nodes reach "
        "each other on the Ray ports and that ray is installed where the setup lines point."
    )


def session_directory(job_id: int) -> str:
    """This job's own Ray directory (sockets, logs), short enough for Unix socket paths."""
    return os.path.join(tempfile.gettempdir(), f"ray-{job_id}")  # noqa: PTH118


def ray_executable() -> str:
    """``ray`` from this interpreter's environment first, so head and workers match the driver."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")  # noqa: PTH118, PTH120
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("ray")
    if found is None:
        raise RayStartError(
            "the `ray` command is not installed; install mlyard[ray] in the job's environment."
        )
    return found


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each start command's process group (Ray's own processes with it), then SIGKILL
    what is left after a grace period."""
    for process in reversed(processes):
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for process in processes:
        _signal_group(process, signal.SIGKILL)


def _job_id() -> int:
    return int(os.environ.get("SLURM_JOB_ID", "0"))


def _ray_environment() -> dict[str, str]:
    # The step has ended when the cluster stops: skip Ray's drain period (meant for Serve
    # replicas), so the job, and the user waiting on it, ends at once.
    return {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlyard.runtime.ray_driver")
    parser.add_argument("--nodes", type=int, default=1, help="Nodes of the allocation.")
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per node for Ray.")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per node for Ray.")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="Seconds to wait for every node to join."
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the driver command.")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("give the driver command after --")
    return args


if __name__ == "__main__":
    sys.exit(main())
