"""The MLflow adapter: a pipeline run is a parent run, each step a nested run; models are
logged with their flavour and registered.

Everything goes through one ``MlflowClient(tracking_uri=uri)``, never MLflow's fluent API, so no
global tracking URI or "active run" leaks between trackers, runs or threads. ``mlflow`` is
imported on first use only (about a second), so commands that do not track stay fast. Every
MLflow and connection error becomes ``TrackingError`` here.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mlyard.errors import TrackingError
from mlyard.models.tasks import LoggedModel, MetricRecord, Usage
from mlyard.tracking.flavors import save_model_locally
from mlyard.tracking.mlflow_store import (
    embedded_artifact_root,
    is_http_uri,
    mlflow_client,
    sqlite_path,
)

T = TypeVar("T")

#: MLflow's log_batch accepts at most 1000 metrics and 100 params per request.
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
#: MLflow refuses longer parameter values.
MAX_PARAM_VALUE_LENGTH = 6000
HEALTH_TIMEOUT_SECONDS = 3.0
FIX_HINT = (
    "Start it, fix tracking.uri in mlyard.toml or MLYARD_TRACKING__URI (or MLFLOW_TRACKING_URI, "
    "used when those are unset), or set tracking.uri to 'none' to run without tracking."
)
#: MLflow error codes that mean the store answered and refused a value (not an outage).
REFUSAL_CODES = frozenset(
    {"INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST",
     "INVALID_STATE", "BAD_REQUEST"}
)  # fmt: skip
REFUSED_HINT = (
    "The tracking store refused the request: the message says which value. Metric and param "
    "names may hold letters, digits, '_', '-', '.', ' ', ':' and '/'; a param cannot change."
)

#: Tags mlyard writes; the registry service reads them back.
RUN_ID_TAG = "mlyard.run_id"
PIPELINE_TAG = "mlyard.pipeline"
STEP_TAG = "mlyard.step"
ATTEMPT_TAG = "mlyard.attempt_id"
FLAVOR_TAG = "mlyard.flavor"
PARENT_RUN_TAG = "mlflow.parentRunId"


def _wrapped(action: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Translate MLflow and connection errors into ``TrackingError`` naming the action."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(self: MlflowTracker, *args: Any, **kwargs: Any) -> T:
            try:
                return method(self, *args, **kwargs)
            except TrackingError:
                raise
            except Exception as exc:
                reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                refused = getattr(exc, "error_code", None) in REFUSAL_CODES
                raise TrackingError(
                    f"MLflow at {self.uri} failed to {action}: {reason}",
                    hint=REFUSED_HINT if refused else FIX_HINT,
                ) from exc

        return wrapper

    return decorate


class MlflowTracker:
    """Implements ``mlyard.tracking.base.Tracker`` with one ``MlflowClient``."""

    def __init__(self, uri: str, experiment: str, registry_uri: str | None = None) -> None:
        self.uri = uri
        self.registry_uri = registry_uri or uri
        self.experiment = experiment
        self._experiment_id: str | None = None
        #: Per parent run: its experiment and the tags its nested runs get.
        self._parents: dict[str, tuple[str, dict[str, str]]] = {}

    @functools.cached_property
    def _client(self) -> Any:
        return mlflow_client(self.uri, self.registry_uri)

    def check_reachable(self) -> None:
        """Probe ``/health`` of a server (3 s); create a SQLite store's directory."""
        if is_http_uri(self.uri):
            import urllib.error  # ~5 ms (http.client, ssl): only for a tracking server
            import urllib.request

            try:
                with urllib.request.urlopen(
                    f"{self.uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_SECONDS
                ) as response:
                    if response.status == 200:
                        return
                    reason = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, OSError) as exc:
                reason = str(getattr(exc, "reason", exc))
            raise TrackingError(
                f"Could not reach the MLflow tracking server at {self.uri}: {reason}.",
                hint=FIX_HINT,
            )
        database = sqlite_path(self.uri)
        if database is not None:
            try:
                database.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingError(
                    f"Could not create the directory of the MLflow store {self.uri}: {exc}.",
                    hint=FIX_HINT,
                ) from exc

    @_wrapped("open the tracking store")
    def prepare(self) -> None:
        """Import MLflow, open the store (a new SQLite store runs MLflow's migrations) and
        find or create the experiment: the seconds of MLflow's start-up, spent on the
        orchestrator's tracking thread while the first steps run."""
        self.experiment_id()

    @_wrapped("find or create the experiment")
    def experiment_id(self) -> str:
        """The id of the configured experiment, created on first use."""
        if self._experiment_id is None:
            found = self._client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = str(found.experiment_id)
            else:
                root = embedded_artifact_root(self.uri)
                location = (root / _safe_name(self.experiment)).as_uri() if root else None
                self._experiment_id = str(
                    self._client.create_experiment(self.experiment, artifact_location=location)
                )
        return self._experiment_id

    @_wrapped("create the pipeline run")
    def start_pipeline_run(self, run_id: str, pipeline_name: str, params: Mapping[str, Any]) -> str:
        """Create the parent run tagged with the mlyard run id and pipeline name."""
        run = self._client.create_run(
            self.experiment_id(),
            run_name=f"{pipeline_name}-{run_id}",
            tags={RUN_ID_TAG: run_id, PIPELINE_TAG: pipeline_name},
        )
        return str(run.info.run_id)

    @_wrapped("create a step run")
    def start_step_run(self, parent_run_id: str, step_name: str, attempt_id: str) -> str:
        """Create a nested run under ``parent_run_id`` for one attempt of one step."""
        experiment_id, tags = self._nested_run_tags(parent_run_id)
        tags = {**tags, STEP_TAG: step_name, ATTEMPT_TAG: attempt_id}
        run = self._client.create_run(experiment_id, run_name=step_name, tags=tags)
        return str(run.info.run_id)

    @_wrapped("look for an earlier step run")
    def find_step_run(self, parent_run_id: str, attempt_id: str) -> str | None:
        """The nested run an earlier orchestrator created for ``attempt_id`` before it was
        killed, so that a replay completes that run instead of adding a second one."""
        experiment_id, _ = self._nested_run_tags(parent_run_id)
        found = self._client.search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}' "
                f"AND tags.`{ATTEMPT_TAG}` = '{attempt_id}'"
            ),
            max_results=1,
        )
        return str(found[0].info.run_id) if found else None

    def _nested_run_tags(self, parent_run_id: str) -> tuple[str, dict[str, str]]:
        """The experiment and the tags every nested run of ``parent_run_id`` gets; the parent
        is read once, not once per step."""
        known = self._parents.get(parent_run_id)
        if known is None:
            parent = self._client.get_run(parent_run_id)
            tags = {PARENT_RUN_TAG: parent_run_id}
            if RUN_ID_TAG in parent.data.tags:
                tags[RUN_ID_TAG] = parent.data.tags[RUN_ID_TAG]
            known = self._parents[parent_run_id] = (str(parent.info.experiment_id), tags)
        return known

    @_wrapped("log parameters")
    def log_params(self, mlflow_run_id: str, params: Mapping[str, Any]) -> None:
        """Log parameters, stringified and cut to MLflow's value limit, 100 per request."""
        self._log_batches(mlflow_run_id, params, [])

    @_wrapped("log the step's parameters and metrics")
    def log_step_data(
        self,
        mlflow_run_id: str,
        params: Mapping[str, Any],
        metrics: Sequence[MetricRecord],
        usage: Usage,
    ) -> None:
        """Parameters, metrics and usage (``usage.*`` metrics, cost and queue time when known)
        in shared ``log_batch`` requests."""
        self._log_batches(mlflow_run_id, params, [*metrics, *_usage_records(usage)])

    @_wrapped("log metrics")
    def log_metrics(self, mlflow_run_id: str, metrics: Sequence[MetricRecord]) -> None:
        """Metrics (a pipeline run's ``step.metric`` values), 1000 per ``log_batch``."""
        self._log_batches(mlflow_run_id, {}, metrics)

    def _log_batches(
        self, mlflow_run_id: str, params: Mapping[str, Any], metrics: Sequence[MetricRecord]
    ) -> None:
        """As few ``log_batch`` requests as MLflow's limits allow: at most 100 parameters and
        1000 entries in all per request."""
        from mlflow.entities import Metric, Param

        pending_params = [Param(str(k), str(v)[:MAX_PARAM_VALUE_LENGTH]) for k, v in params.items()]
        pending_metrics = [Metric(m.key, m.value, m.timestamp_ms, m.step) for m in metrics]
        while pending_params or pending_metrics:
            batch_params = pending_params[:PARAMS_PER_BATCH]
            room = METRICS_PER_BATCH - len(batch_params)
            batch_metrics = pending_metrics[:room]
            self._client.log_batch(mlflow_run_id, params=batch_params, metrics=batch_metrics)
            pending_params = pending_params[len(batch_params) :]
            pending_metrics = pending_metrics[len(batch_metrics) :]

    @_wrapped("log and register the model")
    def log_model(
        self,
        mlflow_run_id: str,
        model: LoggedModel,
        model_object: object,
        input_example: object = None,
    ) -> str:
        """Log ``model_object`` as an MLflow 3 LoggedModel of run ``mlflow_run_id`` and
        register it as a new version of ``model.name``; returns the version. Its signature is
        inferred from ``input_example`` (stored in the model too) or from the model itself.

        This does with the client what ``mlflow.<flavor>.log_model`` does with the fluent API
        (which needs a global tracking URI and an active run): save the model locally with its
        flavour, create the LoggedModel, upload it, link it to the run, register it.
        """
        import tempfile

        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        client = self._client
        run = client.get_run(mlflow_run_id)
        tags = _version_tags(client, run)
        logged = client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name=_safe_name(model.name),
            source_run_id=mlflow_run_id,
            tags=tags,
        )
        try:
            with tempfile.TemporaryDirectory(prefix="mlyard-model-") as directory:
                saved = save_model_locally(
                    model.flavor,
                    model_object,
                    Path(directory) / "model",
                    artifact_path=logged.artifact_location,
                    run_id=mlflow_run_id,
                    model_id=logged.model_id,
                    input_example=input_example,
                )
                client.log_model_artifacts(logged.model_id, str(saved.path))
        except BaseException:
            # Best effort: the error to report is the one that stopped the save or upload.
            with contextlib.suppress(Exception):
                client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        client.log_outputs(mlflow_run_id, [LoggedModelOutput(logged.model_id, step=0)])
        _ensure_registered_model(client, model.name)
        # The source is the model's storage location, not "models:/<model_id>": MLflow's SQL
        # registry resolves that URI with the *global* tracking URI (a TODO in MLflow 3), which
        # this client-only tracker never sets.
        version = client.create_model_version(
            name=model.name,
            source=logged.artifact_location,
            run_id=mlflow_run_id,
            tags={**tags, FLAVOR_TAG: saved.flavor},
            model_id=logged.model_id,
        )
        return str(version.version)

    @_wrapped("end a run")
    def end_run(self, mlflow_run_id: str, status: str) -> None:
        """Mark a run ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self._client.set_terminated(mlflow_run_id, status=status)

    def run_url(self, mlflow_run_id: str) -> str | None:
        """The run's page on a tracking server; for a local store, how to open the UI."""
        if is_http_uri(self.uri):
            try:
                experiment = self.experiment_id()
            except TrackingError:
                return self.uri
            return f"{self.uri.rstrip('/')}/#/experiments/{experiment}/runs/{mlflow_run_id}"
        return f"run {mlflow_run_id} in {self.uri} (open it with `mlyard ui`)"


