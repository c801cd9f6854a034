"""The tracker port: MLflow in production, a null tracker where tracking is off."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from mlyard.models.tasks import LoggedModel, MetricRecord, Usage


class Tracker(Protocol):
    """Records runs, metrics and models. Apart from ``check_reachable`` (before a run starts)
    and ``run_url``, only the orchestrator's tracking thread calls it
    (``orchestration/tracking_worker.py``), one call at a time, never on the steps' path.

    All methods block for one round trip to the tracking store and raise ``TrackingError``
    when it cannot be reached or refuses the call.
    """

    def check_reachable(self) -> None:
        """Raise ``TrackingError`` naming the URI and how to fix it when the store is down."""

    def prepare(self) -> None:
        """Import the client library and open the store (and the experiment), so that the
        calls that follow are quick; the orchestrator calls it on its tracking thread while
        the first steps run."""

    def start_pipeline_run(self, run_id: str, pipeline_name: str, params: Mapping[str, Any]) -> str:
        """Create the MLflow parent run for pipeline run ``run_id``; returns its MLflow run id."""

    def start_step_run(self, parent_run_id: str, step_name: str, attempt_id: str) -> str:
        """Create the nested MLflow run of one step; returns its MLflow run id."""

    def find_step_run(self, parent_run_id: str, attempt_id: str) -> str | None:
        """The nested run already created for ``attempt_id`` (by an orchestrator killed before
        it marked the attempt tracked), else ``None``."""

    def log_params(self, mlflow_run_id: str, params: Mapping[str, Any]) -> None:
        """Log parameters (values are stringified)."""

    def log_step_data(
        self,
        mlflow_run_id: str,
        params: Mapping[str, Any],
        metrics: Sequence[MetricRecord],
        usage: Usage,
    ) -> None:
        """Log a finished step's parameters, metrics and usage together, in as few requests as
        the store allows (one for a usual step)."""

    def log_metrics(self, mlflow_run_id: str, metrics: Sequence[MetricRecord]) -> None:
        """Log metrics (a pipeline run's ``step.metric`` values) in as few requests as the
        store allows."""

    def log_model(
        self,
        mlflow_run_id: str,
        model: LoggedModel,
        model_object: object,
        input_example: object = None,
    ) -> str:
        """Log ``model_object`` with its MLflow flavour and its signature (inferred from
        ``input_example`` when given) and register a version; returns it."""

    def end_run(self, mlflow_run_id: str, status: str) -> None:
        """Close a run: ``FINISHED``, ``FAILED`` or ``KILLED``."""

    def run_url(self, mlflow_run_id: str) -> str | None:
        """Where people can look at the run (a UI URL or the store URI)."""
