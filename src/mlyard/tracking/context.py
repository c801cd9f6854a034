"""What a step calls to log: ``log_metric``, ``log_metrics``, ``log_params``, ``log_model``.

Inside a running step the runtime installs a ``StepLog`` that buffers everything into the step's
result; the orchestrator replays it to MLflow in batches. Outside a step these calls fail with a
message that says where they belong.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from mlyard.errors import PipelineDefinitionError
from mlyard.models.tasks import ArtifactRef, LoggedModel, MetricRecord

SaveModel = Callable[[object], ArtifactRef]


@dataclass
class StepLog:
    """The buffer one step attempt logs into."""

    save_model: SaveModel
    #: Called with every metric as it is logged (live logging to MLflow), when set.
    on_metric: Callable[[MetricRecord], None] | None = None
    metrics: list[MetricRecord] = field(default_factory=list)

    def add_metric(self, record: MetricRecord) -> None:
        self.metrics.append(record)
        if self.on_metric is not None:
            self.on_metric(record)

    params: dict[str, str] = field(default_factory=dict)
    models: list[LoggedModel] = field(default_factory=list)


_current: ContextVar[StepLog | None] = ContextVar("mlyard_step_log", default=None)


def install_step_log(step_log: StepLog) -> object:
    """Make ``step_log`` the target of the log calls; returns a token for ``reset_step_log``."""
    return _current.set(step_log)


def reset_step_log(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def _active(call: str) -> StepLog:
    step_log = _current.get()
    if step_log is None:
        raise PipelineDefinitionError(
            f"{call}() was called outside a running step.",
            hint="Call it inside a function decorated with @step; the pipeline function only "
            "wires steps together.",
        )
    return step_log


def log_metric(key: str, value: float, step: int = 0) -> None:
    """Record one metric value of the running step (e.g. per epoch with ``step=epoch``)."""
    _active("log_metric").add_metric(
        MetricRecord(key=key, value=float(value), step=step, timestamp_ms=int(time.time() * 1000))
    )


def log_metrics(metrics: Mapping[str, float], step: int = 0) -> None:
    """Record several metrics of the running step at once."""
    step_log = _active("log_metrics")
    now_ms = int(time.time() * 1000)
    for key, value in metrics.items():
        step_log.add_metric(
            MetricRecord(key=key, value=float(value), step=step, timestamp_ms=now_ms)
        )


def log_params(params: Mapping[str, Any]) -> None:
    """Record parameters of the running step (stringified, as MLflow stores them)."""
    _active("log_params").params.update({k: str(v) for k, v in params.items()})


def log_model(model: object, name: str, flavor: str | None = None) -> None:
    """Log ``model`` with its MLflow flavour and register a new version under ``name``.

    The model is stored in the artifact store from the step; the orchestrator logs it to MLflow
    and registers it, so this works where the compute side cannot reach the tracking server.
    """
    step_log = _active("log_model")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise PipelineDefinitionError(
            f"log_model name {name!r} is not a valid model name.",
            hint="Use letters, digits, '-', '_' or '.', e.g. log_model(clf, 'digits-classifier').",
        )
    chosen = flavor or guess_flavor(model)
    step_log.models.append(
        LoggedModel(name=name, flavor=chosen, artifact=step_log.save_model(model))
    )


def guess_flavor(model: object) -> str:
    """The MLflow flavour for a model object, from the module its class comes from."""
    module = type(model).__module__.split(".")[0]
    return {
        "sklearn": "sklearn",
        "torch": "pytorch",
        "xgboost": "xgboost",
        "lightgbm": "lightgbm",
    }.get(module, "pyfunc")
