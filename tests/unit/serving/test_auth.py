"""Loopback binds are open; any other bind needs a token, read from a file or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.errors import ConfigError
from mlyard.serving.auth import TOKEN_ENVIRONMENT_VARIABLE, is_loopback, resolve_token


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("example.org", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_loopback_without_token_is_open() -> None:
    assert resolve_token("127.0.0.1", None, {}) is None


def test_public_bind_without_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="without a token") as caught:
        resolve_token("0.0.0.0", None, {})
    assert caught.value.hint is not None and "--token-file" in caught.value.hint


def test_token_from_file_wins_over_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    environ = {TOKEN_ENVIRONMENT_VARIABLE: "from-env"}
    assert resolve_token("0.0.0.0", token_file, environ) == "from-file"
    assert resolve_token("0.0.0.0", None, environ) == "from-env"


@pytest.mark.parametrize("content", [None, ""])
def test_missing_or_empty_token_file_is_an_error(tmp_path: Path, content: str | None) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(ConfigError, match="token file"):
        resolve_token("0.0.0.0", token_file, {})
