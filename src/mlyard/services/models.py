"""Use cases of the model registry: list models, show one, resolve a reference to load.

The registry is MLflow's, at ``settings.registry_uri`` (the tracking URI unless one is set).
An unknown model, version or alias is a ``NotFoundError`` whose hint lists what does exist; an
unreachable or failing store is a ``TrackingError``; tracking switched off is a ``ConfigError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from mlyard.errors import ConfigError, NotFoundError, TrackingError
from mlyard.models.registry import ModelDetails, ModelSummary, ModelVersionInfo, ResolvedModel
from mlyard.settings import Settings
from mlyard.tracking.mlflow_store import is_http_uri, mlflow_client, sqlite_path
from mlyard.tracking.mlflow_tracker import (
    FLAVOR_TAG,
    RUN_ID_TAG,
    STEP_TAG,
    MlflowTracker,
)

REFERENCE_FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, models:/NAME or runs:/RUN_ID/PATH"
_ALIAS_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")
_LATEST_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)/?$")
_RUN_REFERENCE = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z]+)/(?P<path>.+)$")
_PAGE_SIZE = 1000
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


def list_models(settings: Settings) -> list[ModelSummary]:
    """Every registered model, sorted by name (an empty list for a store not created yet)."""
    uri = _registry_uri(settings)
    if _store_missing(uri):
        return []
    with _registry(uri, settings.tracking_uri) as client:
        return sorted(
            (_summary(model) for model in _all_registered_models(client)), key=lambda m: m.name
        )


def show_model(settings: Settings, name: str) -> ModelDetails:
    """One registered model with its versions (newest first) and aliases."""
    uri = _registry_uri(settings)
    if _store_missing(uri):
        raise _no_such_model(name, [])
    with _registry(uri, settings.tracking_uri) as client:
        model = _registered_model(client, name)
        aliases = _aliases(model)
        versions = sorted(
            (_version_info(v, aliases) for v in _all_versions(client, name)),
            key=lambda v: int(v.version),
            reverse=True,
        )
        return ModelDetails(name=model.name, versions=versions, aliases=aliases)


def resolve_model_uri(settings: Settings, reference: str) -> ResolvedModel:
    """Resolve a model reference to a loadable URI and its flavour.

    Accepts ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/NAME`` (its latest
    version) and ``runs:/RUN_ID/PATH``. Raises ``ConfigError`` for another form,
    ``NotFoundError`` (listing what exists) for an unknown model, version, alias or run.
    """
    uri = _registry_uri(settings)
    if _store_missing(uri):
        raise NotFoundError(
            f"Cannot resolve {reference!r}: the MLflow store {uri} has no models or runs yet.",
            hint="Run a pipeline that calls mlyard.log_model(model, name) first.",
        )
    with _registry(uri, settings.tracking_uri) as client:
        if match := _RUN_REFERENCE.match(reference):
            return _resolve_run(client, uri, reference, match["run_id"], match["path"])
        if match := _ALIAS_REFERENCE.match(reference):
            model = _registered_model(client, match["name"])
            version = _version_by_alias(client, model, match["alias"])
        elif match := _VERSION_REFERENCE.match(reference):
            model = _registered_model(client, match["name"])
            version = _version_by_number(client, model, match["version"])
        elif match := _LATEST_REFERENCE.match(reference):
            model = _registered_model(client, match["name"])
            version = _latest_version(client, model)
        else:
            raise ConfigError(
                f"{reference!r} is not a model reference.",
                hint=f"Write it as {REFERENCE_FORMS}, e.g. models:/digits@champion.",
            )
        model_uri = f"models:/{model.name}/{version.version}"
        flavor = version.tags.get(FLAVOR_TAG) or _flavor_from_mlmodel(
            uri, client.get_model_version_download_uri(model.name, version.version)
        )
        return ResolvedModel(
            name=model.name, version=str(version.version), uri=model_uri, flavor=flavor
        )


def _registry_uri(settings: Settings) -> str:
    uri = settings.registry_uri
    if uri is None:
        raise ConfigError(
            "Tracking is disabled (tracking.uri = 'none'), so there is no model registry.",
            hint="Set tracking.uri in mlyard.toml or MLYARD_TRACKING__URI to your MLflow store "
            "(or remove it to use the embedded one under MLYARD_HOME).",
        )
    return uri


def _store_missing(uri: str) -> bool:
    """A SQLite store that does not exist yet holds no models; opening it would create it."""
    database = sqlite_path(uri)
    return database is not None and not database.exists()


@contextmanager
def _registry(uri: str, tracking_uri: str | None) -> Iterator[Any]:
    """An MLflow client for the registry at ``uri`` (runs at ``tracking_uri``); MLflow and
    connection errors leave as ``TrackingError``."""
    if is_http_uri(uri):
        # A server that is down would make the client retry for minutes: fail in 3 s instead.
        MlflowTracker(uri, experiment="").check_reachable()
    try:
        yield mlflow_client(tracking_uri or uri, uri)
    except (NotFoundError, ConfigError, TrackingError):
        raise
    except Exception as exc:
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise TrackingError(
            f"The MLflow model registry at {uri} failed: {reason}",
            hint="Check tracking.uri in mlyard.toml or MLYARD_TRACKING__URI and that the store "
            "is reachable.",
        ) from exc


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) in _NOT_FOUND_CODES


def _registered_model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
        names = sorted(m.name for m in _all_registered_models(client))
        raise _no_such_model(name, names) from exc


def _no_such_model(name: str, names: list[str]) -> NotFoundError:
    return NotFoundError(
        f"No registered model is called {name!r}.",
        hint="Registered models: " + (", ".join(names) if names else "none yet") + ". "
        "A step registers one with mlyard.log_model(model, name).",
    )


def _version_by_alias(client: Any, model: Any, alias: str) -> Any:
    if alias not in _aliases(model):
        raise NotFoundError(
            f"Model {model.name!r} has no alias {alias!r}.",
            hint=_what_exists(client, model)
            + " Set an alias with MlflowClient().set_registered_model_alias(name, alias, "
            "version) or use models:/NAME/VERSION.",
        )
    return client.get_model_version_by_alias(model.name, alias)


def _version_by_number(client: Any, model: Any, number: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(model.name, number)
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
        raise NotFoundError(
            f"Model {model.name!r} has no version {number}.", hint=_what_exists(client, model)
        ) from exc


def _latest_version(client: Any, model: Any) -> Any:
    versions = list(_all_versions(client, model.name))
    if not versions:
        raise NotFoundError(
            f"Model {model.name!r} has no versions.",
            hint="Register one with mlyard.log_model(model, name) in a step.",
        )
    return max(versions, key=lambda v: int(v.version))


def _what_exists(client: Any, model: Any) -> str:
    numbers = sorted(int(v.version) for v in _all_versions(client, model.name))
    aliases = _aliases(model)
    versions_text = ", ".join(str(n) for n in numbers) or "none"
    aliases_text = ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
    return f"Its versions: {versions_text}. Its aliases: {aliases_text}."


def _resolve_run(client: Any, uri: str, reference: str, run_id: str, path: str) -> ResolvedModel:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
        raise NotFoundError(
            f"No MLflow run has the id {run_id!r}.",
            hint="`mlyard runs show ID` and the MLflow UI (`mlyard ui`) show the run ids.",
        ) from exc
    # MLflow 3 keeps a model logged in a run as a LoggedModel named PATH (runs:/ID/PATH
    # resolves to it); older models are files among the run's artifacts.
    logged = {model.name: model for model in _logged_models(client, run)}
    name = path.strip("/")
    try:
        location = (
            logged[name].artifact_location
            if name in logged
            else f"{run.info.artifact_uri.rstrip('/')}/{name}"
        )
        flavor = _flavor_from_mlmodel(uri, location)
    except MlflowException as exc:
        artifacts = sorted(a.path for a in client.list_artifacts(run_id))
        raise NotFoundError(
            f"Run {run_id} has no model at {path!r}.",
            hint=f"Its models: {', '.join(sorted(logged)) or 'none'}; "
            f"its artifacts: {', '.join(artifacts) or 'none'}.",
        ) from exc
    return ResolvedModel(name=name.rsplit("/", 1)[-1], version=run_id, uri=reference, flavor=flavor)


def _logged_models(client: Any, run: Any) -> Iterator[Any]:
    outputs = run.outputs
    for output in getattr(outputs, "model_outputs", None) or []:
        yield client.get_logged_model(output.model_id)


def _flavor_from_mlmodel(uri: str, location: str) -> str:
    """Read the native flavour from the MLmodel file of the model stored at ``location``
    (for models mlyard did not log). ``location`` is a storage URI, not models:/ or runs:/:
    MLflow resolves those with its global registry URI, whatever ``registry_uri`` says."""
    import tempfile
    from pathlib import Path

    from mlflow.artifacts import download_artifacts

    from mlyard.tracking.flavors import native_flavor

    with tempfile.TemporaryDirectory(prefix="mlyard-mlmodel-") as directory:
        download_artifacts(
            artifact_uri=f"{location.rstrip('/')}/MLmodel",
            dst_path=directory,
            tracking_uri=uri,
            registry_uri=uri,
        )
        return native_flavor(Path(directory))


def _all_registered_models(client: Any) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_registered_models(max_results=_PAGE_SIZE, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _all_versions(client: Any, name: str) -> Iterator[Any]:
    token = None
    escaped = name.replace("'", "\\'")
    while True:
        page = client.search_model_versions(
            f"name='{escaped}'", max_results=_PAGE_SIZE, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def _aliases(model: Any) -> dict[str, str]:
    return {str(alias): str(version) for alias, version in (model.aliases or {}).items()}


def _summary(model: Any) -> ModelSummary:
    latest = [int(v.version) for v in model.latest_versions or []]
    return ModelSummary(
        name=model.name,
        latest_version=str(max(latest)) if latest else None,
        aliases=_aliases(model),
        updated_at=_from_millis(model.last_updated_timestamp),
        description=model.description or None,
    )


def _version_info(version: Any, model_aliases: dict[str, str]) -> ModelVersionInfo:
    """``model_aliases`` of the registered model: searching versions leaves theirs empty."""
    tags = version.tags or {}
    number = str(version.version)
    return ModelVersionInfo(
        version=number,
        status=str(version.status),
        run_id=version.run_id or None,
        mlyard_run_id=tags.get(RUN_ID_TAG),
        step=tags.get(STEP_TAG),
        flavor=tags.get(FLAVOR_TAG),
        source=str(version.source),
        aliases=sorted(a for a, v in model_aliases.items() if v == number),
        created_at=_from_millis(version.creation_timestamp),
    )


def _from_millis(timestamp_ms: int | None) -> datetime | None:
    return None if timestamp_ms is None else datetime.fromtimestamp(timestamp_ms / 1000, UTC)
