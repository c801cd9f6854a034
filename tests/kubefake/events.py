"""core/v1 Events, recorded and aggregated (``count``, ``lastTimestamp``) as components do."""

from __future__ import annotations

import secrets
from typing import Any

from tests.kubefake.resources import BY_KIND
from tests.kubefake.store import Obj, Store, now_rfc3339

_EVENT = BY_KIND["Event"]


class EventRecorder:
    """Writes Events about objects; a repeat of the same reason and message bumps ``count``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._recent: dict[tuple[str, str, str, str, str], str] = {}

    def record(
        self,
        obj: Obj,
        reason: str,
        message: str,
        type_: str = "Normal",
        component: str = "kubelet",
        host: str | None = None,
        field_path: str | None = None,
    ) -> None:
        """Record ``reason`` / ``message`` about ``obj`` from ``component``."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta["uid"], reason, message, component)
        now = now_rfc3339()
        existing_name = self._recent.get(key)
        if existing_name:
            existing = self._store.find(_EVENT, namespace, existing_name)
            if existing is not None:
                existing["count"] = int(existing.get("count", 1)) + 1
                existing["lastTimestamp"] = now
                self._store.update(_EVENT, existing)
                return
        involved: dict[str, Any] = {
            "kind": obj["kind"],
            "namespace": meta.get("namespace"),
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": obj["apiVersion"],
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        source: dict[str, str] = {"component": component}
        if host:
            source["host"] = host
        name = f"{meta['name']}.{secrets.token_hex(8)}"
        self._store.create(
            _EVENT,
            {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {k: v for k, v in involved.items() if v is not None},
                "reason": reason,
                "message": message,
                "source": source,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": type_,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": host or "",
            },
        )
        self._recent[key] = name
