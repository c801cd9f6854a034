"""Label selectors (``a=b,c!=d,e in (f,g),!h``), ``LabelSelector`` objects and field selectors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.kubefake.errors import bad_request

Requirement = tuple[str, str, frozenset[str]]  # (key, operator, values)

_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses (``in (a,b)`` stays whole)."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse the ``labelSelector`` query parameter; a malformed one is a 400 as on the server."""
    if not text:
        return []
    requirements: list[Requirement] = []
    for part in _split_top_level(text):
        equality = _EQ.match(part)
        if equality:
            key, operator, value = equality.groups()
            requirements.append((key, "!=" if operator == "!=" else "=", frozenset([value])))
            continue
        in_set = _SET.match(part)
        if not in_set:
            raise bad_request(
                f"unable to parse requirement: found '{part.strip()}', expected: "
                "in, notin, =, ==, !=, gt, lt"
            )
        negated, key, operator, values = in_set.groups()
        if operator:
            vals = frozenset(v.strip() for v in values.split(",") if v.strip())
            requirements.append((key, operator, vals))
        else:
            requirements.append((key, "!" if negated else "exists", frozenset()))
    return requirements


def matches_requirements(labels: dict[str, str] | None, requirements: list[Requirement]) -> bool:
    """Whether ``labels`` satisfy every requirement."""
    labels = labels or {}
    for key, operator, values in requirements:
        present = key in labels
        value = labels.get(key)
        if operator == "=" and (not present or value not in values):
            return False
        if operator == "!=" and present and value in values:
            return False
        if operator == "in" and (not present or value not in values):
            return False
        if operator == "notin" and present and value in values:
            return False
        if operator == "exists" and not present:
            return False
        if operator == "!" and present:
            return False
    return True


def label_selector_requirements(selector: dict[str, Any] | None) -> list[Requirement]:
    """A ``LabelSelector`` object (``matchLabels`` + ``matchExpressions``) as requirements."""
    selector = selector or {}
    requirements: list[Requirement] = [
        (key, "=", frozenset([value])) for key, value in (selector.get("matchLabels") or {}).items()
    ]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expression in selector.get("matchExpressions") or []:
        requirements.append(
            (
                expression["key"],
                operators[expression["operator"]],
                frozenset(expression.get("values") or []),
            )
        )
    return requirements


def selector_string(selector: dict[str, Any] | None) -> str:
    """``matchLabels`` as the ``a=b,c=d`` string a Scale's ``status.selector`` carries."""
    labels = (selector or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _path(obj: dict[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


#: Fields each kind allows in ``fieldSelector`` (beyond metadata.name and metadata.namespace).
FIELD_LABELS: dict[str, tuple[str, ...]] = {
    "Pod": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "Event": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "Secret": ("type",),
    "Node": ("spec.unschedulable",),
    "Job": ("status.successful",),
    "Namespace": ("status.phase",),
    "ReplicaSet": ("status.replicas",),
}


def parse_field_selector(kind: str, text: str | None) -> Callable[[dict[str, Any]], bool]:
    """A predicate for ``fieldSelector``; an unsupported field is a 400 as on the server."""
    if not text:
        return lambda _obj: True
    allowed = {"metadata.name", "metadata.namespace", *FIELD_LABELS.get(kind, ())}
    terms: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field_name, operator, value = match.groups()
        if field_name not in allowed:
            raise bad_request(f"field label not supported: {field_name}")
        terms.append((field_name, operator == "!=", value))

    def predicate(obj: dict[str, Any]) -> bool:
        for field_name, negate, value in terms:
            actual = _path(obj, "source.component" if field_name == "source" else field_name)
            if (actual == value) == negate:
                return False
        return True

    return predicate
