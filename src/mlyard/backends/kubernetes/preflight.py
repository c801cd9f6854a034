"""What the Kubernetes backend checks on the cluster before a run starts: the namespace and the
credentials Secret exist, and some node could ever hold a pod of the request (read from the
nodes' allocatable where RBAC allows). Each check reaches the API server once per backend
(the node inventory once a minute); what RBAC hides is skipped, not refused."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from decimal import Decimal

from mlyard.backends.kubernetes.api import ClusterApi
from mlyard.backends.kubernetes.gpu_requests import GpuPlacement
from mlyard.backends.kubernetes.nodes import (
    NodeFacts,
    PodNeeds,
    parse_quantity,
    refuse_unless_some_node_fits,
)
from mlyard.backends.kubernetes.profile import GPU_TAINT_KEY, KubernetesProfile
from mlyard.errors import BackendError, ConfigError
from mlyard.models.resources import Resources

logger = logging.getLogger(__name__)

#: The node inventory is read again after this long (nodes join and leave).
NODES_TTL_SECONDS = 60.0


class ClusterPreflight:
    """The checks of backend ``name``; ``api`` gives its connection (made on first use)."""

    def __init__(
        self, name: str, profile: KubernetesProfile, api: Callable[[], ClusterApi]
    ) -> None:
        self.name = name
        self.profile = profile
        self._api = api
        self._nodes: list[NodeFacts] | None = None
        self._nodes_read_at = float("-inf")
        self._nodes_readable = True
        self._checked_secret = False
        self._checked_namespace = False

    def node_inventory(self) -> list[NodeFacts] | None:
        """The nodes, read at most once a minute; ``None`` when RBAC hides them."""
        if not self._nodes_readable:
            return None
        if time.monotonic() - self._nodes_read_at > NODES_TTL_SECONDS:
            listed = self._api().list_nodes()
            if listed is None:
                self._nodes_readable = False
                logger.info("backend %s: nodes cannot be listed; not checking requests", self.name)
                return None
            self._nodes = [NodeFacts.from_manifest(n) for n in listed]
            self._nodes_read_at = time.monotonic()
        return self._nodes

    def check_fit(self, resources: Resources, placement: GpuPlacement) -> None:
        """``ResourceError`` listing what the nodes have when no node could ever hold a pod
        of ``resources`` (as ``placement`` translated its GPUs); nothing without nodes."""
        nodes = self.node_inventory()
        if not nodes:
            return
        requests: dict[str, Decimal] = {"cpu": Decimal(str(resources.cpus))}
        if resources.memory is not None:
            requests["memory"] = Decimal(resources.memory)
        requests.update({k: parse_quantity(v) for k, v in placement.resources.items()})
        # A toleration without a key (operator Exists) tolerates every taint: None stands for it.
        tolerated: set[str | None] = {t.key for t in self.profile.tolerations}
        if placement.uses_gpu and self.profile.tolerate_gpu_taint:
            tolerated.add(GPU_TAINT_KEY)
        needs = PodNeeds(
            requests=requests,
            node_selector=dict(self.profile.node_selector),
            affinity=placement.node_affinity,
            tolerated=frozenset(tolerated),
        )
        refuse_unless_some_node_fits(nodes, needs, resources.describe())

    def check_namespace(self) -> None:
        """The namespace exists (once per backend; skipped where RBAC hides namespaces: a
        create in a missing one is refused with the same message)."""
        if self._checked_namespace:
            return
        api = self._api()
        namespace = self.profile.namespace
        try:
            api.call("GET", f"/api/v1/namespaces/{namespace}", verb="get", resource="namespaces")
        except BackendError as error:
            status = getattr(error.__cause__, "status", None)
            if status == 404:
                raise ConfigError(
                    f"The namespace {namespace!r} does not exist on {api.server}.",
                    hint=f"Create it (`kubectl create namespace {namespace}`) or set "
                    f"namespace in [backends.{self.name}].",
                ) from error
            if status != 403:
                raise
        self._checked_namespace = True

    def check_secret(self) -> None:
        """The credentials Secret exists (once per backend; skipped where RBAC hides Secrets:
        the pod then fails with CreateContainerConfigError, naming it)."""
        secret = self.profile.artifact_credentials_secret
        if secret is None or self._checked_secret:
            return
        namespace = self.profile.namespace
        try:
            self._api().call(
                "GET",
                f"/api/v1/namespaces/{namespace}/secrets/{secret}",
                verb="get",
                resource="secrets",
            )
        except BackendError as error:
            status = getattr(error.__cause__, "status", None)
            if status == 404:
                raise ConfigError(
                    f"The Secret {secret!r} (artifact_credentials_secret of backend "
                    f"{self.name!r}) does not exist in namespace {namespace!r}.",
                    hint=f"Create it: kubectl -n {namespace} create secret generic "
                    f"{secret} --from-literal=AWS_ACCESS_KEY_ID=... "
                    "--from-literal=AWS_SECRET_ACCESS_KEY=...",
                ) from error
            if status != 403:
                raise
        self._checked_secret = True
