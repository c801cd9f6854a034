"""Run the model server: one replica in-process, or N replica processes sharing one port.

Each replica is a uvicorn server on its own socket bound with ``SO_REUSEPORT`` to the same address,
so the kernel spreads connections evenly over them (the gRPC port, when asked for, likewise),
and each holds its own GPU lease (its ``CUDA_VISIBLE_DEVICES``) or runs on CPU when no GPU was
asked for. SIGTERM drains: listening
stops, in-flight requests finish, then the process exits 0. The supervisor forwards SIGTERM to its
replicas and exits 0 once they all drained.

Run as ``python -m mlyard.serving.replicas`` it is one replica, configured by a JSON
``ReplicaSpec`` in ``MLYARD_SERVE_REPLICA_SPEC`` (the environment, not argv, since it holds the
token).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
from pydantic import BaseModel, Field
from starlette.types import ASGIApp

from mlyard.errors import MlyardError, ResourceError
from mlyard.models.registry import ResolvedModel
from mlyard.models.services import GPUS_ASSIGNED_VARIABLE
from mlyard.serving.app import DEFAULT_MAX_REQUEST_BYTES, AppOptions, create_app
from mlyard.serving.batching import BatchingConfig
from mlyard.serving.metrics import MULTIPROCESS_DIR_VARIABLE

logger = logging.getLogger(__name__)

REPLICA_SPEC_VARIABLE = "MLYARD_SERVE_REPLICA_SPEC"
#: The pid of the supervisor that started a replica: the replica stops once it has gone.
SUPERVISOR_VARIABLE = "MLYARD_SERVE_SUPERVISOR_PID"
#: Seconds a draining replica may take to finish in-flight requests before they are cancelled.
DRAIN_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class SharedReadiness:
    """Replicas' readiness as files in a directory the supervisor made: one per ready replica."""

    directory: Path
    expected: int

    def mark_ready(self) -> None:
        """Record that this replica is ready."""
        (self.directory / str(os.getpid())).touch()

    def all_ready(self) -> bool:
        """Whether every replica has recorded that it is ready."""
        return sum(1 for _ in self.directory.iterdir()) >= self.expected


class ReplicaSpec(BaseModel):
    """Everything one replica needs, passed from the CLI or the supervisor."""

    model_name: str
    model_version: str
    model_uri: str
    model_flavor: str
    tracking_uri: str
    registry_uri: str | None = Field(
        default=None, description="MLflow registry of the model; None: the tracking URI."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535, description="Port of the v2 gRPC service; None: no gRPC."
    )
    max_batch_size: int = Field(default=64, ge=1)
    max_queue_delay_ms: float = Field(default=2.0, ge=0)
    max_request_bytes: int = Field(default=DEFAULT_MAX_REQUEST_BYTES, ge=1)
    token: str | None = None
    device: str = "cpu"
    log_level: str = "warning"
    readiness_directory: str | None = Field(
        default=None, description="Where replicas record readiness; None for a lone server."
    )
    replica_count: int = Field(default=1, ge=1)


def serve(spec: ReplicaSpec, *, workers: int, gpus: float) -> int:
    """Serve until SIGTERM/SIGINT; the exit code (0 after a clean drain)."""
    environments, release = lease_devices(gpus, workers)
    try:
        if workers == 1:
            os.environ.update(environments[0])
            device = "cuda" if gpus > 0 else "cpu"
            sock = bind_socket(spec.host, spec.port, reuse_port=False)
            return run_replica(spec.model_copy(update={"device": device}), sock)
        return _supervise(spec, environments, gpus)
    finally:
        release()


def lease_devices(
    gpus: float,
    replicas: int,
    *,
    requester: str = "Each model server replica",
    home: Path | None = None,
) -> tuple[list[dict[str, str]], Callable[[], None]]:
    """One environment per replica (its ``CUDA_VISIBLE_DEVICES``) and a function releasing all.

    The leases are the machine's shared ones (under ``home``, default the settings' home), so
    steps of ``mlyard run`` and other servers or consumers never get the same GPU.
    """
    if gpus > 0 and os.environ.get(GPUS_ASSIGNED_VARIABLE) == "1":
        # In a pod whose GPUs the cluster assigned (its device plugin set them): lease none.
        return [{} for _ in range(replicas)], lambda: None
    if gpus <= 0:
        # No GPU asked for: hide GPUs so frameworks stay on CPU.
        return [{"CUDA_VISIBLE_DEVICES": ""} for _ in range(replicas)], lambda: None
    from mlyard.backends.local.gpu_allocator import GpuAllocator
    from mlyard.backends.local.gpu_leases import lease_file_of
    from mlyard.models.resources import Resources
    from mlyard.platform.gpu_inventory import discover_gpus
    from mlyard.settings import load_settings

    request = Resources(gpus=gpus)
    lease_file = lease_file_of(home or load_settings().home)
    allocator = GpuAllocator(discover_gpus(), lease_file=lease_file)
    allocator.check_satisfiable(
        request,
        requester=requester,
        fix="Lower --gpus (a fraction such as 0.5 shares one device), or run where such GPUs are.",
    )
    lease_ids: list[str] = []

    def release() -> None:
        for lease_id in lease_ids:
            allocator.release(lease_id)

    environments = []
    for index in range(replicas):
        lease_id = f"serve-{os.getpid()}-{index}"
        lease = allocator.try_lease(lease_id, request)
        if lease is None:
            release()
            raise ResourceError(
                f"Only {index} of {replicas} replicas fit on the GPUs with --gpus {gpus} each.",
                hint="Ask for fewer --workers or a smaller --gpus fraction.",
            )
        lease_ids.append(lease_id)
        environments.append(dict(lease.environment()))
    return environments, release


