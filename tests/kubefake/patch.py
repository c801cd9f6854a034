"""The three patch types the API server accepts on JSON objects."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from tests.kubefake.errors import ApiError, bad_request

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, ``null`` removes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _named(items: Any) -> bool:
    return isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A strategic merge patch as most Kubernetes types define it: like a merge patch, except
    that lists of named objects (containers, env, ports, volumes) merge item by item on
    ``name``, and ``$patch: delete`` on such an item removes it."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif _named(value) and _named(result.get(key)):
            merged = {item["name"]: item for item in result[key]}
            order = [item["name"] for item in result[key]]
            for item in value:
                if item.get("$patch") == "delete":
                    merged.pop(item["name"], None)
                    continue
                if item["name"] not in merged:
                    order.append(item["name"])
                merged[item["name"]] = strategic_merge_patch(merged.get(item["name"]), item)
            result[key] = [merged[n] for n in order if n in merged]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def apply_patch(content_type: str, target: dict[str, Any], body: Any) -> dict[str, Any]:
    """Apply ``body`` of ``content_type`` to ``target``; a bad patch is 422 as on the server."""
    kind = content_type.split(";")[0].strip()
    if kind == JSON_PATCH:
        if not isinstance(body, list):
            raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            result: dict[str, Any] = jsonpatch.apply_patch(target, body)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(
                422, f"the server rejected our request due to an error in our request: {exc}"
            ) from exc
        return result
    if not isinstance(body, dict):
        raise bad_request(
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    if kind == MERGE_PATCH:
        merged: dict[str, Any] = merge_patch(target, body)
        return merged
    if kind in (STRATEGIC_MERGE_PATCH, APPLY_PATCH):
        strategic: dict[str, Any] = strategic_merge_patch(target, body)
        return strategic
    raise ApiError(
        415,
        f"the body of the request was in an unknown format - accepted media types "
        f"include: {JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH}, "
        f"{APPLY_PATCH}",
    )