def _version_tags(client: Any, run: Any) -> dict[str, str]:
    """``mlyard.run_id`` and ``mlyard.step`` of a step run (the run id from its parent when
    the step run was created by an older mlyard without it)."""
    tags: dict[str, str] = {}
    step = run.data.tags.get(STEP_TAG)
    if step:
        tags[STEP_TAG] = str(step)
    run_id = run.data.tags.get(RUN_ID_TAG)
    parent = run.data.tags.get(PARENT_RUN_TAG)
    if not run_id and parent:
        run_id = client.get_run(parent).data.tags.get(RUN_ID_TAG)
    if run_id:
        tags[RUN_ID_TAG] = str(run_id)
    return tags


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"


def _usage_records(usage: Usage) -> list[MetricRecord]:
    """An attempt's usage as ``usage.*`` metrics (cost and queue time when known)."""
    now = int(time.time() * 1000)
    values = {
        "usage.wall_seconds": usage.wall_seconds,
        "usage.cpu_seconds": usage.cpu_seconds,
        "usage.peak_memory_bytes": float(usage.peak_memory_bytes),
        "usage.gpu_seconds": usage.gpu_seconds,
    }
    if usage.queue_seconds is not None:
        values["usage.queue_seconds"] = usage.queue_seconds
    if usage.cost is not None:
        values["usage.cost"] = usage.cost
    return [MetricRecord(key=k, value=v, timestamp_ms=now) for k, v in values.items()]
