"""Load a resolved model into one call signature: named numpy arrays in, named arrays out.

Every flavour goes through ``mlflow.pyfunc`` except PyTorch, which is loaded natively so a batch
goes straight to ``module(tensor)`` under ``torch.inference_mode()`` on the leased device, without
pandas conversions. The model's signature becomes the v2 input/output metadata and the source of
the warm-up input. PyTorch models and sklearn models logged with pickle/cloudpickle are pickles:
loading one runs code from it, so the server loads only the model the user named on the command
line (the CLI help says so).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlyard.errors import ArtifactError
from mlyard.models.registry import ResolvedModel
from mlyard.serving.tensors import TensorSpec, v2_datatype_of

logger = logging.getLogger(__name__)

NamedArrays = dict[str, np.ndarray[Any, Any]]
DEFAULT_INPUT_NAME = "input-0"
DEFAULT_OUTPUT_NAME = "output-0"


@dataclass(frozen=True)
class ServableModel:
    """A loaded model: metadata for the v2 API and a batch predict function.

    ``inputs`` is empty when the model has no signature; any single tensor is then accepted.
    ``predict`` is blocking and not thread-safe: the batcher calls it from one worker thread.
    """

    name: str
    version: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    predict: Callable[[NamedArrays], NamedArrays]
    warmup_input: NamedArrays | None


def load_servable_model(resolved: ResolvedModel, *, device: str = "cpu") -> ServableModel:
    """Download and load ``resolved``; ``device`` is 'cpu' or 'cuda' (PyTorch only)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        local_path = mlflow.artifacts.download_artifacts(artifact_uri=resolved.uri)
        metadata = Model.load(local_path)
    except (MlflowException, OSError) as exc:
        raise ArtifactError(
            f"Could not download model {resolved.uri}: {exc}",
            hint="Check that the model's artifacts are still in the artifact store.",
        ) from exc
    input_schema = metadata.get_input_schema()  # type: ignore[no-untyped-call]
    output_schema = metadata.get_output_schema()  # type: ignore[no-untyped-call]
    inputs, column_names = _input_specs(input_schema)
    outputs = _output_specs(output_schema)
    try:
        if resolved.flavor == "pytorch":
            predict = _load_pytorch(local_path, inputs, device)
        else:
            predict = _load_pyfunc(local_path, inputs, column_names)
    except (MlflowException, ImportError, OSError) as exc:
        raise ArtifactError(
            f"Could not load model {resolved.uri} ({resolved.flavor}): {exc}",
            hint="Serve it from an environment that has the libraries it was logged with.",
        ) from exc
    return ServableModel(
        name=resolved.name,
        version=resolved.version,
        platform=resolved.flavor,
        inputs=inputs,
        outputs=outputs,
        predict=predict,
        warmup_input=_warmup_input(metadata, local_path, inputs),
    )


def _input_specs(schema: Any) -> tuple[tuple[TensorSpec, ...], tuple[str, ...] | None]:
    """v2 specs of a model's inputs; the column names too when it takes a DataFrame."""
    if schema is None:
        return (), None
    if schema.is_tensor_spec():
        specs = tuple(
            TensorSpec(
                name=spec.name or (DEFAULT_INPUT_NAME if index == 0 else f"input-{index}"),
                datatype=v2_datatype_of(spec.type),
                shape=tuple(int(d) for d in spec.shape),
            )
            for index, spec in enumerate(schema.inputs)
        )
        return specs, None
    columns = tuple(col.name or f"input-{i}" for i, col in enumerate(schema.inputs))
    specs = tuple(
        TensorSpec(name=name, datatype=v2_datatype_of(np.dtype(col.type.to_numpy())), shape=(-1,))
        for name, col in zip(columns, schema.inputs, strict=True)
    )
    return specs, columns


def _output_specs(schema: Any) -> tuple[TensorSpec, ...]:
    if schema is None:
        return ()
    if schema.is_tensor_spec():
        return tuple(
            TensorSpec(
                name=spec.name or (DEFAULT_OUTPUT_NAME if index == 0 else f"output-{index}"),
                datatype=v2_datatype_of(spec.type),
                shape=tuple(int(d) for d in spec.shape),
            )
            for index, spec in enumerate(schema.inputs)
        )
    return tuple(
        TensorSpec(
            name=col.name or f"output-{index}",
            datatype=v2_datatype_of(np.dtype(col.type.to_numpy())),
            shape=(-1,),
        )
        for index, col in enumerate(schema.inputs)
    )


def _load_pyfunc(
    local_path: str, inputs: tuple[TensorSpec, ...], column_names: tuple[str, ...] | None
) -> Callable[[NamedArrays], NamedArrays]:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(local_path)

    def predict(batch: NamedArrays) -> NamedArrays:
        if column_names is not None:
            import pandas as pd

            return as_named_arrays(model.predict(pd.DataFrame(batch)))
        if len(batch) == 1:
            return as_named_arrays(model.predict(next(iter(batch.values()))))
        return as_named_arrays(model.predict(batch))

    return predict


def _load_pytorch(
    local_path: str, inputs: tuple[TensorSpec, ...], device: str
) -> Callable[[NamedArrays], NamedArrays]:
    import mlflow.pytorch
    import torch

    module = mlflow.pytorch.load_model(local_path, map_location=device)
    # Modules saved with torch.export (MLflow's default "pt2") are frozen graphs without eval().
    with contextlib.suppress(NotImplementedError):
        module.eval()
    order = [spec.name for spec in inputs]

    def predict(batch: NamedArrays) -> NamedArrays:
        names = order or list(batch)
        tensors = [torch.from_numpy(np.ascontiguousarray(batch[n])).to(device) for n in names]
        with torch.inference_mode():
            result = module(*tensors)
        if isinstance(result, Mapping):
            return {str(k): v.detach().cpu().numpy() for k, v in result.items()}
        if isinstance(result, tuple | list):
            return {f"output-{i}": t.detach().cpu().numpy() for i, t in enumerate(result)}
        return {DEFAULT_OUTPUT_NAME: result.detach().cpu().numpy()}

    return predict


def as_named_arrays(result: Any) -> NamedArrays:
    """Named arrays from whatever a model returned: array, list, Series, DataFrame or dict."""
    if isinstance(result, Mapping):
        return {str(k): np.asarray(v) for k, v in result.items()}
    columns = getattr(result, "columns", None)
    if columns is not None:  # a DataFrame: one output per column
        return {str(c): np.asarray(result[c]) for c in columns}
    return {DEFAULT_OUTPUT_NAME: np.asarray(result)}


def _warmup_input(
    metadata: Any, local_path: str, inputs: tuple[TensorSpec, ...]
) -> NamedArrays | None:
    """One small input: the logged input example when it fits, else zeros from the signature."""
    if not inputs:
        try:
            example = metadata.load_input_example(local_path)
        except Exception:  # a broken example must not stop serving; warm-up is skipped
            logger.warning("could not read the model's input example; skipping warm-up")
            return None
        if example is None:
            return None
        return {DEFAULT_INPUT_NAME: np.asarray(example)[:1]}
    return {spec.name: spec.example() for spec in inputs}
