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

import logging
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.base import Backend, Capability, SubmittedTask
from mlyard.backends.kubernetes.api import ClusterApi, Manifest
from mlyard.backends.kubernetes.gpu_requests import GpuPlacement, translate_gpus
from mlyard.backends.kubernetes.manifests import (
    AttemptObjects,
    attempt_manifests,
    claim_template_manifest,
    headless_service_manifest,
    job_manifest,
)
from mlyard.backends.kubernetes.names import (
    ATTEMPT_ID_ANNOTATION,
    ATTEMPT_ID_LABEL,
    CANCELLED_ANNOTATION,
    RUN_ID_LABEL,
    attempt_labels,
    backend_selector,
    job_name,
    label_value,
)
from mlyard.backends.kubernetes.nodes import (
    NodeFacts,
    PodNeeds,
    gpu_products,
    mig_profiles,
    parse_quantity,
    refuse_unless_some_node_fits,
)
from mlyard.backends.kubernetes.profile import GPU_TAINT_KEY, load_kubernetes_profile
from mlyard.backends.kubernetes.states import map_attempt, parse_time
from mlyard.errors import BackendError, ConfigError
from mlyard.models.backends import JobHandle, JobState, JobStatus
from mlyard.models.resources import Resources
from mlyard.models.tasks import TaskResult, Usage
from mlyard.runtime.stored_log import LOG_DOCUMENT
from mlyard.settings import BackendProfile, Settings

logger = logging.getLogger(__name__)

