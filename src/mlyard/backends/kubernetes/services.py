"""Model servers and event consumers as replicated services on the cluster: an ``apps/v1``
Deployment whose pods run the same ``mlyard serve`` / ``mlyard consume`` command as on a
workstation (bound to the pod's IP), a ClusterIP Service in front of a server, and a Secret
holding the serving token (referenced by the pods, never written into a manifest).

The pods are shaped by the same pieces as step pods (``manifests.pod_spec``: image, pull
secrets, service account, node selector, tolerations, the store's credentials Secret and the
GPU translation of ``gpu_requests``), then given the service's command, ports and probes.
Every object carries ``app.kubernetes.io/managed-by: mlyard`` and ``mlyard.io/service: NAME``,
so ``mlyard services`` finds them by label, and applying a service that exists replaces it
(409 AlreadyExists adopts), so ``mlyard serve`` run twice updates instead of failing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlyard.backends.kubernetes.api import Manifest
from mlyard.backends.kubernetes.gpu_requests import GpuPlacement
from mlyard.backends.kubernetes.manifests import (
    AttemptObjects,
    claim_template_manifest,
    pod_spec,
)
from mlyard.backends.kubernetes.names import (
    BACKEND_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    label_value,
    selector,
)
from mlyard.backends.kubernetes.profile import KubernetesProfile
from mlyard.backends.kubernetes.states import parse_time
from mlyard.errors import NotFoundError
from mlyard.models.resources import Resources
from mlyard.models.services import (
    GPUS_ASSIGNED_VARIABLE,
    ServiceKind,
    ServiceReplica,
    ServiceView,
)

if TYPE_CHECKING:
    from mlyard.backends.kubernetes.backend import KubernetesBackend

SERVICE_LABEL = "mlyard.io/service"
SERVICE_KIND_LABEL = "mlyard.io/service-kind"
MODEL_ANNOTATION = "mlyard.io/model"
GPUS_ANNOTATION = "mlyard.io/gpus"
#: The pod's own address (downward API), which the command binds.
POD_IP_VARIABLE = "MLYARD_POD_IP"
POD_NAME_VARIABLE = "MLYARD_POD_NAME"
TOKEN_VARIABLE = "MLYARD_SERVE_TOKEN"
TOKEN_KEY = "token"
#: How long a replica may take to load its model and first answer its probe.
STARTUP_SECONDS = 600
_RESOURCE_ORDER = ("Secret", "ResourceClaimTemplate", "Deployment", "Service")


@dataclass(frozen=True)
class ServiceSpec:
    """A service as the cluster runs it; made by ``services/deployments.py`` from the CLI."""

    name: str
    kind: ServiceKind
    #: The model as resolved when deployed (``models:/NAME/VERSION``), shown by ``ls``.
    model: str
    replicas: int
    resources: Resources
    #: The container's arguments after the interpreter (``-m mlyard.cli serve ...``).
    arguments: Sequence[str]
    #: Named container ports (``http``, ``grpc``, ``metrics``).
    ports: Mapping[str, int]
    #: Port and path of the readiness/liveness probes and of Prometheus' scrape.
    probe_port: str
    ready_path: str
    live_path: str
    metrics_path: str = "/metrics"
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Whether the pods read the serving token from the service's Secret.
    uses_token: bool = False

    @property
    def token_secret(self) -> str:
        return f"{self.name[:57]}-token"


def service_labels(backend: str, spec: ServiceSpec) -> dict[str, str]:
    """The labels of every object of the service; the first two are its pods' selector."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        SERVICE_LABEL: spec.name,
        SERVICE_KIND_LABEL: spec.kind,
        BACKEND_LABEL: label_value(backend),
    }


def service_selector(name: str | None = None) -> str:
    """Every mlyard service, or the one named."""
    if name is None:  # the label exists: services only, not the Jobs of steps
        return f"{MANAGED_BY_LABEL}={MANAGED_BY},{SERVICE_LABEL}"
    return selector({MANAGED_BY_LABEL: MANAGED_BY, SERVICE_LABEL: name})


