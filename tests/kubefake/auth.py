"""Bearer-token authentication and RBAC-style authorization from ``STATE_DIR/rbac.json``.

``rbac.json`` maps a user name to the rules that user has (``apiGroups`` / ``resources`` /
``verbs`` / optional ``resourceNames`` and ``namespaces``, ``*`` for any); a user it does not
name is a cluster admin. Tests may rewrite the file: it is read again when it changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kubefake.errors import forbidden, unauthorized
from tests.kubefake.resources import ResourceType

ADMIN_USER = "kubernetes-admin"
RESTRICTED_USER = "system:serviceaccount:mlyard:restricted"

#: What ``fake-restricted`` may do when the state dir has no rbac.json yet.
DEFAULT_RULES: dict[str, list[dict[str, Any]]] = {
    RESTRICTED_USER: [
        {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}
    ]
}


@dataclass(frozen=True)
class Request:
    """What a request asks to do, in RBAC terms."""

    verb: str
    rtype: ResourceType
    subresource: str | None
    namespace: str | None
    name: str | None


class Authorizer:
    """Tokens to users, and each user's rules (re-read when ``rbac.json`` changes)."""

    def __init__(self, tokens: dict[str, str], rules_file: Path) -> None:
        self._tokens = tokens
        self._rules_file = rules_file
        self._mtime: float | None = None
        self._rules: dict[str, list[dict[str, Any]]] = {}

    def add_token(self, token: str, user: str) -> None:
        """Accept ``token`` as ``user`` from now on (service-account tokens)."""
        self._tokens[token] = user

    def authenticate(self, header: str | None) -> str:
        """The user a ``Bearer`` token belongs to; anything else is 401 Unauthorized."""
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 7235)
            raise unauthorized()
        user = self._tokens.get(token.strip())
        if user is None:
            raise unauthorized()
        return user

    def _current_rules(self) -> dict[str, list[dict[str, Any]]]:
        try:
            mtime = self._rules_file.stat().st_mtime_ns
        except FileNotFoundError:
            return DEFAULT_RULES
        if mtime != self._mtime:
            self._rules = json.loads(self._rules_file.read_text())
            self._mtime = mtime
        return self._rules

    def authorize(self, user: str, request: Request) -> None:
        """Return when ``user`` may do ``request``; otherwise 403 in the server's words."""
        rules = self._current_rules().get(user)
        if rules is None or any(_allows(rule, request) for rule in rules):
            return
        raise forbidden(
            request.rtype, request.name, user, request.verb, request.subresource, request.namespace
        )


def _allows(rule: dict[str, Any], request: Request) -> bool:
    def has(values: list[str] | None, wanted: str) -> bool:
        return values is not None and ("*" in values or wanted in values)

    resource = request.rtype.plural + (f"/{request.subresource}" if request.subresource else "")
    if not has(rule.get("apiGroups"), request.rtype.group):
        return False
    if not has(rule.get("resources"), resource):
        return False
    if not has(rule.get("verbs"), request.verb):
        return False
    names = rule.get("resourceNames")
    if names and (request.name is None or request.name not in names):
        return False
    namespaces = rule.get("namespaces")
    return not namespaces or request.namespace in namespaces
