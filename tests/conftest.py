"""Session-wide fixtures: real services, started by the project's own scripts."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servicekit import start_service, stop_service

ServiceStarter = Callable[[str], dict[str, str]]


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStarter]:
    """``services("postgres")`` starts that service once per session and returns its env."""
    root = tmp_path_factory.mktemp("services")
    started: dict[str, dict[str, str]] = {}

    def start(name: str) -> dict[str, str]:
        if name not in started:
            started[name] = start_service(name, root / name)
        return started[name]

    yield start
    for name in reversed(list(started)):
        stop_service(name, root / name)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own MLYARD_HOME, so no test sees another's runs."""
    monkeypatch.setenv("MLYARD_HOME", str(tmp_path / "mlyard-home"))
    for key in list(os.environ):
        if key.startswith("MLYARD_") and key != "MLYARD_HOME":
            monkeypatch.delenv(key)
    # mlyard honours MLflow's own variables where its tracking setting is unset.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