def _service_pod_spec(
    spec: ServiceSpec, objects: AttemptObjects, profile: KubernetesProfile
) -> Manifest:
    pod = pod_spec(objects, profile)
    pod["restartPolicy"] = "Always"  # a Deployment's pods are restarted, unlike a step's
    container = pod["containers"][0]
    container["name"] = spec.kind
    container["command"] = [profile.python, *spec.arguments]
    env: list[Manifest] = [
        {"name": POD_IP_VARIABLE, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": POD_NAME_VARIABLE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *container["env"],
    ]
    if spec.uses_token:
        env.append(
            {
                "name": TOKEN_VARIABLE,
                "valueFrom": {"secretKeyRef": {"name": spec.token_secret, "key": TOKEN_KEY}},
            }
        )
    if objects.placement.uses_gpu:
        env.append({"name": GPUS_ASSIGNED_VARIABLE, "value": "1"})
    container["env"] = env
    container["ports"] = [
        {"name": name, "containerPort": port, "protocol": "TCP"}
        for name, port in spec.ports.items()
    ]
    # Loading a model can take minutes: the startup probe holds liveness off until the
    # endpoint first answers (up to STARTUP_SECONDS), then liveness restarts a replica that
    # stopped answering, and readiness gates traffic.
    ready = {"httpGet": {"path": spec.ready_path, "port": spec.probe_port}}
    live = {"httpGet": {"path": spec.live_path, "port": spec.probe_port}}
    container["startupProbe"] = {
        **live,
        "periodSeconds": 2,
        "failureThreshold": STARTUP_SECONDS // 2,
    }
    container["readinessProbe"] = {**ready, "periodSeconds": 2, "failureThreshold": 3}
    container["livenessProbe"] = {**live, "periodSeconds": 10, "failureThreshold": 3}
    pod["terminationGracePeriodSeconds"] = 45  # the server drains for up to 30 s on SIGTERM
    return pod


def service_manifests(
    spec: ServiceSpec, backend: str, profile: KubernetesProfile, placement: GpuPlacement
) -> list[Manifest]:
    """The service's objects in creation order, without its Secret (which holds the token):
    a ResourceClaimTemplate with DRA, the Deployment, and a ClusterIP Service for a server."""
    labels = service_labels(backend, spec)
    objects = AttemptObjects(
        job_name=spec.name,
        namespace=profile.namespace,
        labels=labels,
        attempt_id=spec.name,
        task_arguments=(),
        resources=spec.resources,
        placement=placement,
        environment=dict(spec.environment),
    )
    pod_labels = {k: labels[k] for k in (MANAGED_BY_LABEL, SERVICE_LABEL)}
    annotations = {MODEL_ANNOTATION: spec.model, GPUS_ANNOTATION: _gpus_text(spec.resources)}
    metadata = {
        "name": spec.name,
        "namespace": profile.namespace,
        "labels": labels,
        "annotations": annotations,
    }
    deployment: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(spec.ports[spec.probe_port]),
                        "prometheus.io/path": spec.metrics_path,
                        **annotations,
                    },
                },
                "spec": _service_pod_spec(spec, objects, profile),
            },
        },
    }
    manifests: list[Manifest] = []
    claim = claim_template_manifest(objects)
    if claim is not None:
        manifests.append(claim)
    manifests.append(deployment)
    if spec.kind == "server":
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {**metadata, "annotations": dict(annotations)},
                "spec": {
                    "type": "ClusterIP",
                    "selector": pod_labels,
                    "ports": [
                        {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                        for name, port in spec.ports.items()
                        if name != "metrics"
                    ],
                },
            }
        )
    return manifests


