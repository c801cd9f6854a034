"""The MLflow adapter: a pipeline run is a parent run, each step a nested run; models are
logged with their flavour and registered.

``mlflow`` is imported on first use only (it costs about a second), so commands that do not
track stay fast. All MLflow and connection errors become ``TrackingError`` here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from mlyard.errors import TrackingError
from mlyard.models.tasks import LoggedModel, MetricRecord, Usage

T = TypeVar("T")
BATCH_SIZE = 1000
HEALTH_TIMEOUT_SECONDS = 3.0
FIX_HINT = (
    "Start it, fix tracking.uri in mlyard.toml or MLYARD_TRACKING__URI, or set it to 'none' "
    "to run without tracking."
)


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
                raise TrackingError(
                    f"MLflow at {self.uri} failed to {action}: {exc}", hint=FIX_HINT
                ) from exc

        return wrapper

    return decorate


class MlflowTracker:
    """Implements ``mlyard.tracking.base.Tracker`` with ``MlflowClient``."""

    def __init__(self, uri: str, experiment: str) -> None:
        self.uri = uri
        self.experiment = experiment
        self._experiment_id: str | None = None

    @functools.cached_property
    def _client(self) -> Any:
        import logging

        from mlflow.tracking import MlflowClient

        # MLflow reports migrations and registrations at INFO on stderr; mlyard summarises.
        logging.getLogger("mlflow").setLevel(logging.WARNING)

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def check_reachable(self) -> None:
        if self.uri.startswith(("http://", "https://")):
            try:
                with urllib.request.urlopen(
                    f"{self.uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_SECONDS
                ) as response:
                    if response.status == 200:
                        return
                    reason = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                reason = str(getattr(exc, "reason", exc))
            raise TrackingError(
                f"Could not reach the MLflow tracking server at {self.uri}: {reason}.",
                hint=FIX_HINT,
            )
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self._client.get_experiment_by_name(self.experiment)
            self._experiment_id = (
                found.experiment_id
                if found is not None
                else self._client.create_experiment(self.experiment)
            )
        return self._experiment_id

    @_wrapped("create the pipeline run")
    def start_pipeline_run(self, run_id: str, pipeline_name: str, params: Mapping[str, Any]) -> str:
        run = self._client.create_run(
            self._experiment(),
            run_name=f"{pipeline_name}-{run_id}",
            tags={"mlyard.run_id": run_id, "mlyard.pipeline": pipeline_name},
        )
        return str(run.info.run_id)

    @_wrapped("create a step run")
    def start_step_run(self, parent_run_id: str, step_name: str, attempt_id: str) -> str:
        run = self._client.create_run(
            self._experiment(),
            run_name=step_name,
            tags={
                "mlflow.parentRunId": parent_run_id,
                "mlyard.step": step_name,
                "mlyard.attempt_id": attempt_id,
            },
        )
        return str(run.info.run_id)

    @_wrapped("log parameters")
    def log_params(self, mlflow_run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for batch in _chunks(items, 100):
            self._client.log_batch(mlflow_run_id, params=batch)

    @_wrapped("log metrics")
    def log_metrics(self, mlflow_run_id: str, metrics: Sequence[MetricRecord]) -> None:
        from mlflow.entities import Metric

        items = [Metric(m.key, m.value, m.timestamp_ms, m.step) for m in metrics]
        for batch in _chunks(items, BATCH_SIZE):
            self._client.log_batch(mlflow_run_id, metrics=batch)

    def log_usage(self, mlflow_run_id: str, usage: Usage) -> None:
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
        self.log_metrics(
            mlflow_run_id,
            [MetricRecord(key=k, value=v, timestamp_ms=now) for k, v in values.items()],
        )

    @_wrapped("log and register the model")
    def log_model(self, mlflow_run_id: str, model: LoggedModel, model_object: object) -> str:
        import mlflow

        flavor_module, requirements = _flavor(model.flavor, model_object)
        # The registry prints "Created version ..." to stderr; mlyard reports it in its summary.
        with self._fluent_run(mlflow_run_id), contextlib.redirect_stderr(io.StringIO()):
            info = flavor_module.log_model(
                model_object,
                name=_safe_name(model.name),
                registered_model_name=model.name,
                pip_requirements=requirements,
            )
        version = str(info.registered_model_version)
        run = self._client.get_run(mlflow_run_id)
        for key in ("mlyard.run_id", "mlyard.step"):
            value = run.data.tags.get(key) or self._parent_tag(run, key)
            if value:
                self._client.set_model_version_tag(model.name, version, key, value)
        del mlflow
        return version

    def _parent_tag(self, run: Any, key: str) -> str | None:
        parent = run.data.tags.get("mlflow.parentRunId")
        if not parent:
            return None
        value = self._client.get_run(parent).data.tags.get(key)
        return str(value) if value else None

    @contextmanager
    def _fluent_run(self, mlflow_run_id: str) -> Iterator[None]:
        # MLflow's flavour log_model functions work on the fluent "active run" and the global
        # tracking URI; this is the one place mlyard touches that global state, restoring it.
        import mlflow

        previous_tracking = mlflow.get_tracking_uri()
        previous_registry = mlflow.get_registry_uri()
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        try:
            with mlflow.start_run(run_id=mlflow_run_id, nested=True):
                yield
        finally:
            mlflow.set_tracking_uri(previous_tracking)
            mlflow.set_registry_uri(previous_registry)

    @_wrapped("end a run")
    def end_run(self, mlflow_run_id: str, status: str) -> None:
        self._client.set_terminated(mlflow_run_id, status=status)

    def run_url(self, mlflow_run_id: str) -> str | None:
        if self.uri.startswith(("http://", "https://")):
            try:
                experiment = self._experiment()
            except Exception:
                return self.uri
            return f"{self.uri.rstrip('/')}/#/experiments/{experiment}/runs/{mlflow_run_id}"
        return f"run {mlflow_run_id} in {self.uri} (open it with `mlyard ui`)"


def _flavor(flavor: str, model_object: object) -> tuple[Any, list[str]]:
    """The MLflow flavour module and pinned requirements (pinning skips MLflow's slow
    requirement inference, which re-loads the model in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    def pinned(distribution: str) -> list[str]:
        try:
            return [f"{distribution}=={version(distribution)}"]
        except PackageNotFoundError:
            return []

    if flavor == "sklearn":
        import mlflow.sklearn

        return mlflow.sklearn, pinned("scikit-learn") + pinned("cloudpickle")
    if flavor == "pytorch":
        import mlflow.pytorch

        return mlflow.pytorch, pinned("torch") + pinned("cloudpickle")
    if flavor == "xgboost":
        import mlflow.xgboost

        return mlflow.xgboost, pinned("xgboost")
    if flavor == "lightgbm":
        import mlflow.lightgbm

        return mlflow.lightgbm, pinned("lightgbm")
    if flavor == "pyfunc":
        import mlflow.pyfunc

        class _Adapter:
            log_model = staticmethod(
                lambda python_model, **kwargs: mlflow.pyfunc.log_model(
                    python_model=python_model, **kwargs
                )
            )

        return _Adapter, pinned("cloudpickle")
    raise TrackingError(
        f"mlyard cannot log a model with the MLflow flavour {flavor!r} "
        f"({type(model_object).__name__}).",
        hint="Pass flavor='sklearn', 'pytorch', 'xgboost', 'lightgbm' or 'pyfunc' "
        "(an mlflow.pyfunc.PythonModel) to log_model.",
    )


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "model"


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