def bind_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6), optionally with ``SO_REUSEPORT``."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ResourceError(
            f"Could not bind {host}:{port}: {exc.strerror}.",
            hint="Pick another --port, or stop what is listening there.",
        ) from exc
    sock.set_inheritable(False)
    return sock


def run_replica(spec: ReplicaSpec, sock: socket.socket) -> int:
    """Load the model, serve on ``sock`` until SIGTERM, drain, return 0."""
    import mlflow

    from mlyard.serving.model_loading import load_servable_model

    mlflow.set_tracking_uri(spec.tracking_uri)
    mlflow.set_registry_uri(spec.registry_uri or spec.tracking_uri)
    resolved = ResolvedModel(
        name=spec.model_name,
        version=spec.model_version,
        uri=spec.model_uri,
        flavor=spec.model_flavor,
    )
    # Claim the gRPC port before loading the model, so a taken port fails at once and clearly;
    # gRPC binds it again with SO_REUSEPORT beside this never-listening socket.
    grpc_reservation = (
        bind_socket(spec.host, spec.grpc_port, reuse_port=True)
        if spec.grpc_port is not None
        else None
    )
    try:
        model = load_servable_model(resolved, device=spec.device)
        options = AppOptions(
            batching=BatchingConfig(spec.max_batch_size, spec.max_queue_delay_ms),
            max_request_bytes=spec.max_request_bytes,
            token=spec.token,
            replica_group=(
                SharedReadiness(Path(spec.readiness_directory), spec.replica_count)
                if spec.readiness_directory
                else None
            ),
            grpc_port=grpc_reservation.getsockname()[1] if grpc_reservation else None,
            grpc_host=spec.host,
            drain_seconds=DRAIN_TIMEOUT_SECONDS,
        )
        _serve_http(create_app(model, options), spec, sock)
    finally:
        if grpc_reservation is not None:
            grpc_reservation.close()
    return 0


def _serve_http(app: ASGIApp, spec: ReplicaSpec, sock: socket.socket) -> None:
    config = uvicorn.Config(
        app,
        log_level=spec.log_level,
        access_log=False,
        timeout_graceful_shutdown=int(DRAIN_TIMEOUT_SECONDS),
        lifespan="on",
    )
    sock.listen(2048)
    DrainingServer(config).run(sockets=[sock])


class DrainingServer(uvicorn.Server):
    """uvicorn's server, except that SIGTERM ends in exit 0 after the drain.

    uvicorn already stops listening, lets in-flight requests finish and runs the lifespan
    shutdown; it then re-raises the signal, which would make a clean drain look like a crash.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            self._captured_signals.remove(sig)


def _supervise(spec: ReplicaSpec, environments: list[dict[str, str]], gpus: float) -> int:
    # Reserve the port (resolving port 0) with a bound, never-listening socket: the kernel only
    # hands connections to the replicas' listening sockets in the same SO_REUSEPORT group.
    reservation = bind_socket(spec.host, spec.port, reuse_port=True)
    port = reservation.getsockname()[1]
    grpc_reservation = (
        bind_socket(spec.host, spec.grpc_port, reuse_port=True)
        if spec.grpc_port is not None
        else None
    )
    metrics_dir = tempfile.mkdtemp(prefix="mlyard-serve-metrics-")
    readiness_directory = Path(metrics_dir) / "ready"
    readiness_directory.mkdir()
    replica_spec = spec.model_copy(
        update={
            "port": port,
            "grpc_port": grpc_reservation.getsockname()[1] if grpc_reservation else None,
            "device": "cuda" if gpus > 0 else "cpu",
            "readiness_directory": str(readiness_directory),
            "replica_count": len(environments),
        }
    )
    children = []
    for environment in environments:
        env = {
            **os.environ,
            **environment,
            MULTIPROCESS_DIR_VARIABLE: metrics_dir,
            REPLICA_SPEC_VARIABLE: replica_spec.model_dump_json(),
            SUPERVISOR_VARIABLE: str(os.getpid()),
        }
        children.append(
            subprocess.Popen([sys.executable, "-m", "mlyard.serving.replicas"], env=env)
        )
    draining = crashed = False

    def forward(sig: int, _: FrameType | None) -> None:
        nonlocal draining
        draining = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not draining:
            if any(child.poll() is not None for child in children):
                logger.error("a replica exited; stopping the others")
                crashed = True
                forward(signal.SIGTERM, None)
                break
            time.sleep(0.2)
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reservation.close()
        if grpc_reservation is not None:
            grpc_reservation.close()
        _remove_tree(metrics_dir)
    return 0 if not crashed and all(code == 0 for code in codes) else 1


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _replica_main() -> int:
    from mlyard.platform.supervision import stop_when_orphaned

    spec = ReplicaSpec.model_validate_json(os.environ[REPLICA_SPEC_VARIABLE])
    logging.basicConfig(level=spec.log_level.upper())
    stop_when_orphaned(int(os.environ[SUPERVISOR_VARIABLE]))
    try:
        return run_replica(spec, bind_socket(spec.host, spec.port, reuse_port=True))
    except MlyardError as error:
        print(f"Error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(_replica_main())
