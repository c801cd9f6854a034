"""The tracker used when tracking is off (``tracking.uri = "none"``): records nothing."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from mlyard.models.tasks import LoggedModel, MetricRecord, Usage

#: What ``log_model`` returns: no registry, so no version.
NO_VERSION = "none"


class NullTracker:
    """Implements ``Tracker`` with no-ops; run ids are synthetic (``null-...``) and unique."""

    def check_reachable(self) -> None:
        return None

    def prepare(self) -> None:
        return None

    def start_pipeline_run(self, run_id: str, pipeline_name: str, params: Mapping[str, Any]) -> str:
        return f"null-{run_id}"

    def start_step_run(self, parent_run_id: str, step_name: str, attempt_id: str) -> str:
        return f"null-{uuid.uuid4().hex}"

    def find_step_run(self, parent_run_id: str, attempt_id: str) -> str | None:
        return None

    def log_params(self, mlflow_run_id: str, params: Mapping[str, Any]) -> None:
        return None

    def log_step_data(
        self,
        mlflow_run_id: str,
        params: Mapping[str, Any],
        metrics: Sequence[MetricRecord],
        usage: Usage,
    ) -> None:
        return None

    def log_metrics(self, mlflow_run_id: str, metrics: Sequence[MetricRecord]) -> None:
        return None

    def log_model(
        self,
        mlflow_run_id: str,
        model: LoggedModel,
        model_object: object,
        input_example: object = None,
    ) -> str:
        return NO_VERSION

    def end_run(self, mlflow_run_id: str, status: str) -> None:
        return None

    def run_url(self, mlflow_run_id: str) -> str | None:
        return None
