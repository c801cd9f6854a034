"""The model registry service and `mlyard models` on a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from mlyard.cli.models import register
from mlyard.errors import ConfigError, NotFoundError
from mlyard.models.tasks import ArtifactRef, LoggedModel
from mlyard.services.models import list_models, resolve_model_uri, show_model
from mlyard.settings import Settings, load_settings
from mlyard.tracking.mlflow_tracker import MlflowTracker

ARTIFACT = ArtifactRef(digest="sha256:0", materializer="joblib", type_name="x", size_bytes=1)


class Registry:
    """A store with two sklearn versions of `digits` (@champion -> 1) and one torch `net`."""

    def __init__(self, uri: str) -> None:
        from mlflow.tracking import MlflowClient
        from sklearn.tree import DecisionTreeClassifier
        from torch import nn

        self.uri = uri
        tracker = MlflowTracker(uri, "registry-tests")
        tracker.check_reachable()
        parent = tracker.start_pipeline_run("mlyard-run-1", "digits", {})
        self.step_run = tracker.start_step_run(parent, "train", "attempt-1")
        tree = DecisionTreeClassifier(max_depth=2).fit([[0, 0], [1, 1]], [0, 1])
        for _ in range(2):
            tracker.log_model(self.step_run, _model("digits", "sklearn"), tree)
        tracker.log_model(self.step_run, _model("net", "pytorch"), nn.Linear(2, 1))
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.create_registered_model("empty", description="nothing yet")
        client.set_registered_model_alias("digits", "champion", "1")
        tracker.end_run(self.step_run, "FINISHED")
        tracker.end_run(parent, "FINISHED")

    def settings(self) -> Settings:
        return load_settings(tracking={"uri": self.uri})


def _model(name: str, flavor: str) -> LoggedModel:
    return LoggedModel(name=name, flavor=flavor, artifact=ARTIFACT)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}")


@pytest.fixture
def settings(registry: Registry) -> Settings:
    return registry.settings()


def test_list_models_sorted_with_latest_version_and_aliases(settings: Settings) -> None:
    models = list_models(settings)
    assert [m.name for m in models] == ["digits", "empty", "net"]
    digits, empty, net = models
    assert (digits.latest_version, digits.aliases) == ("2", {"champion": "1"})
    assert (empty.latest_version, empty.description) == (None, "nothing yet")
    assert net.latest_version == "1"
    assert digits.updated_at is not None


def test_a_store_not_created_yet_has_no_models_and_stays_uncreated(tmp_path: Path) -> None:
    database = tmp_path / "nothing" / "mlflow.db"
    settings = load_settings(tracking={"uri": f"sqlite:///{database}"})
    assert list_models(settings) == []
    with pytest.raises(NotFoundError, match="No registered model is called 'digits'"):
        show_model(settings, "digits")
    assert not database.exists()


def test_show_model_lists_versions_newest_first_with_their_origin(
    settings: Settings, registry: Registry
) -> None:
    details = show_model(settings, "digits")
    assert details.aliases == {"champion": "1"}
    assert [v.version for v in details.versions] == ["2", "1"]
    newest, oldest = details.versions
    assert newest.status == "READY"
    assert (newest.run_id, newest.mlyard_run_id, newest.step) == (
        registry.step_run,
        "mlyard-run-1",
        "train",
    )
    assert newest.flavor == "sklearn"
    assert (newest.aliases, oldest.aliases) == ([], ["champion"])
    assert newest.created_at is not None and newest.source


def test_unknown_model_lists_the_registered_ones(settings: Settings) -> None:
    with pytest.raises(NotFoundError) as caught:
        show_model(settings, "digitz")
    assert caught.value.message == "No registered model is called 'digitz'."
    assert caught.value.hint is not None
    assert "Registered models: digits, empty, net." in caught.value.hint


@pytest.mark.parametrize(
    ("reference", "version", "flavor"),
    [
        ("models:/digits@champion", "1", "sklearn"),
        ("models:/digits/2", "2", "sklearn"),
        ("models:/digits", "2", "sklearn"),
        ("models:/net", "1", "pytorch"),
    ],
)
def test_registry_references_resolve_to_a_version_uri(
    settings: Settings, reference: str, version: str, flavor: str
) -> None:
    resolved = resolve_model_uri(settings, reference)
    name = reference.removeprefix("models:/").split("@")[0].split("/")[0]
    assert (resolved.name, resolved.version, resolved.flavor) == (name, version, flavor)
    assert resolved.uri == f"models:/{name}/{version}"


def test_run_reference_resolves_to_the_model_logged_in_that_run(
    settings: Settings, registry: Registry
) -> None:
    reference = f"runs:/{registry.step_run}/net"
    resolved = resolve_model_uri(settings, reference)
    assert (resolved.name, resolved.version) == ("net", registry.step_run)
    assert (resolved.uri, resolved.flavor) == (reference, "pytorch")


def test_unknown_alias_lists_versions_and_aliases(settings: Settings) -> None:
    with pytest.raises(NotFoundError) as caught:
        resolve_model_uri(settings, "models:/digits@production")
    assert caught.value.message == "Model 'digits' has no alias 'production'."
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("Its versions: 1, 2. Its aliases: @champion (v1).")


def test_unknown_version_lists_versions_and_aliases(settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="has no version 9") as caught:
        resolve_model_uri(settings, "models:/digits/9")
    assert caught.value.hint == "Its versions: 1, 2. Its aliases: @champion (v1)."


def test_model_without_versions_has_no_latest(settings: Settings) -> None:
    with pytest.raises(NotFoundError, match="'empty' has no versions"):
        resolve_model_uri(settings, "models:/empty")


def test_unknown_run_and_unknown_path_in_a_run(settings: Settings, registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="No MLflow run has the id 'feedface'"):
        resolve_model_uri(settings, "runs:/feedface/model")
    with pytest.raises(NotFoundError, match="has no model at 'nothing'") as caught:
        resolve_model_uri(settings, f"runs:/{registry.step_run}/nothing")
    assert caught.value.hint is not None and "Its models: digits, net" in caught.value.hint


@pytest.mark.parametrize("reference", ["digits", "s3://bucket/model", "models:/a/b/c"])
def test_other_forms_are_refused_with_the_accepted_ones(settings: Settings, reference: str) -> None:
    with pytest.raises(ConfigError, match="is not a model reference") as caught:
        resolve_model_uri(settings, reference)
    assert caught.value.hint is not None and "models:/NAME@ALIAS" in caught.value.hint


def test_tracking_disabled_means_no_registry() -> None:
    settings = load_settings(tracking={"uri": "none"})
    for call in (
        lambda: list_models(settings),
        lambda: show_model(settings, "digits"),
        lambda: resolve_model_uri(settings, "models:/digits/1"),
    ):
        with pytest.raises(ConfigError, match="Tracking is disabled"):
            call()


@pytest.fixture
def cli(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("MLYARD_TRACKING__URI", registry.uri)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Make `models` a subcommand, as in the real `mlyard` app."""

    register(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_cli_models_ls(cli: Any) -> None:
    table = cli("models", "ls")
    assert table.exit_code == 0, table.output
    assert "digits" in table.output and "@champion→v1" in table.output
    listed = json.loads(cli("models", "ls", "--json").stdout)
    assert [m["name"] for m in listed] == ["digits", "empty", "net"]
    assert listed[0]["latest_version"] == "2"


def test_cli_models_show(cli: Any) -> None:
    table = cli("models", "show", "digits")
    assert table.exit_code == 0, table.output
    assert "mlyard-run-1" in table.output and "Aliases: @champion → v1" in table.output
    shown = json.loads(cli("models", "show", "digits", "--json").stdout)
    assert [v["version"] for v in shown["versions"]] == ["2", "1"]
    assert shown["versions"][0]["mlyard_run_id"] == "mlyard-run-1"


def test_cli_unknown_model_is_a_clean_error(cli: Any) -> None:
    result = cli("models", "show", "digitz")
    assert result.exit_code == NotFoundError.exit_code
    assert "No registered model is called 'digitz'" in result.output
    assert "Traceback" not in result.output
