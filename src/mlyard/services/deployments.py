"""``mlyard serve`` / ``mlyard consume`` with ``--backend`` on a cluster: the use case.

The model is resolved here, once, to ``models:/NAME/VERSION``, so every replica serves the same
version however the alias moves later. The pods run the same command as a workstation does,
bound to the pod's IP; a server's token is random unless given, kept in a Secret, shown once
and written to ``MLYARD_HOME/services/NAME.token`` (0600). The backend must declare
``Capability.SERVICES``; the cluster side lives in ``backends/kubernetes/services.py`` (the
operations) and ``service_manifests.py`` (the objects). URLs that carry credentials (the
broker URLs of a consumer, a tracking URI with a password) are passed on as they are: the
manifests move them into the service's credentials Secret, never into the Deployment.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Capability
from mlyard.backends.registry import create_backend
from mlyard.errors import ConfigError
from mlyard.models.resources import Resources
from mlyard.models.services import ServiceKind, ServiceView
from mlyard.settings import Settings

if TYPE_CHECKING:
    from mlyard.backends.kubernetes.service_manifests import ServiceSpec
    from mlyard.backends.kubernetes.services import KubernetesServices

#: A service's name: a DNS-1123 label (it names a Deployment, a Service and their pods).
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,51}[a-z0-9])?$")
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
METRICS_PORT = 9090
#: ``--model noop`` of ``mlyard consume``: no model, the decoded inputs are the results.
NOOP_MODEL = "noop"


class ConsumerOptions(Protocol):
    """The options of ``mlyard consume`` a pod's command repeats (``ConsumerConfig``)."""

    @property
    def source(self) -> str: ...
    @property
    def sink(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def dead_letter(self) -> str: ...
    @property
    def decoder(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def max_wait(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def replicas(self) -> int: ...
    @property
    def gpus(self) -> float: ...
    @property
    def fps(self) -> float: ...
    @property
    def max_frames(self) -> int: ...


@dataclass(frozen=True)
class ServerOptions:
    """The options of ``mlyard serve`` that shape a replica."""

    model: str
    replicas: int = 1
    gpus: float = 0.0
    port: int = 8080
    grpc_port: int | None = None
    max_batch_size: int = 64
    max_queue_delay_ms: float = 2.0
    max_request_bytes: int = 16 * 1024 * 1024
    log_level: str = "warning"
    #: A token the user gave (--token-file or MLYARD_SERVE_TOKEN); None: a random one.
    token: str | None = None


@dataclass(frozen=True)
class Deployed:
    """What ``deploy_*`` did, for the CLI to report."""

    name: str
    backend: str
    model: str
    created: bool
    #: A token generated now (shown once), and the file it was written to.
    new_token: str | None = None
    token_file: Path | None = None


def default_service_name(model_name: str, kind: ServiceKind) -> str:
    """A DNS-1123 name from the model's (``Digits_Classifier`` -> ``digits-classifier``)."""
    base = _NOT_DNS.sub("-", model_name.lower()).strip("-")[:40].strip("-") or "model"
    if not base[0].isalpha():
        base = f"m-{base}"
    return base if kind == "server" else f"{base}-consumer"


def check_service_name(name: str) -> str:
    """``name`` when it is a valid service name; ``ConfigError`` saying why not."""
    if not _SERVICE_NAME.match(name):
        raise ConfigError(
            f"{name!r} cannot name a service: it names Kubernetes objects, so it must be lower "
            "case letters, digits and '-', start with a letter, end with a letter or digit, "
            "and be at most 53 characters.",
            hint="Pass --name with such a name, e.g. 'digits-server'.",
        )
    return name


@contextmanager
def cluster_services(
    settings: Settings, backend_name: str, what: str
) -> Iterator[KubernetesServices]:
    """The services of backend ``backend_name``; ``ResourceError`` when it runs none."""
    store = ArtifactStore.from_settings(settings)
    backend = create_backend(backend_name, settings, store)
    try:
        backend.require(Capability.SERVICES, what)
        from mlyard.backends.kubernetes.backend import KubernetesBackend
        from mlyard.backends.kubernetes.services import KubernetesServices

        if not isinstance(backend, KubernetesBackend):  # local services run in the foreground
            raise ConfigError(
                f"Backend {backend_name!r} ({backend.profile.type}) runs services on this "
                "machine, in the foreground.",
                hint="Run the command without --backend, or with a kubernetes profile.",
            )
        yield KubernetesServices(backend)
    finally:
        backend.close()


def _environment(settings: Settings) -> dict[str, str]:
    """What the pods need to find the registry and the objects messages name (values with
    credentials end up in the service's Secret, see ``service_manifests.split_credentials``)."""
    environment: dict[str, str] = {}
    if settings.tracking_uri:
        environment["MLYARD_TRACKING__URI"] = settings.tracking_uri
    # The pods load models from the registry, which may be another store than the runs'.
    if settings.registry_uri and settings.registry_uri != settings.tracking_uri:
        environment["MLYARD_TRACKING__REGISTRY_URI"] = settings.registry_uri
    storage = settings.storage
    if storage.artifacts:
        environment["MLYARD_STORAGE__ARTIFACTS"] = storage.artifacts
    if storage.endpoint_url:
        environment["MLYARD_STORAGE__ENDPOINT_URL"] = storage.endpoint_url
    if storage.region:
        environment["MLYARD_STORAGE__REGION"] = storage.region
    return environment


def server_spec(settings: Settings, options: ServerOptions, name: str | None) -> ServiceSpec:
    """The cluster service of ``mlyard serve``: one server per pod, ``--replicas`` pods."""
    from mlyard.backends.kubernetes.service_manifests import POD_IP_VARIABLE, ServiceSpec
    from mlyard.services.models import resolve_model_uri

    resolved = resolve_model_uri(settings, options.model)
    arguments = [
        "-m", "mlyard.cli", "serve", resolved.uri,
        "--host", f"$({POD_IP_VARIABLE})",
        "--port", str(options.port),
        "--gpus", f"{options.gpus:g}",
        "--max-batch-size", str(options.max_batch_size),
        "--max-queue-delay-ms", f"{options.max_queue_delay_ms:g}",
        "--max-request-bytes", str(options.max_request_bytes),
        "--log-level", options.log_level,
    ]  # fmt: skip
    ports = {"http": options.port}
    if options.grpc_port is not None:
        arguments += ["--grpc-port", str(options.grpc_port)]
        ports["grpc"] = options.grpc_port
    return ServiceSpec(
        name=check_service_name(name or default_service_name(resolved.name, "server")),
        kind="server",
        model=resolved.uri,
        replicas=options.replicas,
        resources=Resources(gpus=options.gpus),
        arguments=arguments,
        ports=ports,
        probe_port="http",
        ready_path="/v2/health/ready",
        live_path="/v2/health/live",
        environment=_environment(settings),
        uses_token=True,
    )


def consumer_spec(settings: Settings, config: ConsumerOptions, name: str | None) -> ServiceSpec:
    """The cluster service of ``mlyard consume``: one
    worker per pod, all in the source's consumer group.

    Probes: the worker starts its metrics endpoint only after the model is loaded and the
    broker connections are open, so an answer on ``/metrics`` means ready; it keeps answering
    while the process runs, which is what liveness can see without a worker heartbeat."""
    from mlyard.backends.kubernetes.service_manifests import (
        POD_IP_VARIABLE,
        POD_NAME_VARIABLE,
        ServiceSpec,
    )

    model_uri, model_name = config.model, "noop"
    if config.model != NOOP_MODEL:
        from mlyard.services.models import resolve_model_uri

        resolved = resolve_model_uri(settings, config.model)
        model_uri, model_name = resolved.uri, resolved.name
    arguments = [
        "-m", "mlyard.cli", "consume",
        "--source", config.source,
        "--sink", config.sink,
        "--dead-letter", config.dead_letter,
        "--model", model_uri,
        "--decoder", config.decoder,
        "--batch-size", str(config.batch_size),
        "--max-wait", f"{config.max_wait:g}",
        "--max-attempts", str(config.max_attempts),
        "--gpus", f"{config.gpus:g}",
        "--metrics-port", str(METRICS_PORT),
        "--metrics-host", f"$({POD_IP_VARIABLE})",
        "--consumer-name", f"$({POD_NAME_VARIABLE})",
        "--fps", f"{config.fps:g}",
        "--max-frames", str(config.max_frames),
    ]  # fmt: skip
    return ServiceSpec(
        name=check_service_name(name or default_service_name(model_name, "consumer")),
        kind="consumer",
        model=model_uri,
        replicas=config.replicas,
        resources=Resources(gpus=config.gpus),
        arguments=arguments,
        ports={"metrics": METRICS_PORT},
        probe_port="metrics",
        ready_path="/metrics",
        live_path="/metrics",
        environment=_environment(settings),
    )


def render_service(settings: Settings, backend_name: str, spec: ServiceSpec) -> str:
    """The manifests as YAML documents, made without reaching the cluster. The Secrets are
    not among them: a note says how to create them, with every password shown as ``***``."""
    import yaml

    from mlyard.backends.kubernetes.service_manifests import secrets_note

    with cluster_services(settings, backend_name, f"run a {spec.kind} service") as services:
        manifests = services.manifests(spec, offline=True)
    note = secrets_note(spec, manifests[0]["metadata"]["namespace"])
    text: str = yaml.safe_dump_all(manifests, sort_keys=False)
    return note + text


def deploy_service(
    settings: Settings, backend_name: str, spec: ServiceSpec, *, token: str | None = None
) -> Deployed:
    """Create or update the service on the cluster. A server without a given token gets a
    random one the first time (kept when the service is updated)."""
    with cluster_services(settings, backend_name, f"run a {spec.kind} service") as services:
        new_token = None
        if spec.uses_token and token is None:
            new_token = secrets.token_urlsafe(32)
        applied = services.apply(spec, token or new_token, replace_token=token is not None)
    token_file = None
    if new_token is not None and applied.token_stored:
        token_file = write_token_file(settings.home, spec.name, new_token)
    else:
        new_token = None  # the Secret existed: its token stays, and is not shown again
    return Deployed(
        name=spec.name,
        backend=backend_name,
        model=spec.model,
        created=applied.created,
        new_token=new_token,
        token_file=token_file,
    )


def write_token_file(home: Path, name: str, token: str) -> Path:
    """``home/services/NAME.token``, readable by its owner only."""
    directory = home / "services"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.token"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(token + "\n")
    path.chmod(0o600)  # an existing file keeps its mode through os.open
    return path


def list_cluster_services(
    settings: Settings, backend_name: str, name: str | None = None
) -> list[ServiceView]:
    """The services on the backend's cluster (or the one named)."""
    with cluster_services(settings, backend_name, "run services") as services:
        return services.list_services(name)


def cluster_service_logs(
    settings: Settings, backend_name: str, name: str, *, follow: bool
) -> Iterator[str]:
    """Lines of the service's pods, each led by its pod's name."""
    with cluster_services(settings, backend_name, "run services") as services:
        yield from services.logs(name, follow=follow)


def scale_cluster_service(settings: Settings, backend_name: str, name: str, replicas: int) -> None:
    """Set the service's replicas."""
    with cluster_services(settings, backend_name, "run services") as services:
        services.scale(name, replicas)


def stop_cluster_service(settings: Settings, backend_name: str, name: str) -> list[str]:
    """Delete the service's objects; what was deleted."""
    with cluster_services(settings, backend_name, "run services") as services:
        return services.stop(name)
