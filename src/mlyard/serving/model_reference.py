"""Which model to serve: parse ``models:/name@alias``, ``models:/name/version``, ``runs:/id/path``.

Resolution goes through one function, ``resolve_model``: it uses the registry service
(``mlyard.services.models.resolve_model_uri``) where that exists and the MLflow client otherwise,
so the server switches over without any other change. An unknown reference fails before anything
starts, with the names that do exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlyard.errors import ConfigError, NotFoundError, TrackingError

if TYPE_CHECKING:
    from mlyard.settings import Settings

_ALIAS_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_RUN_REFERENCE = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z]+)/(?P<path>.+)$")
_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH"


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved to what can be loaded."""

    name: str
    version: str
    uri: str
    flavor: str


def check_reference_syntax(reference: str) -> None:
    """Raise ``ConfigError`` unless ``reference`` has one of the accepted forms."""
    if not any(p.match(reference) for p in (_ALIAS_REFERENCE, _VERSION_REFERENCE, _RUN_REFERENCE)):
        raise ConfigError(
            f"{reference!r} is not a model reference.",
            hint=f"Write it as {_FORMS}, e.g. models:/digits@champion.",
        )


def resolve_model(settings: Settings, reference: str) -> ResolvedModel:
    """Resolve ``reference`` in the configured registry; ``NotFoundError`` lists what exists."""
    check_reference_syntax(reference)
    try:
        from mlyard.services.models import (  # type: ignore[import-not-found,unused-ignore]
            resolve_model_uri,
        )
    except ImportError:
        return _resolve_with_mlflow_client(settings, reference)
    resolved = resolve_model_uri(settings, reference)
    return ResolvedModel(
        name=str(resolved.name),
        version=str(resolved.version),
        uri=str(resolved.uri),
        flavor=str(resolved.flavor),
    )


def tracking_uri_of(settings: Settings) -> str:
    """The MLflow tracking URI, or ``ConfigError`` when tracking is disabled."""
    uri = settings.tracking_uri
    if uri is None:
        raise ConfigError(
            "Tracking is disabled (tracking.uri = 'none'), so there is no model registry to "
            "serve from.",
            hint="Set tracking.uri in mlyard.toml or MLYARD_TRACKING__URI to your MLflow store.",
        )
    return uri


def _resolve_with_mlflow_client(settings: Settings, reference: str) -> ResolvedModel:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri_of(settings)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        if match := _RUN_REFERENCE.match(reference):
            return _resolve_run(client, reference, match["run_id"], match["path"])
        if match := _ALIAS_REFERENCE.match(reference):
            name = _existing_model_name(client, match["name"])
            try:
                version = client.get_model_version_by_alias(name, match["alias"])
            except MlflowException as exc:
                aliases = client.get_registered_model(name).aliases
                known = ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
                raise NotFoundError(
                    f"Model {name!r} has no alias {match['alias']!r}.",
                    hint=f"Its aliases: {known}. Set one with MlflowClient."
                    "set_registered_model_alias, or serve models:/NAME/VERSION.",
                ) from exc
        else:
            match = _VERSION_REFERENCE.match(reference)
            assert match is not None  # check_reference_syntax accepted it
            name = _existing_model_name(client, match["name"])
            try:
                version = client.get_model_version(name, match["version"])
            except MlflowException as exc:
                versions = client.search_model_versions(f"name='{name}'")
                known = (
                    ", ".join(str(v) for v in sorted(int(v.version) for v in versions)) or "none"
                )
                raise NotFoundError(
                    f"Model {name!r} has no version {match['version']}.",
                    hint=f"Its versions: {known}.",
                ) from exc
        model_uri = f"models:/{name}/{version.version}"
        return ResolvedModel(
            name=name,
            version=str(version.version),
            uri=model_uri,
            flavor=_flavor_of(model_uri, uri),
        )
    except MlflowException as exc:
        raise TrackingError(
            f"Could not resolve {reference!r} in the MLflow store at {uri}: {exc.message}",
            hint="Check tracking.uri and that the store is reachable.",
        ) from exc


def _existing_model_name(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        names = sorted(m.name for m in client.search_registered_models(max_results=1000))
        raise NotFoundError(
            f"No registered model is called {name!r}.",
            hint="Registered models: " + (", ".join(names) if names else "none yet") + ".",
        ) from exc
    return name


def _resolve_run(client: Any, reference: str, run_id: str, path: str) -> ResolvedModel:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise NotFoundError(
            f"No run has the id {run_id!r}.",
            hint="List runs with `mlflow runs list` or in the MLflow UI.",
        ) from exc
    tracking_uri = client._tracking_client.tracking_uri
    try:
        flavor = _flavor_of(reference, tracking_uri)
    except MlflowException as exc:
        artifacts = sorted(a.path for a in client.list_artifacts(run_id))
        raise NotFoundError(
            f"Run {run_id} has no model at {path!r}.",
            hint="Its artifacts: " + (", ".join(artifacts) or "none") + ".",
        ) from exc
    return ResolvedModel(
        name=path.rstrip("/").rsplit("/", 1)[-1], version=run_id, uri=reference, flavor=flavor
    )


def _flavor_of(model_uri: str, tracking_uri: str) -> str:
    """The native flavour of a model ('sklearn', 'pytorch', ...), read from its MLmodel file."""
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    flavors = get_model_info(model_uri).flavors
    native = [name for name in flavors if name != "python_function"]
    return native[0] if native else "python_function"
