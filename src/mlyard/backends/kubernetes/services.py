"""The services of a Kubernetes backend profile, as ``mlyard serve`` / ``mlyard consume
--backend`` and ``mlyard services`` use them: apply, list, logs, scale and stop.

The objects themselves are built in ``service_manifests.py``. Every object carries
``app.kubernetes.io/managed-by: mlyard`` and ``mlyard.io/service: NAME``, so they are found by
label, and applying a service that exists replaces it (409 AlreadyExists adopts), so ``mlyard
serve`` run twice updates instead of failing. Its two Secrets (the serving token, the URLs that
carry credentials) are created or replaced by the same apply and deleted by ``stop``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlyard.backends.kubernetes.manifests import Manifest
from mlyard.backends.kubernetes.service_manifests import (
    GPUS_ANNOTATION,
    MODEL_ANNOTATION,
    RESOURCE_ORDER,
    SECRETS_VERSION_ANNOTATION,
    SERVICE_KIND_LABEL,
    SERVICE_LABEL,
    ServiceSpec,
    credentials_secret_manifest,
    service_manifests,
    service_selector,
    token_secret_manifest,
)
from mlyard.backends.kubernetes.states import parse_time
from mlyard.errors import NotFoundError
from mlyard.models.services import ServiceReplica, ServiceView

if TYPE_CHECKING:
    from mlyard.backends.kubernetes.backend import KubernetesBackend


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
        is stored in a new Secret, or replaces an existing one's with ``replace_token``; the
        credentials Secret is always made to hold what the spec carries now (and deleted when
        it carries none). Objects this call created are deleted again when a later one is
        refused."""
        api = self.backend.api
        self.backend.check_resources(spec.resources)  # namespace, Secret, nodes that fit
        created_now: list[tuple[str, str]] = []
        token_stored = False
        outcome_created = False
        versions: list[str] = []  # of the Secrets the pods read, to roll them on a change
        credentials = credentials_secret_manifest(spec, self.backend.name, self.profile.namespace)
        try:
            if token is not None:
                secret = token_secret_manifest(
                    spec, self.backend.name, self.profile.namespace, token
                )
                stored, created = api.create(secret)
                if created:
                    created_now.append(("Secret", spec.token_secret))
                    token_stored = True
                elif replace_token:
                    stored = api.replace(secret, stored["metadata"]["resourceVersion"])
                    token_stored = True
                versions.append(str(stored["metadata"].get("resourceVersion", "")))
            if credentials is not None:
                stored, created = api.create(credentials)
                if created:
                    created_now.append(("Secret", spec.credentials_secret))
                else:
                    stored = api.replace(credentials, stored["metadata"]["resourceVersion"])
                versions.append(str(stored["metadata"].get("resourceVersion", "")))
            for manifest in self.manifests(spec, offline=False):
                if manifest["kind"] == "Deployment" and versions:
                    template = manifest["spec"]["template"]["metadata"]
                    template["annotations"][SECRETS_VERSION_ANNOTATION] = ",".join(versions)
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
        if credentials is None:  # no pod reads it any more: no stale credentials left
            api.delete("Secret", spec.credentials_secret)
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
        for kind in reversed(RESOURCE_ORDER):
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
