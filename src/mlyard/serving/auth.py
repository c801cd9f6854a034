"""Who may call the model server: loopback binds are open, anything else needs a bearer token.

The token comes from ``--token-file`` or ``MLYARD_SERVE_TOKEN``; it is never logged. Health
endpoints stay open so probes need no secret; every other route checks
``Authorization: Bearer <token>`` in constant time, over HTTP here and over gRPC (the same value
in the ``authorization`` metadata) in ``grpc_server.py``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from mlyard.errors import ConfigError

TOKEN_ENVIRONMENT_VARIABLE = "MLYARD_SERVE_TOKEN"
#: Routes a load balancer or kubelet probes without credentials.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
#: The gRPC counterparts of ``OPEN_PATHS``.
OPEN_RPCS = frozenset(
    {"/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady"}
)


def expected_authorization(token: str) -> bytes:
    """The ``Authorization`` header (HTTP) or ``authorization`` metadata (gRPC) to require."""
    return f"Bearer {token}".encode()


def authorization_matches(presented: bytes, expected: bytes) -> bool:
    """Whether ``presented`` is the expected credential, compared in constant time."""
    return hmac.compare_digest(presented, expected)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything


def resolve_token(host: str, token_file: Path | None, environ: dict[str, str]) -> str | None:
    """The token to require, or ``None`` on a loopback bind without one.

    Raises ``ConfigError`` for a non-loopback ``host`` without a token, or an unreadable or
    empty token file.
    """
    token: str | None = None
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"Could not read the token file {token_file}: {exc.strerror}",
                hint="Pass a readable file holding the token on its first line.",
            ) from exc
        if not token:
            raise ConfigError(
                f"The token file {token_file} is empty.",
                hint="Write a long random token into it, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
            )
    elif environ.get(TOKEN_ENVIRONMENT_VARIABLE, "").strip():
        token = environ[TOKEN_ENVIRONMENT_VARIABLE].strip()
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"Refusing to serve on {host} without a token: anyone who can reach it could use "
            "the model.",
            hint=f"Pass --token-file FILE or set {TOKEN_ENVIRONMENT_VARIABLE}; clients then send "
            "'Authorization: Bearer <token>'. Or bind 127.0.0.1.",
        )
    return token


class BearerTokenMiddleware:
    """ASGI middleware answering 401 unless the request carries the expected bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = expected_authorization(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = dict(scope["headers"]).get(b"authorization", b"")
        if authorization_matches(presented, self._expected):
            await self.app(scope, receive, send)
            return
        await send_json_error(
            send,
            401,
            "missing or wrong bearer token",
            extra_headers=[(b"www-authenticate", b"Bearer")],
        )


async def send_json_error(
    send: Send, status: int, message: str, extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer with a v2 error body ``{"error": message}`` straight from ASGI middleware."""
    body = json.dumps({"error": message}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
