"""``Status`` error bodies, worded as the real API server words them."""

from __future__ import annotations

from typing import Any

from tests.kubefake.resources import ResourceType

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "AlreadyExists",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
}


class ApiError(Exception):
    """An API failure answered as a ``Status`` object with ``code``."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``Status`` body."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(rtype: ResourceType, name: str | None, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if rtype.group:
        details["group"] = rtype.group
    details["kind"] = rtype.plural
    details.update(extra)
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.qualified} "{name}" not found', details=_details(rtype, name))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, f'{rtype.qualified} "{name}" already exists', details=_details(rtype, name)
    )


def conflict(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        reason="Conflict",
        details=_details(rtype, name),
    )


def forbidden(
    rtype: ResourceType,
    name: str | None,
    user: str,
    verb: str,
    subresource: str | None,
    namespace: str | None,
    why: str = "",
) -> ApiError:
    resource = f"{rtype.plural}/{subresource}" if subresource else rtype.plural
    subject = f'{rtype.qualified} "{name}"' if name else rtype.qualified
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{rtype.group}" {scope}'
    )
    return ApiError(403, message + why, details=_details(rtype, name))


def forbidden_admission(rtype: ResourceType, name: str | None, why: str) -> ApiError:
    """An admission plugin's refusal: ``pods "x" is forbidden: <why>``."""
    subject = f'{rtype.qualified} "{name}"' if name else rtype.qualified
    return ApiError(403, f"{subject} is forbidden: {why}", details=_details(rtype, name))


def invalid(rtype: ResourceType, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid; each cause is ``{"field", "reason", "message"}`` as the server reports."""
    summary = ", ".join(
        f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes
    )
    kind_group = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    if len(causes) > 1:
        summary = f"[{summary}]"
    return ApiError(
        422,
        f'{kind_group} "{name}" is invalid: {summary}',
        details={**_details(rtype, name, kind=rtype.kind), "causes": causes},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


def expired(message: str) -> ApiError:
    return ApiError(410, message, reason="Expired")
