"""The Kubernetes backend: each step attempt is one ``batch/v1`` Job running
``python -m mlyard.runtime <task-uri>`` in the profile's image.

Jobs are named and labelled after the attempt id, so a repeated submit adopts the Job that
exists (409 AlreadyExists) and a restarted orchestrator re-attaches by label. One status poll is
two list requests (the runs' Jobs and their Pods by label selector) however many attempts are
active. Inputs and outputs go through the artifact store, which must be one the pods reach (S3);
its credentials come from a Secret by reference. GPU requests are translated by the profile's
``gpu_sharing`` (gpu_requests.py) and checked against the nodes' allocatable before the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, Capability, SubmittedTask
from mlyard.backends.kubernetes.api import ClusterApi, Manifest
from mlyard.backends.kubernetes.gpu_requests import GpuPlacement, translate_gpus
from mlyard.backends.kubernetes.logs import attempt_log_lines
from mlyard.backends.kubernetes.manifests import (
    AttemptObjects,
    attempt_manifests,
    claim_template_manifest,
    headless_service_manifest,
    job_manifest,
)
from mlyard.backends.kubernetes.names import CANCELLED_ANNOTATION, attempt_labels, job_name
from mlyard.backends.kubernetes.nodes import NodeFacts, gpu_products, mig_profiles
from mlyard.backends.kubernetes.polling import AttemptPoller, manifests_yaml
from mlyard.backends.kubernetes.preflight import ClusterPreflight
from mlyard.backends.kubernetes.profile import load_kubernetes_profile
from mlyard.errors import BackendError, ConfigError
from mlyard.models.backends import JobHandle, JobStatus
from mlyard.models.resources import Resources
from mlyard.settings import BackendProfile, Settings


class KubernetesBackend(Backend):
    """Steps as Kubernetes Jobs on the cluster of a kubeconfig context (or in-cluster)."""

    poll_interval = (0.2, 5.0)

    def __init__(
        self, name: str, profile: BackendProfile, settings: Settings, store: ArtifactStore
    ) -> None:
        super().__init__(name, profile, settings, store)
        self.k8s = load_kubernetes_profile(name, profile)
        if store.is_local:
            raise ConfigError(
                f"The artifact store is the local directory {store.url}, which the pods of "
                f"backend {name!r} cannot reach.",
                hint="Set storage.artifacts to an s3:// URL the cluster reaches (with "
                "storage.endpoint_url for MinIO or SeaweedFS), and name the Secret holding its "
                f"credentials in artifact_credentials_secret of [backends.{name}].",
            )
        capabilities = {
            Capability.MULTI_NODE,
            Capability.GPU_TYPE,
            Capability.GPU_MEMORY,
            Capability.TIME_LIMIT,
            Capability.LAUNCHER_TORCHRUN,
            Capability.LOG_FOLLOW,
            Capability.SERVICES,  # Deployments and Services: services.py
        }
        if self.k8s.gpu_sharing not in ("exclusive", "dra"):
            capabilities.add(Capability.FRACTIONAL_GPU)
        self.capabilities = frozenset(capabilities)
        self.capability_hints = {
            Capability.FRACTIONAL_GPU: "Ask for a whole GPU (gpus=1), or set gpu_sharing in "
            f"[backends.{name}] to the sharing the cluster runs: time-slicing, mig, nvshare "
            "or hami.",
            Capability.LAUNCHER_RAY: "Use launcher='torchrun' here, or run Ray steps on slurm "
            "(mlyard does not boot Ray clusters on Kubernetes yet).",
        }
        self._api: ClusterApi | None = None
        self.preflight = ClusterPreflight(name, self.k8s, lambda: self.api)
        self.poller = AttemptPoller(name, self.k8s, lambda: self.api, store)

    @property
    def api(self) -> ClusterApi:
        """The cluster connection, made on first use (constructing the backend never
        connects; a bad kubeconfig or context is a ConfigError here)."""
        if self._api is None:
            self._api = ClusterApi(self.name, self.k8s)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    # --- translation ----------------------------------------------------------------------

    def node_inventory(self) -> list[NodeFacts] | None:
        """The nodes, read at most once a minute; ``None`` when RBAC hides them."""
        return self.preflight.node_inventory()

    def placement(self, resources: Resources, *, offline: bool = False) -> GpuPlacement:
        """The GPU part of the pods for ``resources``, using the nodes' inventory unless
        ``offline`` (dry runs do not touch the cluster)."""
        nodes = None if offline else self.node_inventory()
        return translate_gpus(
            resources,
            self.k8s,
            node_products=gpu_products(nodes) if nodes else None,
            node_mig_profiles=mig_profiles(nodes) if nodes else None,
        )

    def attempt_objects(
        self,
        *,
        run_id: str,
        attempt_id: str,
        step_name: str,
        resources: Resources,
        task_uri: str,
        environment: dict[str, str] | None = None,
        offline: bool = False,
    ) -> AttemptObjects:
        """Everything the attempt's manifests are made from."""
        arguments = [task_uri]
        if self.store.endpoint_url:
            arguments += ["--endpoint-url", self.store.endpoint_url]
        arguments.append("--store-log")  # `mlyard runs logs` after the pod is gone
        return AttemptObjects(
            job_name=job_name(attempt_id),
            namespace=self.k8s.namespace,
            labels=attempt_labels(
                backend=self.name, run_id=run_id, attempt_id=attempt_id, step=step_name
            ),
            attempt_id=attempt_id,
            task_arguments=arguments,
            resources=resources,
            placement=self.placement(resources, offline=offline),
            environment=environment or {},
        )

    def render_manifests(
        self,
        *,
        run_id: str,
        attempt_id: str,
        step_name: str,
        resources: Resources,
        task_uri: str,
        environment: dict[str, str] | None = None,
    ) -> list[Manifest]:
        """The manifests an attempt would be made of, without touching the cluster."""
        objects = self.attempt_objects(
            run_id=run_id,
            attempt_id=attempt_id,
            step_name=step_name,
            resources=resources,
            task_uri=task_uri,
            environment=environment,
            offline=True,
        )
        return attempt_manifests(objects, self.k8s)

    # --- resources --------------------------------------------------------------------------

    def _check_resources(self, resources: Resources) -> None:
        self.preflight.check_namespace()
        self.preflight.check_secret()
        self.preflight.check_fit(resources, self.placement(resources))

    # --- submit -----------------------------------------------------------------------------

    def _submit(self, task: SubmittedTask) -> JobHandle:
        spec = task.spec
        objects = self.attempt_objects(
            run_id=spec.run_id,
            attempt_id=spec.attempt_id,
            step_name=spec.step_name,
            resources=spec.resources,
            task_uri=task.task_uri,
            environment=spec.environment,
        )
        manifest = job_manifest(objects, self.k8s)
        job, created = self.api.create(manifest)
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": objects.job_name,
            "uid": (job.get("metadata") or {}).get("uid", ""),
        }
        # Owned by the Job, so Kubernetes deletes them with it (after its TTL, or a cancel).
        extras = [headless_service_manifest(objects)] if spec.resources.nodes > 1 else []
        claim = claim_template_manifest(objects)
        if claim is not None:
            extras.append(claim)
        try:
            for extra in extras:
                extra["metadata"]["ownerReferences"] = [owner]
                self.api.create(extra)
        except BackendError:
            if created:  # nothing half-created: the Job goes if its companions cannot exist
                self.api.delete("Job", objects.job_name)
            raise
        self.poller.manifests[objects.job_name] = manifests_yaml([manifest, *extras])
        return JobHandle(
            backend=self.name,
            job_id=objects.job_name,
            data={
                "attempt_id": spec.attempt_id,
                "run_id": spec.run_id,
                "namespace": self.k8s.namespace,
                "nodes": str(spec.resources.nodes),
            },
        )

    # --- status, cancel and logs ---------------------------------------------------------

    def _status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        return self.poller.statuses(handles)

    def _cancel(self, handle: JobHandle) -> None:
        self.poller.cancelled.add(handle.job_id)
        # Marked first, so a poll (here or from a re-attached orchestrator) that still sees
        # the Job while it goes reports CANCELLED, not a failure of its killed pod.
        self.api.patch_annotations("Job", handle.job_id, {CANCELLED_ANNOTATION: "true"})
        self.api.delete("Job", handle.job_id, policy="Foreground")

    def _logs(self, handle: JobHandle, *, follow: bool) -> Iterator[str]:
        # A generator, so the cluster is reached when the lines are read, not before.
        yield from attempt_log_lines(
            self.api,
            self.store,
            self.name,
            handle.data.get("attempt_id", ""),
            follow=follow,
            ended=lambda: self._status([handle])[handle.job_id].state.is_terminal,
        )
