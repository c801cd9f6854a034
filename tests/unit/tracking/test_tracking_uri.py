"""Where runs are tracked and models registered: mlyard's setting, then MLflow's variables, then
the embedded store (the order the README's configuration table states)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.settings import load_settings
from mlyard.tracking.factory import create_tracker
from mlyard.tracking.mlflow_tracker import MlflowTracker
from mlyard.tracking.null import NullTracker

SERVER = "http://127.0.0.1:5999"
REGISTRY = "http://127.0.0.1:5998"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    return directory


def _write_toml(project: Path, body: str) -> None:
    (project / "mlyard.toml").write_text(body)


def test_nothing_set_is_the_embedded_store_under_home(project: Path) -> None:
    settings = load_settings(project)

    assert settings.tracking_uri == f"sqlite:///{settings.home / 'mlflow.db'}"
    assert settings.registry_uri == settings.tracking_uri


def test_mlflow_tracking_uri_is_used_when_mlyard_sets_none(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)

    settings = load_settings(project)

    assert (settings.tracking_uri, settings.registry_uri) == (SERVER, SERVER)
    tracker = create_tracker(settings)
    assert isinstance(tracker, MlflowTracker)
    assert (tracker.uri, tracker.registry_uri) == (SERVER, SERVER)


def test_mlflow_registry_uri_is_used_with_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", REGISTRY)

    settings = load_settings(project)

    assert (settings.tracking_uri, settings.registry_uri) == (SERVER, REGISTRY)
    tracker = create_tracker(settings)
    assert isinstance(tracker, MlflowTracker)
    assert tracker.registry_uri == REGISTRY


def test_mlflow_registry_uri_alone_keeps_the_embedded_tracking_store(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", REGISTRY)

    settings = load_settings(project)

    assert settings.tracking_uri == f"sqlite:///{settings.home / 'mlflow.db'}"
    assert settings.registry_uri == REGISTRY


@pytest.mark.parametrize("where", ["mlyard.toml", "MLYARD_TRACKING__URI"])
def test_mlyards_own_setting_beats_both_mlflow_variables(
    project: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    mine = "sqlite:////tmp/mine/mlflow.db"
    if where == "mlyard.toml":
        _write_toml(project, f'[tracking]\nuri = "{mine}"\n')
    else:
        monkeypatch.setenv("MLYARD_TRACKING__URI", mine)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", REGISTRY)

    settings = load_settings(project)

    assert (settings.tracking_uri, settings.registry_uri) == (mine, mine)


def test_mlyards_registry_setting_beats_mlflow_registry_uri(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_toml(project, f'[tracking]\nregistry_uri = "{REGISTRY}"\n')
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://127.0.0.1:5997")

    settings = load_settings(project)

    assert (settings.tracking_uri, settings.registry_uri) == (SERVER, REGISTRY)


def test_tracking_off_in_mlyard_stays_off_whatever_mlflow_says(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLYARD_TRACKING__URI", "none")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", REGISTRY)

    settings = load_settings(project)

    assert (settings.tracking_uri, settings.registry_uri) == (None, None)
    assert isinstance(create_tracker(settings), NullTracker)


def test_an_empty_mlflow_variable_counts_as_unset(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")

    settings = load_settings(project)

    assert settings.tracking_uri == f"sqlite:///{settings.home / 'mlflow.db'}"
