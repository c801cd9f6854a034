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

    def predict(batch: np.ndarray[Any, Any]) -> list[Any]:
        outputs = model.predict({input_name: batch})
        first = next(iter(outputs.values()))
        return list(np.asarray(first).tolist())

    return f"models:/{resolved.name}/{resolved.version}", predict