RESULT_DOCUMENT = "result.json"
#: The node inventory is read again after this long (nodes join and leave).
_NODES_TTL_SECONDS = 60.0
_LOG_RETRY_SECONDS = 0.5


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
        self._nodes: list[NodeFacts] | None = None
        self._nodes_read_at = float("-inf")
        self._nodes_readable = True
        self._checked_secret = False
        self._checked_namespace = False
        self._finished: dict[str, JobStatus] = {}
        self._cancelled: set[str] = set()
        self._manifests: dict[str, str] = {}

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
        if not self._nodes_readable:
            return None
        if time.monotonic() - self._nodes_read_at > _NODES_TTL_SECONDS:
            listed = self.api.list_nodes()
            if listed is None:
                self._nodes_readable = False
                logger.info("backend %s: nodes cannot be listed; not checking requests", self.name)
                return None
            self._nodes = [NodeFacts.from_manifest(n) for n in listed]
            self._nodes_read_at = time.monotonic()
        return self._nodes

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
        self._check_namespace()
        self._check_secret()
        placement = self.placement(resources)
        nodes = self.node_inventory()
        if not nodes:
            return
        requests: dict[str, Decimal] = {"cpu": Decimal(str(resources.cpus))}
        if resources.memory is not None:
            requests["memory"] = Decimal(resources.memory)
        requests.update({k: parse_quantity(v) for k, v in placement.resources.items()})
        # A toleration without a key (operator Exists) tolerates every taint: None stands for it.
        tolerated: set[str | None] = {t.key for t in self.k8s.tolerations}
        if placement.uses_gpu and self.k8s.tolerate_gpu_taint:
            tolerated.add(GPU_TAINT_KEY)
        needs = PodNeeds(
            requests=requests,
            node_selector=dict(self.k8s.node_selector),
            affinity=placement.node_affinity,
            tolerated=frozenset(tolerated),
        )
        refuse_unless_some_node_fits(nodes, needs, resources.describe())

    def _check_namespace(self) -> None:
        """The namespace exists (once per backend; skipped where RBAC hides namespaces: a
        create in a missing one is refused with the same message)."""
        if self._checked_namespace:
            return
        try:
            self.api.call(
                "GET",
                f"/api/v1/namespaces/{self.k8s.namespace}",
                verb="get",
                resource="namespaces",
            )
        except BackendError as error:
            status = getattr(error.__cause__, "status", None)
            if status == 404:
                raise ConfigError(
                    f"The namespace {self.k8s.namespace!r} does not exist on {self.api.server}.",
                    hint=f"Create it (`kubectl create namespace {self.k8s.namespace}`) or set "
                    f"namespace in [backends.{self.name}].",
                ) from error
            if status != 403:
                raise
        self._checked_namespace = True

    def _check_secret(self) -> None:
        """The credentials Secret exists (once per backend; skipped where RBAC hides Secrets:
        the pod then fails with CreateContainerConfigError, naming it)."""
        secret = self.k8s.artifact_credentials_secret
        if secret is None or self._checked_secret:
            return
        try:
            self.api.call(
                "GET",
                f"/api/v1/namespaces/{self.k8s.namespace}/secrets/{secret}",
                verb="get",
                resource="secrets",
            )
        except BackendError as error:
            status = getattr(error.__cause__, "status", None)
            if status == 404:
                raise ConfigError(
                    f"The Secret {secret!r} (artifact_credentials_secret of backend "
                    f"{self.name!r}) does not exist in namespace {self.k8s.namespace!r}.",
                    hint=f"Create it: kubectl -n {self.k8s.namespace} create secret generic "
                    f"{secret} --from-literal=AWS_ACCESS_KEY_ID=... "
                    "--from-literal=AWS_SECRET_ACCESS_KEY=...",
                ) from error
            if status != 403:
                raise
        self._checked_secret = True

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
        self._manifests[objects.job_name] = _yaml([manifest, *extras])
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

    # --- status -----------------------------------------------------------------------------

    def _selector(self, handles: Sequence[JobHandle]) -> str:
        runs = sorted({label_value(h.data.get("run_id", "")) for h in handles} - {""})
        if not runs:
            return backend_selector(self.name)
        return f"{backend_selector(self.name)},{RUN_ID_LABEL} in ({','.join(runs)})"

    def _status(self, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        finished = self._finished
        statuses = {h.job_id: finished[h.job_id] for h in handles if h.job_id in finished}
        open_handles = [h for h in handles if h.job_id not in self._finished]
        if not open_handles:
            return statuses
        selector = self._selector(open_handles)
        jobs = {j["metadata"]["name"]: j for j in self.api.list_objects("Job", selector)}
        pods: dict[str, list[Manifest]] = {}
        for pod in self.api.list_objects("Pod", selector):
            attempt = (pod["metadata"].get("labels") or {}).get(ATTEMPT_ID_LABEL, "")
            pods.setdefault(attempt, []).append(pod)
        now = datetime.now(UTC)
        for handle in open_handles:
            job = jobs.get(handle.job_id)
            if job is None:
                status = self._gone(handle)
            else:
                attempt = (job["metadata"].get("labels") or {}).get(ATTEMPT_ID_LABEL, "")
                status = self._mapped(handle, job, pods.get(attempt, []), now)
            statuses[handle.job_id] = status
            if status.state.is_terminal:
                self._finished[handle.job_id] = status
        return statuses

    def _mapped(
        self, handle: JobHandle, job: Manifest, pods: list[Manifest], now: datetime
    ) -> JobStatus:
        mapped = map_attempt(job, pods, now=now, schedule_timeout=self.k8s.schedule_timeout or 600)
        if mapped.stop_job:
            # Decided here while the Job is still active (it would back off pulling forever).
            self.api.delete("Job", handle.job_id)
        if handle.job_id not in self._manifests:
            self._manifests[handle.job_id] = _yaml([_as_applied(job)])
        return JobStatus(
            state=mapped.state,
            reason=mapped.reason,
            infrastructure_failure=mapped.infrastructure_failure,
            retryable=mapped.retryable,
            exit_code=mapped.exit_code,
            usage=_usage(job, pods) if mapped.state.is_terminal else None,
            submit_script=self._manifests.get(handle.job_id),
        )

    def _gone(self, handle: JobHandle) -> JobStatus:
        """A Job that no longer exists: cancelled here, ended and removed after its TTL (its
        result says how), or lost."""
        if handle.job_id in self._cancelled:
            return JobStatus(state=JobState.CANCELLED, reason="cancelled (its Job was deleted)")
        attempt_id = handle.data.get("attempt_id")
        raw = self.store.read_document(attempt_id, RESULT_DOCUMENT) if attempt_id else None
        if raw is not None:
            result = TaskResult.model_validate_json(raw)
            succeeded = result.status == "succeeded"
            return JobStatus(
                state=JobState.SUCCEEDED if succeeded else JobState.FAILED,
                reason="ended; its Job was removed after ttl_after_finished",
                exit_code=0 if succeeded else 1,
            )
        return JobStatus(
            state=JobState.LOST,
            reason=f"the Job {handle.job_id} no longer exists in namespace "
            f"{handle.data.get('namespace', self.k8s.namespace)} and left no result",
        )

    # --- cancel and logs --------------------------------------------------------------------

    def _cancel(self, handle: JobHandle) -> None:
        self._cancelled.add(handle.job_id)
        # Marked first, so a poll (here or from a re-attached orchestrator) that still sees
        # the Job while it goes reports CANCELLED, not a failure of its killed pod.
        self.api.patch_annotations("Job", handle.job_id, {CANCELLED_ANNOTATION: "true"})
        self.api.delete("Job", handle.job_id, policy="Foreground")

    def _logs(self, handle: JobHandle, *, follow: bool) -> Iterator[str]:
        attempt_id = handle.data.get("attempt_id", "")
        selector = f"{backend_selector(self.name)},{ATTEMPT_ID_LABEL}={label_value(attempt_id)}"
        while True:
            pods = self.api.list_objects("Pod", selector)
            started = [p for p in pods if _container_started(p)]
            if started:
                first = min(started, key=_pod_index)
                shown = 0
                try:
                    for line in _lines(self.api.pod_log(first["metadata"]["name"], follow=follow)):
                        shown += 1
                        yield line
                except BackendError:
                    if shown:
                        raise
                    break  # the pod went between the list and the read: the stored log
                return
            if not pods or not follow:
                break
            if self._status([handle])[handle.job_id].state.is_terminal and not pods:
                break
            time.sleep(_LOG_RETRY_SECONDS)  # the container has not started yet
        stored = self.store.read_document(attempt_id, LOG_DOCUMENT) if attempt_id else None
        if stored is not None:
            yield from stored.decode(errors="replace").splitlines()


def _container_started(pod: Manifest) -> bool:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        state = container.get("state") or {}
        if "running" in state or "terminated" in state:
            return True
    return False


def _pod_index(pod: Manifest) -> tuple[int, str]:
    annotations = pod["metadata"].get("annotations") or {}
    index = annotations.get("batch.kubernetes.io/job-completion-index", "0")
    return (int(index) if index.isdigit() else 0, pod["metadata"].get("name", ""))


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def _usage(job: Manifest, pods: list[Manifest]) -> Usage | None:
    """Queue wait: the Job's creation to its first container start (the runtime measures the
    rest itself, more finely than the API's one-second timestamps)."""
    created = parse_time(job["metadata"].get("creationTimestamp"))
    started: list[datetime] = []
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            state = container.get("state") or {}
            for key in ("running", "terminated"):
                moment = parse_time((state.get(key) or {}).get("startedAt"))
                if moment:
                    started.append(moment)
    if created is None or not started:
        return None
    return Usage(queue_seconds=max(0.0, (min(started) - created).total_seconds()))


def _as_applied(job: Manifest) -> Manifest:
    """A live Job as it was applied: without status and server-set metadata."""
    metadata = {
        k: v
        for k, v in (job.get("metadata") or {}).items()
        if k in ("name", "namespace", "labels", "annotations")
    }
    annotations = {
        k: v for k, v in (metadata.get("annotations") or {}).items() if k == ATTEMPT_ID_ANNOTATION
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job.get("spec")}


def _yaml(manifests: Sequence[Any]) -> str:
    import yaml

    text: str = yaml.safe_dump_all(list(manifests), sort_keys=False)
    return text
