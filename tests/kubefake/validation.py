"""What the API server checks before it stores an object: the official OpenAPI schema of the
served version (through ``kubernetes-validate``) and the hand-written checks of its validation
code (names, labels, quantities, a few per-kind rules), answered as 400 / 422 ``Status``."""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
from kubernetes.utils import parse_quantity
from referencing import Registry, Resource

from tests.kubefake.errors import bad_request, invalid
from tests.kubefake.resources import ResourceType

#: The Kubernetes version the fake serves and validates against (DRA's resource.k8s.io/v1 is GA).
SCHEMA_VERSION = "1.34.0"

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"

SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    f"for validation is '{_DNS1123_SUBDOMAIN}')"
)
LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    f"used for validation is '{_DNS1123_LABEL}')"
)
_LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    f"'my_value',  or '12345', regex used for validation is '{_LABEL_VALUE}')"
)
_QUALIFIED_MESSAGE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    f"validation is '{_QUALIFIED_NAME}')"
)
#: Kinds whose names are DNS-1123 labels (63 characters) rather than subdomains (253).
_LABEL_NAMED = {"Namespace", "Service", "Job"}


def cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field}


def invalid_value(field: str, value: Any, why: str) -> dict[str, str]:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return cause(field, f"Invalid value: {shown}: {why}")


def required(field: str, why: str = "") -> dict[str, str]:
    return cause(field, "Required value" + (f": {why}" if why else ""), "FieldValueRequired")


def _check_name(kind: str, name: str, field: str = "metadata.name") -> list[dict[str, str]]:
    if kind in _LABEL_NAMED:
        if len(name) > 63:
            return [invalid_value(field, name, "must be no more than 63 characters")]
        if not re.fullmatch(_DNS1123_LABEL, name):
            return [invalid_value(field, name, LABEL_MESSAGE)]
        return []
    if len(name) > 253:
        return [invalid_value(field, name, "must be no more than 253 characters")]
    if not re.fullmatch(_DNS1123_SUBDOMAIN, name):
        return [invalid_value(field, name, SUBDOMAIN_MESSAGE)]
    return []


def _check_key(field: str, key: str) -> list[dict[str, str]]:
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not re.fullmatch(_DNS1123_SUBDOMAIN, prefix)):
        problems.append(invalid_value(field, key, "prefix part " + SUBDOMAIN_MESSAGE))
    if not name or len(name) > 63 or not re.fullmatch(_QUALIFIED_NAME, name):
        problems.append(invalid_value(field, key, _QUALIFIED_MESSAGE))
    return problems


def check_labels(field: str, labels: dict[str, Any] | None) -> list[dict[str, str]]:
    """Label keys are qualified names, values 63-character label values."""
    problems = []
    for key, value in (labels or {}).items():
        problems += _check_key(field, key)
        if not isinstance(value, str) or len(value) > 63 or not re.fullmatch(_LABEL_VALUE, value):
            problems.append(invalid_value(f"{field}", value, _LABEL_VALUE_MESSAGE))
    return problems


def _check_quantities(field: str, values: dict[str, Any] | None) -> list[dict[str, str]]:
    problems = []
    for name, value in (values or {}).items():
        try:
            parse_quantity(value)
        except ValueError:
            problems.append(
                invalid_value(
                    f"{field}[{name}]",
                    value,
                    "quantities must match the regular expression "
                    "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )
            )
    return problems


def _check_pod_spec(field: str, spec: dict[str, Any]) -> list[dict[str, str]]:
    problems = []
    names = set()
    for kind in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(kind) or []):
            at = f"{field}.{kind}[{i}]"
            name = container.get("name", "")
            if not re.fullmatch(_DNS1123_LABEL, name) or len(name) > 63:
                problems.append(invalid_value(f"{at}.name", name, LABEL_MESSAGE))
            if name in names:
                problems.append(
                    cause(f"{at}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate")
                )
            names.add(name)
            if not container.get("image"):
                problems.append(required(f"{at}.image"))
            resources = container.get("resources") or {}
            problems += _check_quantities(f"{at}.resources.limits", resources.get("limits"))
            problems += _check_quantities(f"{at}.resources.requests", resources.get("requests"))
            for res, value in (resources.get("requests") or {}).items():
                limit = (resources.get("limits") or {}).get(res)
                if limit is not None and _quantity(value) > _quantity(limit):
                    problems.append(
                        invalid_value(
                            f"{at}.resources.requests",
                            value,
                            f"must be less than or equal to {res} limit of {limit}",
                        )
                    )
                if _extended(res) and limit is None:
                    problems.append(
                        required(
                            f"{at}.resources.limits",
                            "Limit must be set for non overcommitable resources",
                        )
                    )
                elif _extended(res) and _quantity(limit) != _quantity(value):
                    problems.append(
                        invalid_value(
                            f"{at}.resources.requests[{res}]",
                            value,
                            f"must be equal to {res} limit of {limit}",
                        )
                    )
            for section in ("limits", "requests"):
                for res, value in (resources.get(section) or {}).items():
                    if _extended(res) and not float(_quantity(value)).is_integer():
                        problems.append(
                            invalid_value(
                                f"{at}.resources.{section}[{res}]", value, "must be an integer"
                            )
                        )
    if not spec.get("containers"):
        problems.append(required(f"{field}.containers"))
    return problems


