"""Names and labels of the objects an attempt creates, derived from its attempt id alone, so a
restarted orchestrator finds them again by name or label selector."""

from __future__ import annotations

import hashlib
import re

#: Object names are DNS-1123 labels (Services need it; Jobs add a pod-name suffix after them).
MAX_NAME_LENGTH = 63
MAX_LABEL_VALUE_LENGTH = 63
NAME_PREFIX = "mlyard-"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlyard"
RUN_ID_LABEL = "mlyard.io/run-id"
ATTEMPT_ID_LABEL = "mlyard.io/attempt-id"
STEP_LABEL = "mlyard.io/step"
BACKEND_LABEL = "mlyard.io/backend"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: Set on a Job just before mlyard deletes it, so a poll that still sees it reports CANCELLED.
CANCELLED_ANNOTATION = "mlyard.io/cancelled"
#: The full attempt id, which a label value may have had to shorten.
ATTEMPT_ID_ANNOTATION = "mlyard.io/attempt-id"

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")
_HASH_LENGTH = 8


def _shorten(text: str, limit: int, separator: str) -> str:
    """``text`` cut to ``limit`` characters; a cut one ends with a hash of the whole, so two
    long ids that share a prefix still get different names."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]
    head = text[: limit - _HASH_LENGTH - len(separator)].rstrip("-.")
    return f"{head}{separator}{digest}"


def dns_name(text: str, *, prefix: str = NAME_PREFIX, limit: int = MAX_NAME_LENGTH) -> str:
    """A DNS-1123 label (lower case alphanumerics and '-', starting and ending alphanumeric,
    at most ``limit`` characters) made from ``text``."""
    body = _NOT_DNS.sub("-", f"{prefix}{text}".lower()).strip("-") or "x"
    name = _shorten(body, limit, "-").strip("-")
    return name if name[0].isalpha() else f"x{name}"[:limit]


def job_name(attempt_id: str) -> str:
    """The Job of an attempt: ``mlyard-<run>-<step index>-<attempt>``."""
    return dns_name(attempt_id)


def label_value(text: str) -> str:
    """A valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    value = _NOT_LABEL.sub("-", text).strip("-._")
    return _shorten(value, MAX_LABEL_VALUE_LENGTH, "-").strip("-._")


def attempt_labels(*, backend: str, run_id: str, attempt_id: str, step: str) -> dict[str, str]:
    """The labels every object of an attempt carries."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        BACKEND_LABEL: label_value(backend),
        RUN_ID_LABEL: label_value(run_id),
        ATTEMPT_ID_LABEL: label_value(attempt_id),
        STEP_LABEL: label_value(step),
    }


def selector(labels: dict[str, str]) -> str:
    """A label selector matching every label in ``labels``."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def backend_selector(backend: str) -> str:
    """Every object this backend profile manages."""
    return selector({MANAGED_BY_LABEL: MANAGED_BY, BACKEND_LABEL: label_value(backend)})
