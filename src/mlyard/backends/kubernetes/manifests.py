"""The objects one attempt is made of: a ``batch/v1`` Job (Indexed, with a headless Service
for the rendezvous, when the step spans nodes) and, with DRA, a ResourceClaimTemplate.

Pure: everything comes in as arguments, so the manifests are unit-tested and validated against
the official schema without a cluster, and ``mlyard run --dry-run`` prints them as they are.
No secret is ever written here: the artifact store's credentials come from a Secret by
``envFrom`` reference.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlyard.backends.kubernetes.gpu_requests import GpuPlacement
from mlyard.backends.kubernetes.names import ATTEMPT_ID_ANNOTATION, KUEUE_QUEUE_LABEL
from mlyard.backends.kubernetes.nodes import cpu_quantity, memory_quantity
from mlyard.backends.kubernetes.profile import GPU_TAINT_KEY, KubernetesProfile
from mlyard.models.resources import Resources

CONTAINER_NAME = "step"
GPU_CLAIM_NAME = "gpu"
#: torchrun's default rendezvous port, on the first pod of an Indexed Job.
RENDEZVOUS_PORT = 29500

Manifest = dict[str, Any]


@dataclass(frozen=True)
class AttemptObjects:
    """What one attempt needs to find and start its pods."""

    job_name: str
    namespace: str
    labels: dict[str, str]
    attempt_id: str
    #: Arguments of ``python -m mlyard.runtime``: the task URI and its options.
    task_arguments: Sequence[str]
    resources: Resources
    placement: GpuPlacement
    environment: Mapping[str, str] = field(default_factory=dict)

    @property
    def service_name(self) -> str:
        return self.job_name  # same name, another kind: the pods' subdomain

    @property
    def claim_template_name(self) -> str:
        return f"{self.job_name[:59]}-gpu"


def runtime_command(objects: AttemptObjects, python: str) -> list[str]:
    """The container's command: the runtime, or torchrun running it on every rank."""
    runtime = ["-m", "mlyard.runtime", *objects.task_arguments]
    resources = objects.resources
    if resources.launcher != "torchrun":
        return [python, *runtime]
    torchrun = [python, "-m", "torch.distributed.run"]
    if resources.nodes == 1:
        return [*torchrun, "--standalone", f"--nproc-per-node={resources.ranks_per_node}", *runtime]
    # c10d rendezvous at pod 0 of the Indexed Job, reached by its stable DNS name.
    endpoint = f"{objects.job_name}-0.{objects.service_name}:{RENDEZVOUS_PORT}"
    return [
        *torchrun,
        f"--nnodes={resources.nodes}",
        f"--nproc-per-node={resources.ranks_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-id={objects.job_name}",
        f"--rdzv-endpoint={endpoint}",
        *runtime,
    ]


def _container_resources(resources: Resources, placement: GpuPlacement) -> Manifest:
    requests: dict[str, str] = {"cpu": cpu_quantity(resources.cpus)}
    limits: dict[str, str] = {"cpu": cpu_quantity(resources.cpus)}
    if resources.memory is not None:
        requests["memory"] = limits["memory"] = memory_quantity(resources.memory)
    # Extended resources must have requests equal to limits.
    requests.update(placement.resources)
    limits.update(placement.resources)
    manifest: Manifest = {"requests": requests, "limits": limits}
    if placement.claim_spec is not None:
        manifest["claims"] = [{"name": GPU_CLAIM_NAME}]
    return manifest


def _environment(objects: AttemptObjects) -> list[Manifest]:
    variables = [{"name": k, "value": v} for k, v in sorted(objects.environment.items())]
    if objects.resources.nodes > 1 or objects.resources.launcher:
        variables += [
            {"name": "MLYARD_LAUNCHER", "value": objects.resources.launcher or "none"},
            {"name": "MASTER_ADDR", "value": f"{objects.job_name}-0.{objects.service_name}"},
            {"name": "MASTER_PORT", "value": str(RENDEZVOUS_PORT)},
        ]
    return variables


