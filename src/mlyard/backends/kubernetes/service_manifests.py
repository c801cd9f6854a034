"""The objects of a model server or event consumer on the cluster, built from a
``ServiceSpec``: an ``apps/v1`` Deployment whose pods run the same ``mlyard serve`` /
``mlyard consume`` command as on a workstation (bound to the pod's IP), a ClusterIP Service in
front of a server, a ResourceClaimTemplate with DRA, and the two Secrets the pods read: the
serving token and the service's credentials.

Pure, as ``manifests.py`` is for steps: the pods are shaped by the same ``pod_spec`` (image,
pull secrets, service account, node selector, tolerations, the store's credentials Secret and
the GPU translation of ``gpu_requests``), then given the service's command, ports and probes.
No credential is ever written into a Deployment: every argument or environment value that
carries one (``credentials.carries_credentials``: a URL with a password or user, a secret query
option) goes into the Secret ``NAME-credentials``, read by ``secretKeyRef`` variables that the
arguments name as ``$(VAR)`` (the kubelet expands them from the container's environment).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mlyard.backends.kubernetes.credentials import carries_credentials, redact
from mlyard.backends.kubernetes.gpu_requests import GpuPlacement
from mlyard.backends.kubernetes.manifests import (
    AttemptObjects,
    Manifest,
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
from mlyard.models.resources import Resources
from mlyard.models.services import GPUS_ASSIGNED_VARIABLE, ServiceKind

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
#: Creation order; ``stop`` deletes in reverse.
RESOURCE_ORDER = ("Secret", "ResourceClaimTemplate", "Deployment", "Service")
#: The Secrets' resourceVersions on the pod template: a changed token or credential rolls the
#: pods, which read Secrets only when they start.
SECRETS_VERSION_ANNOTATION = "mlyard.io/secrets-version"
#: Variables that carry an argument's credentials: MLYARD_SECRET_<OPTION>.
SECRET_ARGUMENT_PREFIX = "MLYARD_SECRET_"


@dataclass(frozen=True)
class ServiceSpec:
    """A service as the cluster runs it; made by ``services/deployments.py`` from the CLI."""

    name: str
    kind: ServiceKind
    #: The model as resolved when deployed (``models:/NAME/VERSION``), shown by ``ls``.
    model: str
    replicas: int
    resources: Resources
    #: The container's arguments after the interpreter (``-m mlyard.cli serve ...``); those
    #: carrying credentials are moved into the credentials Secret (``split_credentials``).
    arguments: Sequence[str]
    #: Named container ports (``http``, ``grpc``, ``metrics``).
    ports: Mapping[str, int]
    #: Port and path of the readiness/liveness probes and of Prometheus' scrape.
    probe_port: str
    ready_path: str
    live_path: str
    metrics_path: str = "/metrics"
    #: Variables of the pods; values carrying credentials go into the credentials Secret.
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Whether the pods read the serving token from the service's Secret.
    uses_token: bool = False

    @property
    def token_secret(self) -> str:
        return f"{self.name[:57]}-token"

    @property
    def credentials_secret(self) -> str:
        return f"{self.name}-credentials"


@dataclass(frozen=True)
class SplitCredentials:
    """A spec's arguments and environment with every credential moved out: ``arguments``
    name them as ``$(VAR)``, ``secret`` maps each VAR to its value (the Secret's data)."""

    arguments: list[str]
    environment: dict[str, str]
    secret: dict[str, str]


def split_credentials(spec: ServiceSpec) -> SplitCredentials:
    """Move the values carrying credentials out of the spec's arguments and environment.
    An argument's variable is named after the option before it (``--source`` ->
    ``MLYARD_SECRET_SOURCE``); an environment variable keeps its name."""
    arguments: list[str] = []
    secret: dict[str, str] = {}
    for index, argument in enumerate(spec.arguments):
        if not carries_credentials(argument):
            arguments.append(argument)
            continue
        option = spec.arguments[index - 1] if index else ""
        stem = re.sub(r"[^A-Z0-9]+", "_", option.upper()).strip("_") if option[:2] == "--" else ""
        variable = f"{SECRET_ARGUMENT_PREFIX}{stem or f'ARG_{index}'}"
        if variable in secret:
            variable = f"{variable}_{index}"
        secret[variable] = argument
        arguments.append(f"$({variable})")
    environment: dict[str, str] = {}
    for name, value in spec.environment.items():
        if carries_credentials(value):
            secret[name] = value
        else:
            environment[name] = value
    return SplitCredentials(arguments, environment, secret)


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


def _secret_variable(name: str, secret: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _service_pod_spec(
    spec: ServiceSpec, split: SplitCredentials, objects: AttemptObjects, profile: KubernetesProfile
) -> Manifest:
    pod = pod_spec(objects, profile)
    pod["restartPolicy"] = "Always"  # a Deployment's pods are restarted, unlike a step's
    container = pod["containers"][0]
    container["name"] = spec.kind
    container["command"] = [profile.python, *split.arguments]
    env: list[Manifest] = [
        {"name": POD_IP_VARIABLE, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": POD_NAME_VARIABLE, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *container["env"],
        *(_secret_variable(name, spec.credentials_secret, name) for name in sorted(split.secret)),
    ]
    if spec.uses_token:
        env.append(_secret_variable(TOKEN_VARIABLE, spec.token_secret, TOKEN_KEY))
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
    """The service's objects in creation order, without its Secrets (which hold the token and
    the credentials): a ResourceClaimTemplate with DRA, the Deployment, and a ClusterIP
    Service for a server."""
    labels = service_labels(backend, spec)
    split = split_credentials(spec)
    objects = AttemptObjects(
        job_name=spec.name,
        namespace=profile.namespace,
        labels=labels,
        attempt_id=spec.name,
        task_arguments=(),
        resources=spec.resources,
        placement=placement,
        environment=split.environment,
    )
    pod_labels = {k: labels[k] for k in (MANAGED_BY_LABEL, SERVICE_LABEL)}
    annotations = {
        MODEL_ANNOTATION: redact(spec.model),
        GPUS_ANNOTATION: _gpus_text(spec.resources),
    }
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
                "spec": _service_pod_spec(spec, split, objects, profile),
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


def credentials_secret_manifest(spec: ServiceSpec, backend: str, namespace: str) -> Manifest | None:
    """The Secret holding the values of ``split_credentials(spec).secret`` (created by
    ``apply``, never printed); ``None`` when the service has no credentials."""
    secret = split_credentials(spec).secret
    if not secret:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": spec.credentials_secret,
            "namespace": namespace,
            "labels": service_labels(backend, spec),
        },
        "type": "Opaque",
        "stringData": dict(sorted(secret.items())),
    }


def secrets_note(spec: ServiceSpec, namespace: str) -> str:
    """For a dry run: the Secrets the pods read, as the ``kubectl`` commands that create them,
    with every password shown as ``***`` (YAML comments, so the output still applies)."""
    lines: list[str] = []
    if spec.uses_token:
        lines += [
            f"# The pods read the serving token from Secret {spec.token_secret} (key 'token'),",
            "# which `mlyard serve --backend` creates; applying these yourself, create it first:",
            f"#   kubectl -n {namespace} create secret generic {spec.token_secret} "
            "--from-literal=token=$(openssl rand -hex 32)",
        ]
    secret = split_credentials(spec).secret
    if secret:
        literals = " ".join(
            shlex.quote(f"--from-literal={key}={redact(value)}")
            for key, value in sorted(secret.items())
        )
        lines += [
            f"# URLs with credentials are read from Secret {spec.credentials_secret} "
            f"(keys {', '.join(sorted(secret))}),",
            f"# which `mlyard {'serve' if spec.kind == 'server' else 'consume'} --backend` "
            "creates; applying these yourself, create it first, with the",
            "# passwords where *** stands:",
            f"#   kubectl -n {namespace} create secret generic {spec.credentials_secret} "
            f"{literals}",
        ]
    return "".join(f"{line}\n" for line in lines)


def _gpus_text(resources: Resources) -> str:
    return "none" if resources.gpus == 0 else resources.describe()
