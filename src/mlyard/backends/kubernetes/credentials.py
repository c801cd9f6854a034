"""Which values of a service are credentials, and how they are shown to people.

A broker or tracking URL can carry a password (``redis://:PASSWORD@host``,
``kafka://user:pass@host``, ``https://user:token@mlflow``), a token as its user
(``https://TOKEN@host``) or a secret option (``?password=...``). Such values never go into a
Deployment: ``service_manifests`` moves them into the service's credentials Secret, and dry runs
print them through ``redact``.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

#: Query options that hold secrets rather than settings.
_SECRET_OPTION = re.compile(r"pass|secret|token|credential|api[-_]?key|private", re.IGNORECASE)
REDACTED = "***"


def carries_credentials(value: str) -> bool:
    """Whether ``value`` is a URL with user information or a secret query option."""
    if "://" not in value:
        return False
    try:
        parts = urlsplit(value)
        has_userinfo = parts.username is not None or parts.password is not None
    except ValueError:  # a URL that cannot be parsed cannot be shown safely either
        return True
    if has_userinfo:
        return True
    return any(_SECRET_OPTION.search(key) for key, _ in parse_qsl(parts.query))


def redact(value: str) -> str:
    """``value`` with its password (or a user that is a token) and secret options as ``***``;
    values without credentials unchanged."""
    if not carries_credentials(value):
        return value
    try:
        parts = urlsplit(value)
        username, password = parts.username, parts.password
    except ValueError:
        return REDACTED
    host = parts.netloc.rpartition("@")[2]
    if password is not None:
        netloc = f"{username or ''}:{REDACTED}@{host}"
    elif username is not None:  # a user without a password is often a token
        netloc = f"{REDACTED}@{host}"
    else:
        netloc = host
    options = [
        (key, REDACTED if _SECRET_OPTION.search(key) else option)
        for key, option in parse_qsl(parts.query, keep_blank_values=True)
    ]
    query = urlencode(options, safe="*/:")
    # Not urlunsplit: it turns sqlite:///path into sqlite:/path.
    text = f"{parts.scheme}://{netloc}{parts.path}"
    return text + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
