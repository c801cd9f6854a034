"""The resource types the fake serves: one table read by routing, discovery, RBAC and errors."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource (``jobs`` in ``batch/v1``) and what the API server knows about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = ()
    singular: str = field(default="")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``jobs.batch`` / ``pods``: how error messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self) -> str:
        """Stable storage key: ``batch/jobs``, ``core/pods``."""
        return f"{self.group or 'core'}/{self.plural}"

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()


def _core(plural: str, kind: str, namespaced: bool = True, **extra: object) -> ResourceType:
    return ResourceType("", "v1", plural, kind, namespaced, **extra)  # type: ignore[arg-type]


RESOURCE_TYPES: tuple[ResourceType, ...] = (
    _core(
        "namespaces",
        "Namespace",
        False,
        short_names=("ns",),
        subresources=("status",),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    _core(
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources=("status", "log", "eviction", "binding"),
    ),
    _core(
        "services", "Service", short_names=("svc",), categories=("all",), subresources=("status",)
    ),
    _core("endpoints", "Endpoints", short_names=("ep",)),
    _core("secrets", "Secret"),
    _core("configmaps", "ConfigMap", short_names=("cm",)),
    _core("serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _core("nodes", "Node", False, short_names=("no",), subresources=("status",)),
    _core("events", "Event", short_names=("ev",)),
    ResourceType("batch", "v1", "jobs", "Job", True, categories=("all",), subresources=("status",)),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        short_names=("deploy",),
        categories=("all",),
        subresources=("status", "scale"),
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        True,
        short_names=("rs",),
        categories=("all",),
        subresources=("status", "scale"),
    ),
    ResourceType("resource.k8s.io", "v1", "resourceclaimtemplates", "ResourceClaimTemplate", True),
    ResourceType(
        "resource.k8s.io", "v1", "resourceclaims", "ResourceClaim", True, subresources=("status",)
    ),
    ResourceType("resource.k8s.io", "v1", "deviceclasses", "DeviceClass", False),
    ResourceType(
        "scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, short_names=("pc",)
    ),
)

BY_PATH: dict[tuple[str, str, str], ResourceType] = {
    (t.group, t.version, t.plural): t for t in RESOURCE_TYPES
}
BY_KIND: dict[str, ResourceType] = {t.kind: t for t in RESOURCE_TYPES}


def resource_type(group: str, version: str, plural: str) -> ResourceType | None:
    """The type served at ``/apis/<group>/<version>/<plural>`` (group "" for the core API)."""
    return BY_PATH.get((group, version, plural))


def group_versions() -> dict[str, list[str]]:
    """Served groups (without the core group) and their versions, in table order."""
    groups: dict[str, list[str]] = {}
    for t in RESOURCE_TYPES:
        if t.group and t.version not in groups.setdefault(t.group, []):
            groups[t.group].append(t.version)
    return groups
