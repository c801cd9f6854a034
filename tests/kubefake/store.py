"""Objects, ``resourceVersion``, finalizers and the watch history: the fake's etcd.

Everything runs on the server's one asyncio loop, so no method needs a lock. Objects are JSON
dicts; the store hands out deep copies, so callers may edit what they get and ``update`` it.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.kubefake.errors import already_exists, conflict, expired, not_found
from tests.kubefake.resources import ResourceType

Obj = dict[str, Any]
Predicate = Callable[[Obj], bool]

#: The alphabet of generated name suffixes (k8s.io/apimachinery/pkg/util/rand): no vowels.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339() -> str:
    """The current time as the API server writes it (seconds, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """A ``...Z`` timestamp as a UNIX time."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class Change:
    """One committed change, kept in the watch history of its resource type."""

    rv: int
    type: str  # ADDED / MODIFIED / DELETED
    rtype: ResourceType
    obj: Obj
    old: Obj | None


class Store:
    """All objects by resource type, namespace and name, with a bounded history per type."""

    def __init__(self, history: int = 500) -> None:
        self._objects: dict[str, dict[tuple[str, str], Obj]] = {}
        self._rv = 0
        self._capacity = history
        self._history: dict[str, deque[Change]] = {}
        self._compacted: dict[str, int] = {}
        self._queues: set[tuple[str, asyncio.Queue[Change]]] = set()
        self._listeners: list[Callable[[Change], None]] = []

    # -- reading -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._objects.get(rtype.key, {}).get((namespace, name))
        if obj is None:
            raise not_found(rtype, name)
        return copy.deepcopy(obj)

    def find(self, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get(rtype.key, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self, rtype: ResourceType, namespace: str | None = None, predicate: Predicate | None = None
    ) -> list[Obj]:
        """Objects of ``rtype`` (in ``namespace`` when given), sorted by namespace and name."""
        found = []
        for (ns, _name), obj in sorted(self._objects.get(rtype.key, {}).items()):
            if namespace is not None and ns != namespace:
                continue
            if predicate is None or predicate(obj):
                found.append(copy.deepcopy(obj))
        return found

    def peek(self, rtype: ResourceType) -> Iterable[Obj]:
        """Objects of ``rtype`` without copying: for controllers that only read."""
        return list(self._objects.get(rtype.key, {}).values())

    # -- writing -------------------------------------------------------------------------

    def create(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Store a new object; fills uid, timestamps, generation and a generated name."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        namespace = meta.get("namespace", "") if rtype.namespaced else ""
        bucket = self._objects.setdefault(rtype.key, {})
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(8):
                candidate = meta["generateName"] + random_suffix()
                if (namespace, candidate) not in bucket:
                    meta["name"] = candidate
                    break
        name = meta["name"]
        if (namespace, name) in bucket:
            raise already_exists(rtype, name)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(transient, None)
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        bucket[(namespace, name)] = obj
        self._publish(Change(self._rv, "ADDED", rtype, obj, None))
        return copy.deepcopy(obj)

    def update(self, rtype: ResourceType, obj: Obj, expect_rv: str | None = None) -> Obj:
        """Replace an object. A stale ``expect_rv`` is a 409 Conflict; spec changes bump
        ``generation``; an object being deleted whose finalizers are all gone is removed."""
        meta = obj["metadata"]
        namespace = meta.get("namespace", "") if rtype.namespaced else ""
        bucket = self._objects.get(rtype.key, {})
        current = bucket.get((namespace, meta["name"]))
        if current is None:
            raise not_found(rtype, meta["name"])
        if expect_rv and expect_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rtype, meta["name"])
        new = copy.deepcopy(obj)
        new["apiVersion"], new["kind"] = rtype.api_version, rtype.kind
        new_meta = new["metadata"]
        for fixed in (
            "uid",
            "creationTimestamp",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if fixed in current["metadata"]:
                new_meta[fixed] = current["metadata"][fixed]
            else:
                new_meta.pop(fixed, None)
        generation = current["metadata"].get("generation", 1)
        if _spec_of(new) != _spec_of(current):
            generation += 1
        new_meta["generation"] = generation
        new_meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return copy.deepcopy(current)  # a no-op write does not bump resourceVersion
        if not new_meta.get("finalizers"):
            new_meta.pop("finalizers", None)
        self._rv += 1
        new_meta["resourceVersion"] = str(self._rv)
        if (
            new_meta.get("deletionTimestamp")
            and not new_meta.get("finalizers")
            and not new_meta.get("deletionGracePeriodSeconds")
        ):
            del bucket[(namespace, meta["name"])]
            self._publish(Change(self._rv, "DELETED", rtype, new, current))
        else:
            bucket[(namespace, meta["name"])] = new
            self._publish(Change(self._rv, "MODIFIED", rtype, new, current))
        return copy.deepcopy(new)

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        grace_seconds: int | None = None,
        add_finalizer: str | None = None,
        expect_uid: str | None = None,
        expect_rv: str | None = None,
    ) -> tuple[Obj, bool]:
        """Delete an object: at once, or by setting ``deletionTimestamp`` while finalizers remain
        or a kubelet must stop a pod first. Returns the object and whether it is gone."""
        current = self.get(rtype, namespace, name)
        meta = current["metadata"]
        if (expect_uid and meta["uid"] != expect_uid) or (
            expect_rv and meta["resourceVersion"] != expect_rv
        ):
            raise conflict(rtype, name)
        finalizers = list(meta.get("finalizers") or [])
        if add_finalizer and add_finalizer not in finalizers and not meta.get("deletionTimestamp"):
            finalizers.append(add_finalizer)
        grace = _deletion_grace(rtype, current, grace_seconds)
        if not finalizers and grace == 0:
            return self._remove(rtype, current), True
        stored = self._objects[rtype.key][(namespace if rtype.namespaced else "", name)]
        old = copy.deepcopy(stored)
        smeta = stored["metadata"]
        if not smeta.get("deletionTimestamp"):
            smeta["deletionTimestamp"] = now_rfc3339()
            smeta["deletionGracePeriodSeconds"] = grace
        elif grace < (smeta.get("deletionGracePeriodSeconds") or 0):
            smeta["deletionGracePeriodSeconds"] = grace  # a shorter grace period wins
        if finalizers:
            smeta["finalizers"] = finalizers
        if stored != old:
            self._rv += 1
            smeta["resourceVersion"] = str(self._rv)
            self._publish(Change(self._rv, "MODIFIED", rtype, copy.deepcopy(stored), old))
        return copy.deepcopy(stored), False

    def _remove(self, rtype: ResourceType, current: Obj) -> Obj:
        meta = current["metadata"]
        namespace = meta.get("namespace", "") if rtype.namespaced else ""
        del self._objects[rtype.key][(namespace, meta["name"])]
        self._rv += 1
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._publish(Change(self._rv, "DELETED", rtype, gone, current))
        return gone

    # -- watching ------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener`` after every committed change (controllers wake on it)."""
        self._listeners.append(listener)

    def _publish(self, change: Change) -> None:
        history = self._history.setdefault(change.rtype.key, deque())
        history.append(change)
        while len(history) > self._capacity:
            self._compacted[change.rtype.key] = history.popleft().rv
        for key, queue in self._queues:
            if key == change.rtype.key:
                queue.put_nowait(change)
        for listener in self._listeners:
            listener(change)

    def check_not_expired(self, rtype: ResourceType, from_rv: int) -> None:
        """A watch from before the kept history is 410 Gone, reason Expired."""
        compacted = self._compacted.get(rtype.key, 0)
        if from_rv < compacted:
            raise expired(f"too old resource version: {from_rv} ({compacted})")

    async def changes(self, rtype: ResourceType, from_rv: int) -> AsyncGenerator[Change, None]:
        """Changes of ``rtype`` after ``from_rv``: the kept history, then live ones."""
        self.check_not_expired(rtype, from_rv)
        queue: asyncio.Queue[Change] = asyncio.Queue()
        entry = (rtype.key, queue)
        self._queues.add(entry)
        try:
            replay = [c for c in self._history.get(rtype.key, ()) if c.rv > from_rv]
            last = from_rv
            for change in replay:
                last = change.rv
                yield change
            while True:
                change = await queue.get()
                if change.rv > last:
                    last = change.rv
                    yield change
        finally:
            self._queues.discard(entry)


def _spec_of(obj: Obj) -> Any:
    """What ``generation`` tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _pod_grace(pod: Obj) -> int:
    grace = pod.get("spec", {}).get("terminationGracePeriodSeconds")
    return 30 if grace is None else int(grace)


def _deletion_grace(rtype: ResourceType, obj: Obj, requested: int | None) -> int:
    """Seconds a kubelet gets to stop a pod; 0 (gone at once) for everything else, and for a
    pod that is not on a node or has already finished (as the pod registry decides)."""
    if rtype.kind != "Pod" or not obj.get("spec", {}).get("nodeName"):
        return 0
    if obj.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    return _pod_grace(obj) if requested is None else max(0, int(requested))
