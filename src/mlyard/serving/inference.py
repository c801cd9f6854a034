"""From wire bodies to model inputs and back, checked against the model's declared tensors.

``v2_request_to_arrays`` and ``predict_request_to_arrays`` raise ``TensorError`` (a 400) for
anything that does not fit the model: unknown or missing inputs, wrong datatype, wrong shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mlyard.serving.model_loading import DEFAULT_INPUT_NAME, NamedArrays, ServableModel
from mlyard.serving.protocol_v2 import InferenceRequest, PredictRequest
from mlyard.serving.tensors import (
    TensorError,
    TensorSpec,
    array_from_json,
    array_to_json_data,
    v2_datatype_of,
)


def v2_request_to_arrays(model: ServableModel, request: InferenceRequest) -> NamedArrays:
    """The named arrays a v2 inference request carries, checked against ``model.inputs``."""
    specs = {spec.name: spec for spec in model.inputs}
    arrays: NamedArrays = {}
    for tensor in request.inputs:
        if tensor.parameters and "binary_data_size" in tensor.parameters:
            raise TensorError("the binary tensor extension is not supported; send JSON data")
        spec = specs.get(tensor.name)
        if specs and spec is None:
            raise TensorError(
                f"the model has no input {tensor.name!r}; its inputs: {_describe(model.inputs)}"
            )
        if spec is not None and tensor.datatype != spec.datatype:
            raise TensorError(
                f"input {tensor.name!r} has datatype {tensor.datatype}, but the model expects "
                f"{spec.datatype}"
            )
        array = array_from_json(tensor.name, tensor.datatype, tensor.shape, tensor.data)
        if spec is not None:
            spec.check_shape(array.shape)
        if tensor.name in arrays:
            raise TensorError(f"input {tensor.name!r} appears twice")
        arrays[tensor.name] = array
    _check_complete(model, arrays)
    return arrays


def predict_request_to_arrays(model: ServableModel, request: PredictRequest) -> NamedArrays:
    """The named arrays of a ``/predict`` body: ``instances`` rows or ``inputs``."""
    if (request.instances is None) == (request.inputs is None):
        raise TensorError('send exactly one of "instances" or "inputs"')
    rows: Any = request.instances if request.instances is not None else request.inputs
    if isinstance(rows, dict):
        named = rows
    elif len(model.inputs) > 1:
        if not all(isinstance(row, dict) for row in rows):
            raise TensorError(
                f"the model has several inputs ({_describe(model.inputs)}); send each row as an "
                "object keyed by input name, or inputs as an object of lists"
            )
        named = {spec.name: [row.get(spec.name) for row in rows] for spec in model.inputs}
    else:
        named = {model.inputs[0].name if model.inputs else DEFAULT_INPUT_NAME: rows}
    specs = {spec.name: spec for spec in model.inputs}
    arrays: NamedArrays = {}
    for name, values in named.items():
        spec = specs.get(name)
        if specs and spec is None:
            raise TensorError(
                f"the model has no input {name!r}; its inputs: {_describe(model.inputs)}"
            )
        arrays[name] = _json_rows_to_array(name, values, spec)
    _check_complete(model, arrays)
    return arrays


def arrays_to_v2_outputs(outputs: NamedArrays, requested: list[str] | None) -> list[dict[str, Any]]:
    """v2 response output tensors, restricted to ``requested`` names when the client asked."""
    if requested is not None:
        unknown = [name for name in requested if name not in outputs]
        if unknown:
            raise TensorError(
                f"the model has no output {unknown[0]!r}; its outputs: {', '.join(outputs)}"
            )
        outputs = {name: outputs[name] for name in requested}
    return [
        {
            "name": name,
            "shape": list(array.shape),
            "datatype": v2_datatype_of(array.dtype),
            "data": array_to_json_data(array),
        }
        for name, array in outputs.items()
    ]


def arrays_to_predictions(outputs: NamedArrays) -> list[Any] | dict[str, list[Any]]:
    """``/predict`` predictions: a list for a single output, name -> list for several."""
    if len(outputs) == 1:
        return _to_json_list(next(iter(outputs.values())))
    return {name: _to_json_list(array) for name, array in outputs.items()}


def _json_rows_to_array(name: str, values: Any, spec: TensorSpec | None) -> np.ndarray[Any, Any]:
    try:
        raw = np.asarray(values, dtype=object if spec and spec.datatype == "BYTES" else None)
    except ValueError as exc:
        raise TensorError(f"input {name!r}: the rows are not a regular array") from exc
    if spec is None:
        return raw
    if spec.datatype != "BYTES":
        if raw.dtype.kind not in "biuf":
            raise TensorError(f"input {name!r} must hold numbers for the model ({spec.datatype})")
        if spec.numpy_dtype.kind in "iu" and raw.dtype.kind == "f":
            raise TensorError(
                f"input {name!r} holds fractions but the model expects integers ({spec.datatype})"
            )
        raw = raw.astype(spec.numpy_dtype, copy=False)
    spec.check_shape(raw.shape)
    return raw


def _check_complete(model: ServableModel, arrays: NamedArrays) -> None:
    missing = [spec.name for spec in model.inputs if spec.name not in arrays]
    if missing:
        raise TensorError(
            f"missing input {missing[0]!r}; the model's inputs: {_describe(model.inputs)}"
        )
    if not arrays:
        raise TensorError("the request has no inputs")


def _to_json_list(array: np.ndarray[Any, Any]) -> list[Any]:
    if array.dtype.kind in "OS":
        return array_to_json_data(array) if array.ndim <= 1 else array.tolist()
    result: list[Any] = array.tolist() if array.ndim else [array.item()]
    return result


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name} ({s.datatype} {list(s.shape)})" for s in specs)
