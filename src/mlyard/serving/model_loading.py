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
from mlyard.extras import require_extra
from mlyard.models.registry import ResolvedModel
from mlyard.serving.tensors import TensorSpec, v2_datatype_of

logger = logging.getLogger(__name__)

NamedArrays = dict[str, np.ndarray[Any, Any]]
DEFAULT_INPUT_NAME = "input-0"
DEFAULT_OUTPUT_NAME = "output-0"


@dataclass(frozen=True)
class ServableModel:
    """A loaded model: metadata for the v2 API and a batch predict function.

    ``inputs`` and ``outputs`` describe the model for the v2 metadata: from its MLflow signature,
    else from what its framework knows, else one placeholder saying the shape is unknown.
    Requests are checked against ``checked_inputs`` (none for such a placeholder: any single
    tensor is then accepted). ``predict`` is blocking and not thread-safe: the batcher calls it
    from one worker thread.
    """

    name: str
    version: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    predict: Callable[[NamedArrays], NamedArrays]
    warmup_input: NamedArrays | None

    @property
    def checked_inputs(self) -> tuple[TensorSpec, ...]:
        """The inputs requests are checked against: those whose shape and datatype are known."""
        return tuple(spec for spec in self.inputs if spec.known)


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
            raw_model = None
        else:
            predict, raw_model = _load_pyfunc(local_path, column_names)
    except (MlflowException, ImportError, OSError) as exc:
        raise ArtifactError(
            f"Could not load model {resolved.uri} ({resolved.flavor}): {exc}",
            hint="Serve it from an environment that has the libraries it was logged with.",
        ) from exc
    if not inputs or not outputs:
        known_inputs, known_outputs = describe_from_framework(raw_model)
        inputs = inputs or known_inputs or (_unknown(DEFAULT_INPUT_NAME, "input"),)
        outputs = outputs or known_outputs or (_unknown(DEFAULT_OUTPUT_NAME, "output"),)
    return ServableModel(
        name=resolved.name,
        version=resolved.version,
        platform=resolved.flavor,
        inputs=inputs,
        outputs=outputs,
        predict=_named_like(predict, outputs),
        warmup_input=_warmup_input(metadata, local_path, inputs),
    )


def _input_specs(schema: Any) -> tuple[tuple[TensorSpec, ...], tuple[str, ...] | None]:
    """v2 specs of a model's inputs; the column names too when it takes a DataFrame."""
    if schema is None:
        return (), None
    if schema.is_tensor_spec():
        return _tensor_specs(schema, "input"), None
    specs = _column_specs(schema, "input")
    return specs, tuple(spec.name for spec in specs)


def _output_specs(schema: Any) -> tuple[TensorSpec, ...]:
    if schema is None:
        return ()
    if schema.is_tensor_spec():
        return _tensor_specs(schema, "output")
    return _column_specs(schema, "output")


def _tensor_specs(schema: Any, kind: str) -> tuple[TensorSpec, ...]:
    """Specs of a tensor-based signature: numpy dtype and shape (-1 = variable) as declared."""
    return tuple(
        TensorSpec(
            name=spec.name or f"{kind}-{index}",
            datatype=v2_datatype_of(spec.type),
            shape=tuple(int(d) for d in spec.shape),
            text=spec.type.kind == "U",
        )
        for index, spec in enumerate(schema.inputs)
    )


def _column_specs(schema: Any, kind: str) -> tuple[TensorSpec, ...]:
    """Specs of a column-based signature: each column is a 1-D tensor of rows."""
    specs = []
    for index, column in enumerate(schema.inputs):
        name = column.name or f"{kind}-{index}"
        dtype = _column_dtype(column.type)
        if dtype is None:  # arrays, objects, maps, Any: no v2 datatype holds them
            specs.append(
                TensorSpec(
                    name,
                    "BYTES",
                    (-1,),
                    text=True,
                    note=f"column of MLflow type {column.type}: send each row as a JSON string",
                )
            )
        elif dtype.kind == "M":
            specs.append(
                TensorSpec(name, "BYTES", (-1,), text=True, note="datetimes as ISO 8601 strings")
            )
        else:
            specs.append(TensorSpec(name, v2_datatype_of(dtype), (-1,), text=dtype.kind == "U"))
    return tuple(specs)