def token_secret_manifest(spec: ServiceSpec, backend: str, namespace: str, token: str) -> Manifest:
    """The Secret the pods read the serving token from (created, never printed)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": spec.token_secret,
            "namespace": namespace,
            "labels": service_labels(backend, spec),
        },
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def _gpus_text(resources: Resources) -> str:
    return "none" if resources.gpus == 0 else resources.describe()


@dataclass(frozen=True)
class AppliedService:
    """What ``apply`` did: whether the Deployment is new, and whether a token was stored."""

    created: bool
    token_stored: bool


class KubernetesServices:
    """The services of one Kubernetes backend profile: apply, list, logs, scale, stop."""

    def __init__(self, backend: KubernetesBackend) -> None:
        self.backend = backend
        self.profile = backend.k8s

    def manifests(self, spec: ServiceSpec, *, offline: bool) -> list[Manifest]:
        """The service's manifests; ``offline`` (dry runs) reads no node inventory."""
        placement = self.backend.placement(spec.resources, offline=offline)
        return service_manifests(spec, self.backend.name, self.profile, placement)

    def apply(self, spec: ServiceSpec, token: str | None, *, replace_token: bool) -> AppliedService:
        """Create the service's objects, or replace those that exist (409 adopts). A token
        is stored in a new Secret, or replaces an existing one's with ``replace_token``.
        Objects this call created are deleted again when a later one is refused."""
        api = self.backend.api
        self.backend.check_resources(spec.resources)  # namespace, Secret, nodes that fit
        created_now: list[tuple[str, str]] = []
        token_stored = False
        outcome_created = False
        try:
            if token is not None:
                secret = token_secret_manifest(
                    spec, self.backend.name, self.profile.namespace, token
                )
                existing, created = api.create(secret)
                if created:
                    created_now.append(("Secret", spec.token_secret))
                    token_stored = True
                elif replace_token:
                    api.replace(secret, existing["metadata"]["resourceVersion"])
                    token_stored = True
            for manifest in self.manifests(spec, offline=False):
                existing, created = api.create(manifest)
                name = manifest["metadata"]["name"]
                if created:
                    created_now.append((manifest["kind"], name))
                    outcome_created = outcome_created or manifest["kind"] == "Deployment"
                    continue
                if manifest["kind"] == "Service":  # its cluster IP cannot change
                    manifest["spec"]["clusterIP"] = existing["spec"].get("clusterIP")
                api.replace(manifest, existing["metadata"]["resourceVersion"])
        except Exception:
            for kind, name in reversed(created_now):  # nothing half-created left behind
                api.delete(kind, name)
            raise
        return AppliedService(created=outcome_created, token_stored=token_stored)

    def _deployments(self, name: str | None) -> list[Manifest]:
        found = self.backend.api.list_objects("Deployment", service_selector(name))
        if name is not None and not found:
            known = [d["metadata"]["name"] for d in self._deployments(None)]
            raise NotFoundError(
                f"Backend {self.backend.name!r} runs no service {name!r} in namespace "
                f"{self.profile.namespace!r}.",
                hint=f"Its services: {', '.join(sorted(known)) or 'none'} (`mlyard services ls`).",
            )
        return found

    def list_services(self, name: str | None = None) -> list[ServiceView]:
        """The services (or the one named) with their pods: three list requests in all."""
        api = self.backend.api
        deployments = self._deployments(name)
        pods = api.list_objects("Pod", service_selector(name))
        services = {
            s["metadata"]["name"]: s for s in api.list_objects("Service", service_selector(name))
        }
        return [
            self._view(d, pods, services.get(d["metadata"]["name"]))
            for d in sorted(deployments, key=lambda d: str(d["metadata"]["name"]))
        ]

    def _view(
        self, deployment: Manifest, pods: list[Manifest], service: Manifest | None
    ) -> ServiceView:
        metadata = deployment["metadata"]
        name = metadata["name"]
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        template = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p.get("name"): p["containerPort"] for p in template.get("ports") or []}
        replicas = [
            _replica(pod, ports)
            for pod in pods
            if (pod["metadata"].get("labels") or {}).get(SERVICE_LABEL) == name
        ]
        address = None
        if service is not None:
            service_ports: list[Manifest] = service["spec"].get("ports") or [{}]
            port = service_ports[0].get("port")
            address = f"{name}.{self.profile.namespace}.svc:{port}"
            cluster_ip = service["spec"].get("clusterIP")
            if cluster_ip:
                address += f" ({cluster_ip})"
        status = deployment.get("status") or {}
        created = metadata.get("creationTimestamp")
        return ServiceView(
            name=name,
            kind="consumer" if labels.get(SERVICE_KIND_LABEL) == "consumer" else "server",
            backend=self.backend.name,
            model=annotations.get(MODEL_ANNOTATION, "?"),
            replicas=int(deployment["spec"].get("replicas", 1)),
            ready=int(status.get("readyReplicas") or 0),
            address=address,
            image=template.get("image"),
            gpus=annotations.get(GPUS_ANNOTATION, "none"),
            started_at=parse_time(created) if created else None,
            pods=sorted(replicas, key=lambda r: r.name),
        )

    def logs(self, name: str, *, follow: bool) -> Iterator[str]:
        """The lines of every pod of the service, each led by its pod's name; with ``follow``,
        as they come, until every pod's stream ends."""
        self._deployments(name)
        pods = self.backend.api.list_objects("Pod", service_selector(name))
        names = sorted(p["metadata"]["name"] for p in pods)
        if not follow:
            for pod in names:
                yield from self._pod_lines(pod, follow=False)
            return
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(pod: str) -> None:
            try:
                for line in self._pod_lines(pod, follow=True):
                    lines.put(line)
            finally:
                lines.put(None)

        for pod in names:
            threading.Thread(target=pump, args=(pod,), daemon=True).start()
        open_streams = len(names)
        while open_streams:
            line = lines.get()
            if line is None:
                open_streams -= 1
            else:
                yield line

    def _pod_lines(self, pod: str, *, follow: bool) -> Iterator[str]:
        pending = b""
        for chunk in self.backend.api.pod_log(pod, follow=follow):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield f"[{pod}] {line.decode(errors='replace')}"
        if pending:
            yield f"[{pod}] {pending.decode(errors='replace')}"

    def scale(self, name: str, replicas: int) -> None:
        """Set the Deployment's replicas through its ``scale`` subresource."""
        self._deployments(name)
        self.backend.api.merge_patch(
            "Deployment", name, {"spec": {"replicas": replicas}}, subresource="scale"
        )

    def stop(self, name: str) -> list[str]:
        """Delete the service's Deployment (and its pods), Service, Secret and claim
        template; the names of what was deleted."""
        api = self.backend.api
        self._deployments(name)
        deleted = []
        for kind in reversed(_RESOURCE_ORDER):
            for found in api.list_objects(kind, service_selector(name)):
                api.delete(kind, found["metadata"]["name"])
                deleted.append(f"{kind}/{found['metadata']['name']}")
        return deleted


def _replica(pod: Manifest, ports: dict[str | None, Any]) -> ServiceReplica:
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    containers = status.get("containerStatuses") or []
    waiting = next(
        (
            c["state"]["waiting"].get("reason")
            for c in containers
            if "waiting" in c.get("state", {})
        ),
        None,
    )
    ip = status.get("podIP")
    port = ports.get("http") or ports.get("metrics")
    return ServiceReplica(
        name=pod["metadata"]["name"],
        ready=conditions.get("Ready") == "True",
        address=f"{ip}:{port}" if ip and port else ip,
        phase=waiting or status.get("phase"),
        restarts=sum(int(c.get("restartCount") or 0) for c in containers),
    )
