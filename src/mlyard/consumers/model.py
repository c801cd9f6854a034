"""The model a consumer runs: a registered MLflow model, or ``noop`` (measures the pipeline
around the model: it answers each input's shape)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mlyard.settings import Settings

#: A batch (inputs stacked on axis 0) -> one prediction per row.
Predict = Callable[[np.ndarray[Any, Any]], list[Any]]
NOOP_MODEL = "noop"


def load_model(settings: Settings, reference: str, device: str = "cpu") -> tuple[str, Predict]:
    """``(name shown in results, predict)`` for ``reference``; NotFoundError lists models.

    ``device`` is 'cpu' or 'cuda' (the device share this replica leased; PyTorch models only).
    """
    if reference == NOOP_MODEL:
        return NOOP_MODEL, lambda batch: [list(row.shape) for row in batch]
    import mlflow

    from mlyard.services.models import resolve_model_uri
    from mlyard.serving.model_loading import DEFAULT_INPUT_NAME, load_servable_model

    resolved = resolve_model_uri(settings, reference)  # refuses when tracking is off
    uri = settings.tracking_uri or ""
    # MLflow resolves models:/ URIs with the global registry URI (its API ignores the argument).
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(settings.registry_uri or uri)
    model = load_servable_model(resolved, device=device)
    input_name = model.inputs[0].name if model.inputs else DEFAULT_INPUT_NAME
    declared = model.checked_inputs[0].numpy_dtype if model.checked_inputs else None

    def predict(batch: np.ndarray[Any, Any]) -> list[Any]:
        outputs = model.predict({input_name: as_declared(batch, declared)})
        first = next(iter(outputs.values()))
        return list(np.asarray(first).tolist())

    return f"models:/{resolved.name}/{resolved.version}", predict


def as_declared(
    batch: np.ndarray[Any, Any], declared: np.dtype[Any] | None
) -> np.ndarray[Any, Any]:
    """``batch`` in the dtype the model's signature declares, where numbers convert.

    JSON numbers decode as float64 (or int64) whatever the model was trained on, and MLflow's
    schema check refuses float64 for a float32 tensor. Fractions are never truncated to
    integers: such a batch is passed on as it is and the model's own check says what is wrong.
    """
    if declared is None or batch.dtype == declared or declared.kind not in "biuf":
        return batch
    if batch.dtype.kind not in "biuf" or (declared.kind in "biu" and batch.dtype.kind == "f"):
        return batch
    return batch.astype(declared, copy=False)
