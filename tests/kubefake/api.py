"""The REST API: one ASGI app that parses Kubernetes paths and serves every resource type in
resources.py the way the API server does (verbs, subresources, selectors, Status errors)."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.kubefake import discovery, streams, tables
from tests.kubefake.admission import admit
from tests.kubefake.auth import Request as AuthRequest
from tests.kubefake.errors import ApiError, bad_request, conflict
from tests.kubefake.patch import apply_patch
from tests.kubefake.resources import ResourceType, resource_type
from tests.kubefake.selectors import (
    matches_requirements,
    parse_field_selector,
    parse_label_selector,
    selector_string,
)
from tests.kubefake.store import Obj
from tests.kubefake.validation import validate, validate_update

if TYPE_CHECKING:
    from tests.kubefake.cluster import Cluster

_PUBLIC = {"version", "healthz", "readyz", "livez"}
_WITH_STATUS = {
    "Pod",
    "Node",
    "Service",
    "Job",
    "Deployment",
    "ReplicaSet",
    "Namespace",
    "ResourceClaim",
}
#: Registries that answer a delete with the deleted object instead of a Status.
_RETURNS_DELETED = {
    "Pod",
    "Service",
    "ServiceAccount",
    "DeviceClass",
    "ResourceClaim",
    "ResourceClaimTemplate",
}
_JOB_DELETE_WARNING = (
    '299 - "child pods are preserved by default when jobs are deleted; set '
    "propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress "
    'this warning"'
)


def _json(body: Any, code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=code, headers=headers)


class Target:
    """A parsed resource path: ``/apis/batch/v1/namespaces/ns/jobs/name/status``."""

    def __init__(
        self, rtype: ResourceType, namespace: str | None, name: str | None, sub: str | None
    ) -> None:
        self.rtype, self.namespace, self.name, self.sub = rtype, namespace, name, sub


def _parse_target(parts: list[str]) -> Target | None:
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    rtype = resource_type(group, version, rest[0])
    if rtype is None or len(rest) > 3 or (namespace is not None and not rtype.namespaced):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in rtype.subresources:
        return None
    return Target(rtype, namespace, name, sub)


def _verb(method: str, target: Target, watch: bool) -> str:
    if method == "GET":
        return "get" if target.name else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def build_app(cluster: Cluster) -> Starlette:
    """The ASGI app serving ``cluster``."""
    api = Api(cluster)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", api.handle, methods=methods)])


class Api:
    """Request handling; ``handle`` maps every ``ApiError`` to its ``Status`` body."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = cluster.store

    async def handle(self, request: Request) -> Response:
        self.cluster.request_count += 1
        try:
            return await self._handle(request)
        except ApiError as exc:
            return _json(exc.status(), exc.code)

    async def _handle(self, request: Request) -> Response:
        parts = [p for p in request.url.path.split("/") if p]
        if parts[:1] and parts[0] in _PUBLIC and len(parts) == 1:
            if parts[0] == "version":
                return _json(discovery.version_info())
            return PlainTextResponse("ok")
        user = self.cluster.authorizer.authenticate(request.headers.get("authorization"))
        found = self._discovery(parts)
        if found is not None:
            return _json(found)
        target = _parse_target(parts)
        if target is None:
            raise ApiError(404, "the server could not find the requested resource", details={})
        query = request.query_params
        watch = streams.parse_bool(query.get("watch", "false"))
        verb = _verb(request.method, target, watch)
        self.cluster.authorizer.authorize(
            user, AuthRequest(verb, target.rtype, target.sub, target.namespace, target.name)
        )
        if target.sub == "log":
            return await self.cluster.logs.serve(target, query)
        if request.method == "GET":
            accept = request.headers.get("accept", "")
            if target.name:
                found = self._view(target, self._get(target))
                if target.sub is None and tables.wants_table(accept):
                    return _json(
                        tables.table(target.rtype, [found], found["metadata"]["resourceVersion"])
                    )
                return _json(found)
            return self._collection(target, query, watch, tables.wants_table(accept))
        body = await self._body(request)
        if request.method == "POST":
            return self._create(target, body, query)
        if request.method == "PUT":
            return self._replace(target, body)
        if request.method == "PATCH":
            return self._patch(target, request.headers.get("content-type", ""), body)
        return self._delete(target, body, query)

    def _discovery(self, parts: list[str]) -> dict[str, Any] | None:
        if parts == ["api"]:
            return discovery.api_versions(self.cluster.address)
        if parts == ["apis"]:
            return discovery.api_group_list()
        if len(parts) == 2 and parts[0] == "api":
            return discovery.api_resource_list("", parts[1])
        if len(parts) == 2 and parts[0] == "apis":
            return discovery.api_group(parts[1])
        if len(parts) == 3 and parts[0] == "apis":
            return discovery.api_resource_list(parts[1], parts[2])
        return None

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return None
        content_type = request.headers.get("content-type", "")
        if "protobuf" in content_type or "cbor" in content_type:
            # client-go sends JSON again after a 415 (the fake speaks no protobuf)
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted "
                f"media types include: application/json, application/yaml, "
                f"application/json-patch+json, application/merge-patch+json, "
                f'application/strategic-merge-patch+json (got "{content_type}")',
            )
        try:
            if "yaml" in request.headers.get("content-type", ""):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from exc

    def _get(self, target: Target) -> Obj:
        assert target.name is not None
        return self.store.get(target.rtype, target.namespace or "", target.name)

    # -- views of subresources -------------------------------------------------------------

    @staticmethod
    def _view(target: Target, obj: Obj) -> Obj:
        if target.sub != "scale":
            return obj
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": selector_string(obj["spec"].get("selector")),
            },
        }

    def _merge_into(self, target: Target, current: Obj, desired: Obj) -> Obj:
        """What a write to the resource or one of its subresources changes of ``current``."""
        if target.sub == "scale":
            new = copy.deepcopy(current)
            new["spec"]["replicas"] = int((desired.get("spec") or {}).get("replicas", 0))
            return new
        if target.sub == "status":
            new = copy.deepcopy(current)
            new["status"] = desired.get("status", {})
            return new
        new = copy.deepcopy(desired)
        new.setdefault("metadata", {})
        if target.rtype.kind in _WITH_STATUS:
            new["status"] = copy.deepcopy(current.get("status", {}))
        for key in ("name", "namespace", "uid", "creationTimestamp"):
            if key in current["metadata"]:
                new["metadata"][key] = current["metadata"][key]
        return new

    # -- verbs -----------------------------------------------------------------------------

    def _matcher(self, target: Target, query: Any) -> streams.Matcher:
        requirements = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(target.rtype.kind, query.get("fieldSelector"))
        namespace = target.namespace

        def matches(obj: Obj) -> bool:
            meta = obj["metadata"]
            if namespace is not None and meta.get("namespace") != namespace:
                return False
            return matches_requirements(meta.get("labels"), requirements) and fields(obj)

        return matches

    def _collection(self, target: Target, query: Any, watch: bool, as_table: bool) -> Response:
        matches = self._matcher(target, query)
        if watch:
            timeout = float(query.get("timeoutSeconds") or 1800)
            lines = streams.watch_lines(
                self.store,
                target.rtype,
                matches,
                query.get("resourceVersion"),
                timeout,
                streams.parse_bool(query.get("allowWatchBookmarks")),
            )
            return StreamingResponse(lines, media_type="application/json")
        items = self.store.list(target.rtype, predicate=matches)
        rv = str(self.store.resource_version)
        start = int(query.get("continue") or 0) if (query.get("continue") or "0").isdigit() else 0
        limit = int(query.get("limit") or 0)
        metadata: dict[str, Any] = {"resourceVersion": rv}
        page = items[start:]
        if limit and len(page) > limit:
            page = page[:limit]
            metadata["continue"] = str(start + limit)
            metadata["remainingItemCount"] = len(items) - start - limit
        if as_table and not watch:
            return _json(tables.table(target.rtype, page, rv) | {"metadata": metadata})
        for item in page:  # list items carry no kind / apiVersion, as on the server
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return _json(
            {
                "kind": f"{target.rtype.kind}List",
                "apiVersion": target.rtype.api_version,
                "metadata": metadata,
                "items": page,
            }
        )

    def _create(self, target: Target, body: Any, query: Any) -> Response:
        if target.sub == "eviction":
            return self.cluster.evict(target.namespace or "", target.name or "", body or {})
        if target.sub == "binding":
            return self.cluster.bind(target.namespace or "", target.name or "", body or {})
        if target.name:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if not isinstance(body, dict):
            raise bad_request("the body of the request must be an object")
        meta = body.setdefault("metadata", {})
        if target.rtype.namespaced:
            namespace = target.namespace or meta.get("namespace")
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
        validate(target.rtype, body)
        obj = admit(self.store, target.rtype, body, self.cluster.ips)
        validate(target.rtype, obj)
        if query.get("dryRun") == "All":
            return _json(obj, 201)
        return _json(self.store.create(target.rtype, obj), 201)

    def _write(self, target: Target, current: Obj, desired: Obj, expect_rv: str | None) -> Obj:
        new = self._merge_into(target, current, desired)
        if target.sub is None:
            validate(target.rtype, new)
            validate_update(target.rtype, current, new)
        return self.store.update(target.rtype, new, expect_rv)

    def _replace(self, target: Target, body: Any) -> Response:
        if not isinstance(body, dict) or target.name is None:
            raise bad_request("the body of the request must be an object")
        current = self._get(target)
        name = (body.get("metadata") or {}).get("name")
        if name and name != target.name:
            raise bad_request("the name of the object does not match the name on the URL")
        expect = (body.get("metadata") or {}).get("resourceVersion")
        if target.sub == "scale" and expect and expect != current["metadata"]["resourceVersion"]:
            raise conflict(target.rtype, target.name)
        return _json(self._view(target, self._write(target, current, body, expect)))

    def _patch(self, target: Target, content_type: str, body: Any) -> Response:
        current = self._get(target)
        view = self._view(target, current)
        patched = apply_patch(content_type, view, body)
        expect = None
        if isinstance(body, dict):
            expect = (body.get("metadata") or {}).get("resourceVersion")
        return _json(self._view(target, self._write(target, current, patched, expect)))

    def _delete(self, target: Target, body: Any, query: Any) -> Response:
        options = body if isinstance(body, dict) else {}
        policy = options.get("propagationPolicy") or query.get("propagationPolicy")
        if options.get("orphanDependents") is not None or query.get("orphanDependents"):
            orphan = options.get(
                "orphanDependents", streams.parse_bool(query.get("orphanDependents"))
            )
            policy = policy or ("Orphan" if orphan else "Background")
        headers = {}
        if policy is None and target.rtype.kind == "Job":
            policy = "Orphan"  # batch/v1 Jobs orphan their pods unless told otherwise
            headers["Warning"] = _JOB_DELETE_WARNING
        grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        grace_seconds = int(grace) if grace is not None else None
        preconditions = options.get("preconditions") or {}
        finalizer = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(policy or "")
        if target.rtype.kind == "Namespace":
            finalizer = "kubernetes"  # emptied by the namespace controller, then gone
        if target.name is None:
            gone = []
            for obj in self.store.list(target.rtype, predicate=self._matcher(target, query)):
                deleted, _ = self.store.delete(
                    target.rtype,
                    obj["metadata"].get("namespace", ""),
                    obj["metadata"]["name"],
                    grace_seconds,
                    finalizer,
                )
                gone.append(deleted)
            return _json(
                {
                    "kind": f"{target.rtype.kind}List",
                    "apiVersion": target.rtype.api_version,
                    "metadata": {"resourceVersion": str(self.store.resource_version)},
                    "items": gone,
                },
                headers=headers,
            )
        obj, removed = self.store.delete(
            target.rtype,
            target.namespace or "",
            target.name,
            grace_seconds,
            finalizer,
            preconditions.get("uid"),
            preconditions.get("resourceVersion"),
        )
        if not removed or target.rtype.kind in _RETURNS_DELETED:
            return _json(obj, headers=headers)
        details: dict[str, Any] = {
            "name": target.name,
            "kind": target.rtype.plural,
            "uid": obj["metadata"]["uid"],
        }
        if target.rtype.group:
            details["group"] = target.rtype.group
        return _json(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            },
            headers=headers,
        )
