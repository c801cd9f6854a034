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
#: Rows of an input example kept (and stored in the model): enough to show the input's form.
MAX_EXAMPLE_ROWS = 5


@dataclass
class StepLog:
    """The buffer one step attempt logs into."""

    #: Stores a model (or its input example) in the artifact store.
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


def log_model(
    model: object, name: str, flavor: str | None = None, *, input_example: object = None
) -> None:
    """Log ``model`` with its MLflow flavour and register a new version under ``name``.

    The model is stored in the artifact store from the step; the orchestrator logs it to MLflow
    and registers it, so this works where the compute side cannot reach the tracking server.

    ``input_example`` (a numpy array, a pandas DataFrame or a dict of named numpy arrays; a
    torch tensor is taken as its array) gives the model its MLflow signature: MLflow runs the
    model on it and records the inputs' and outputs' names, types and shapes. Only its first
    ``MAX_EXAMPLE_ROWS`` rows are kept, and stored in the model. Without one, a scikit-learn
    model's signature comes from the model itself (see ``mlyard.tracking.signatures``).
    """
    step_log = _active("log_model")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise PipelineDefinitionError(
            f"log_model name {name!r} is not a valid model name.",
            hint="Use letters, digits, '-', '_' or '.', e.g. log_model(clf, 'digits-classifier').",
        )
    chosen = flavor or guess_flavor(model)
    example = None if input_example is None else small_example(input_example)
    step_log.models.append(
        LoggedModel(
            name=name,
            flavor=chosen,
            artifact=step_log.save_model(model),
            input_example=None if example is None else step_log.save_model(example),
        )
    )


def small_example(example: object) -> object:
    """The first ``MAX_EXAMPLE_ROWS`` rows of an input example, in a form MLflow takes; a
    ``PipelineDefinitionError`` for anything else."""
    if _is_torch_tensor(example):
        example = example.detach().cpu().numpy()  # type: ignore[attr-defined]
    if isinstance(example, dict) and example and all(isinstance(k, str) for k in example):
        return {key: _first_rows(value, key) for key, value in example.items()}
    return _first_rows(example, None)


def _first_rows(value: object, key: str | None) -> object:
    module = type(value).__module__.split(".")[0]
    if _is_torch_tensor(value):
        value = value.detach().cpu().numpy()  # type: ignore[attr-defined]
        module = "numpy"
    shape = getattr(value, "shape", None)
    if module in ("numpy", "pandas") and isinstance(shape, tuple) and shape and shape[0] > 0:
        if module == "pandas":
            return value.iloc[:MAX_EXAMPLE_ROWS].copy()  # type: ignore[attr-defined]
        return value[:MAX_EXAMPLE_ROWS].copy()  # type: ignore[index]
    where = f"input_example[{key!r}]" if key is not None else "input_example"
    raise PipelineDefinitionError(
        f"log_model's {where} is a {type(value).__name__}"
        + (f" of shape {shape}" if isinstance(shape, tuple) else "")
        + ", which cannot describe a model's input.",
        hint="Pass a few rows of what the model's predict() takes: a numpy array or a pandas "
        "DataFrame with at least one row, or a dict of named numpy arrays, e.g. "
        "input_example=x_test[:5].",
    )


def _is_torch_tensor(value: object) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def guess_flavor(model: object) -> str:
    """The MLflow flavour for a model object, from the module its class comes from."""
    module = type(model).__module__.split(".")[0]
    return {
        "sklearn": "sklearn",
        "torch": "pytorch",
        "xgboost": "xgboost",
        "lightgbm": "lightgbm",
    }.get(module, "pyfunc")