def _extended(resource: str) -> bool:
    """Extended resources (``nvidia.com/gpu``, MIG and sharing names): not overcommitable,
    whole numbers only."""
    return "/" in resource and not resource.startswith(("kubernetes.io/", "requests."))


def _quantity(value: Any) -> float:
    try:
        return float(parse_quantity(value))
    except ValueError:
        return 0.0


def _kind_checks(rtype: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
    spec = obj.get("spec") or {}
    if rtype.kind == "Pod":
        return _check_pod_spec("spec", spec)
    if rtype.kind in ("Job", "Deployment", "ReplicaSet"):
        template = spec.get("template") or {}
        problems = check_labels(
            "spec.template.metadata.labels", (template.get("metadata") or {}).get("labels")
        )
        problems += _check_pod_spec("spec.template.spec", template.get("spec") or {})
        policy = (template.get("spec") or {}).get("restartPolicy")
        if rtype.kind == "Job" and policy not in ("Never", "OnFailure"):
            problems.append(
                cause(
                    "spec.template.spec.restartPolicy",
                    f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
                    "FieldValueNotSupported",
                )
            )
        if rtype.kind != "Job" and policy not in (None, "Always"):
            problems.append(
                cause(
                    "spec.template.spec.restartPolicy",
                    f'Unsupported value: "{policy}": supported values: "Always"',
                    "FieldValueNotSupported",
                )
            )
        return problems
    return []


def validate(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """Raise the 400 / 422 the API server gives for ``obj``; return when it would store it."""
    meta = obj.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or ""
    problems: list[dict[str, str]] = []
    if not meta.get("name") and not meta.get("generateName"):
        problems.append(required("metadata.name", "name or generateName is required"))
    elif meta.get("name"):
        problems += _check_name(rtype.kind, meta["name"])
    problems += check_labels("metadata.labels", meta.get("labels"))
    for key in meta.get("annotations") or {}:
        problems += _check_key("metadata.annotations", key)
    if not problems:
        problems += _schema_problems(rtype, obj)
    if not problems:
        problems += _kind_checks(rtype, obj)
    if problems:
        raise invalid(rtype, name, problems)


@functools.cache
def _validator(api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
    """The strict schema validator of one kind, built once: ``kubernetes_validate.validate``
    reads and parses the schema files (megabytes) again on every call, ~40 ms an object."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"kubernetes-json-schema/v{SCHEMA_VERSION.rsplit('.', 1)[0]}.0-local-strict"
    try:
        schema = kubernetes_validate.utils.schema_contents(
            f"{directory}/{kind.lower()}-{group_version}.json", SCHEMA_VERSION
        )
    except FileNotFoundError:
        return None  # a kind the schema set lacks
    definitions = kubernetes_validate.utils.schema_contents(
        f"{directory}/_definitions.json", SCHEMA_VERSION
    )
    registry: referencing.Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def _schema_problems(rtype: ResourceType, obj: dict[str, Any]) -> list[dict[str, str]]:
    document = {**obj, "apiVersion": rtype.api_version, "kind": rtype.kind}
    validator = _validator(rtype.api_version, rtype.kind)
    if validator is None:
        return []
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is None:
        return []
    field = _field_path(list(error.path))
    if error.validator == "additionalProperties":
        unknown = re.findall(r"'([^']+)' was unexpected", error.message)
        where = f"{field}." if field else ""
        raise bad_request(
            "strict decoding error: "
            + ", ".join(f'unknown field "{where}{u}"' for u in unknown or ["?"])
        )
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return [required(f"{field}.{m}" if field else m) for m in missing]
    return [cause(field, f"Invalid value: {error.message}")]


def _field_path(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "
    "to 1 if it was previously negative)"
)


def _without_images(spec: dict[str, Any]) -> dict[str, Any]:
    spec = {
        k: v
        for k, v in spec.items()
        if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
    }
    for kind in ("containers", "initContainers"):
        if kind in spec:
            spec[kind] = [{k: v for k, v in c.items() if k != "image"} for c in spec[kind]]
    return spec


def validate_update(rtype: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
    """The immutable fields an update may not change, refused as the server refuses them."""
    name = old["metadata"]["name"]
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    problems = []
    if rtype.kind == "Pod" and _without_images(old_spec) != _without_images(new_spec):
        problems.append(cause("spec", f"Forbidden: {_POD_UPDATE_FORBIDDEN}", "FieldValueForbidden"))
    if rtype.kind == "Job":
        for field in ("template", "selector", "completionMode"):
            if old_spec.get(field) != new_spec.get(field) and not (
                field == "template" and old_spec.get("suspend")
            ):
                problems.append(invalid_value(f"spec.{field}", "...", "field is immutable"))
    if rtype.kind in ("Deployment", "ReplicaSet") and old_spec.get("selector") != new_spec.get(
        "selector"
    ):
        problems.append(invalid_value("spec.selector", "...", "field is immutable"))
    if problems:
        raise invalid(rtype, name, problems)