def _column_dtype(column_type: Any) -> np.dtype[Any] | None:
    to_numpy = getattr(column_type, "to_numpy", None)
    if to_numpy is None:
        return None
    try:
        dtype: np.dtype[Any] = np.dtype(to_numpy())
    except (TypeError, ValueError):
        return None
    return dtype


def describe_from_framework(
    raw_model: Any,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of a model without a signature, from what its framework records.

    A fitted scikit-learn estimator knows its feature count (``n_features_in_``): one FP64
    input ``[-1, n]``, and for a classifier one output per row typed like its ``classes_``.
    Anything else says nothing (empty tuples).
    """
    features = getattr(raw_model, "n_features_in_", None)
    if not isinstance(features, int) or isinstance(features, bool):
        return (), ()
    note = "from the fitted scikit-learn model (n_features_in_); it was logged without a signature"
    inputs = (TensorSpec(DEFAULT_INPUT_NAME, "FP64", (-1, features), note=note),)
    classes = getattr(raw_model, "classes_", None)
    if isinstance(classes, np.ndarray) and classes.ndim == 1:
        datatype = v2_datatype_of(classes.dtype)
        return inputs, (TensorSpec(DEFAULT_OUTPUT_NAME, datatype, (-1,), note=note),)
    return inputs, ()


def _unknown(name: str, kind: str) -> TensorSpec:
    return TensorSpec(
        name,
        "FP32",
        (-1,),
        known=False,
        note=f"The model was logged without a signature and its framework does not say its "
        f"{kind} shape or datatype; shape [-1] stands for any shape. Log the model with a "
        "signature (or an input example) to describe it.",
    )


def _named_like(
    predict: Callable[[NamedArrays], NamedArrays], outputs: tuple[TensorSpec, ...]
) -> Callable[[NamedArrays], NamedArrays]:
    """``predict`` answering under the signature's output name when the model returns one array."""
    if len(outputs) != 1 or outputs[0].name == DEFAULT_OUTPUT_NAME or not outputs[0].known:
        return predict
    name = outputs[0].name

    def renamed(batch: NamedArrays) -> NamedArrays:
        result = predict(batch)
        if len(result) == 1 and DEFAULT_OUTPUT_NAME in result:
            return {name: result[DEFAULT_OUTPUT_NAME]}
        return result

    return renamed


def _load_pyfunc(
    local_path: str, column_names: tuple[str, ...] | None
) -> tuple[Callable[[NamedArrays], NamedArrays], Any]:
    """The batch predict function, and the framework's own model object (None if hidden)."""
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(local_path)
    try:
        raw_model = model.get_raw_model()
    except NotImplementedError:
        raw_model = None

    def predict(batch: NamedArrays) -> NamedArrays:
        if column_names is not None:
            import pandas as pd

            return as_named_arrays(model.predict(pd.DataFrame(batch)))
        if len(batch) == 1:
            return as_named_arrays(model.predict(next(iter(batch.values()))))
        return as_named_arrays(model.predict(batch))

    return predict, raw_model


def _load_pytorch(
    local_path: str, inputs: tuple[TensorSpec, ...], device: str
) -> Callable[[NamedArrays], NamedArrays]:
    require_extra("torch", needed_by="Serving a PyTorch model")
    import mlflow.pytorch
    import torch

    module = mlflow.pytorch.load_model(local_path, map_location=device)
    # Modules saved with torch.export (MLflow's default "pt2") are frozen graphs without eval().
    with contextlib.suppress(NotImplementedError):
        module.eval()
    order = [spec.name for spec in inputs if spec.known]

    def predict(batch: NamedArrays) -> NamedArrays:
        names = order or list(batch)
        tensors = [torch.from_numpy(_writable(batch[n])).to(device) for n in names]
        with torch.inference_mode():
            result = module(*tensors)
        if isinstance(result, Mapping):
            return {str(k): v.detach().cpu().numpy() for k, v in result.items()}
        if isinstance(result, tuple | list):
            return {f"output-{i}": t.detach().cpu().numpy() for i, t in enumerate(result)}
        return {DEFAULT_OUTPUT_NAME: result.detach().cpu().numpy()}

    return predict


def _writable(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    # Binary tensors are read-only views of the request body; torch wants memory it may write.
    if array.flags.writeable and array.flags.c_contiguous:
        return array
    return np.array(array, order="C")


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
    inputs = tuple(spec for spec in inputs if spec.known)
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
