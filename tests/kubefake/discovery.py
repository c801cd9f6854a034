"""Discovery documents (``/version``, ``/api``, ``/apis``, ``APIResourceList``) kubectl and the
clients read to map kinds to resources."""

from __future__ import annotations

from typing import Any

from tests.kubefake.resources import RESOURCE_TYPES, ResourceType, group_versions
from tests.kubefake.validation import SCHEMA_VERSION

_SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "log": ("get",),
    "eviction": ("create",),
    "binding": ("create",),
}
_SUBRESOURCE_KINDS = {
    "scale": ("autoscaling", "v1", "Scale"),
    "eviction": ("policy", "v1", "Eviction"),
    "binding": ("", "v1", "Binding"),
}


def version_info() -> dict[str, str]:
    major, minor, patch = SCHEMA_VERSION.split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{major}.{minor}.{patch}-kubefake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-08-27T00:00:00Z",
        "goVersion": "go1.24.6",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def api_group_list() -> dict[str, Any]:
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [_group(name, versions) for name, versions in group_versions().items()],
    }


def api_group(name: str) -> dict[str, Any] | None:
    versions = group_versions().get(name)
    if versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _entry(t: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": t.plural,
        "singularName": t.singular_name,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        entry["shortNames"] = list(t.short_names)
    if t.categories:
        entry["categories"] = list(t.categories)
    return entry


def api_resource_list(group: str, version: str) -> dict[str, Any] | None:
    """The ``APIResourceList`` of one group version (``group`` "" for the core API)."""
    types = [t for t in RESOURCE_TYPES if t.group == group and t.version == version]
    if not types:
        return None
    resources = []
    for t in types:
        resources.append(_entry(t))
        for sub in t.subresources:
            entry: dict[str, Any] = {
                "name": f"{t.plural}/{sub}",
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": list(_SUBRESOURCE_VERBS[sub]),
            }
            if sub in _SUBRESOURCE_KINDS:
                sub_group, sub_version, sub_kind = _SUBRESOURCE_KINDS[sub]
                entry.update(kind=sub_kind, group=sub_group, version=sub_version)
            if sub == "log":
                entry["kind"] = "Pod"
            resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