def _tolerations(profile: KubernetesProfile, placement: GpuPlacement) -> list[Manifest]:
    tolerations = [t.manifest() for t in profile.tolerations]
    if placement.uses_gpu and profile.tolerate_gpu_taint:
        gpu = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
        if gpu not in tolerations:
            tolerations.append(gpu)
    return tolerations


def pod_spec(objects: AttemptObjects, profile: KubernetesProfile) -> Manifest:
    """The pod template's spec: one container running the runtime, never restarted (mlyard
    owns retries)."""
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": profile.image,
        "imagePullPolicy": profile.image_pull_policy,
        "command": runtime_command(objects, profile.python),
        "env": _environment(objects),
        "resources": _container_resources(objects.resources, objects.placement),
    }
    if profile.artifact_credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": profile.artifact_credentials_secret}}]
    if objects.resources.nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}]
    spec: Manifest = {"restartPolicy": "Never", "containers": [container]}
    if profile.service_account:
        spec["serviceAccountName"] = profile.service_account
    if profile.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in profile.image_pull_secrets]
    if profile.node_selector:
        spec["nodeSelector"] = dict(profile.node_selector)
    tolerations = _tolerations(profile, objects.placement)
    if tolerations:
        spec["tolerations"] = tolerations
    if objects.placement.node_affinity:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": objects.placement.node_affinity}]
                }
            }
        }
    if profile.priority_class:
        spec["priorityClassName"] = profile.priority_class
    if objects.placement.claim_spec is not None:
        spec["resourceClaims"] = [
            {"name": GPU_CLAIM_NAME, "resourceClaimTemplateName": objects.claim_template_name}
        ]
    if objects.resources.nodes > 1:
        spec["subdomain"] = objects.service_name
    return spec


def job_manifest(objects: AttemptObjects, profile: KubernetesProfile) -> Manifest:
    """The ``batch/v1`` Job of one attempt."""
    labels = dict(objects.labels)
    if profile.kueue_queue:
        labels[KUEUE_QUEUE_LABEL] = profile.kueue_queue
    spec: Manifest = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": dict(objects.labels)},
            "spec": pod_spec(objects, profile),
        },
    }
    if objects.resources.time_limit is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(objects.resources.time_limit))
    if profile.ttl_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = math.ceil(profile.ttl_after_finished)
    if objects.resources.nodes > 1:
        spec.update(
            completionMode="Indexed",
            completions=objects.resources.nodes,
            parallelism=objects.resources.nodes,
        )
    if profile.kueue_queue:
        spec["suspend"] = True  # Kueue admits (unsuspends) it when the queue has room
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": objects.job_name,
            "namespace": objects.namespace,
            "labels": labels,
            "annotations": {ATTEMPT_ID_ANNOTATION: objects.attempt_id},
        },
        "spec": spec,
    }


def headless_service_manifest(objects: AttemptObjects) -> Manifest:
    """The headless Service giving each pod of a multi-node step a stable DNS name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": objects.service_name,
            "namespace": objects.namespace,
            "labels": dict(objects.labels),
        },
        "spec": {
            "clusterIP": "None",
            # Ranks rendezvous before any pod is ready.
            "publishNotReadyAddresses": True,
            "selector": dict(objects.labels),
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
        },
    }


def claim_template_manifest(objects: AttemptObjects) -> Manifest | None:
    """The ``resource.k8s.io/v1`` ResourceClaimTemplate of a DRA GPU request."""
    if objects.placement.claim_spec is None:
        return None
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {
            "name": objects.claim_template_name,
            "namespace": objects.namespace,
            "labels": dict(objects.labels),
        },
        "spec": objects.placement.claim_spec,
    }


def attempt_manifests(objects: AttemptObjects, profile: KubernetesProfile) -> list[Manifest]:
    """Every object of the attempt, in the order they are created."""
    manifests: list[Manifest] = []
    claim = claim_template_manifest(objects)
    if claim is not None:
        manifests.append(claim)
    if objects.resources.nodes > 1:
        manifests.append(headless_service_manifest(objects))
    manifests.append(job_manifest(objects, profile))
    return manifests


def describe_command(command: Sequence[str]) -> str:
    """The command as one shell line, for people."""
    return " ".join(shlex.quote(part) for part in command)
