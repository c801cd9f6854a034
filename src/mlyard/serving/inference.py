"""From wire bodies to model inputs and back, checked against the model's declared tensors.

``v2_request_to_arrays`` and ``predict_request_to_arrays`` raise ``TensorError`` (a 400) for
anything that does not fit the model: unknown or missing inputs, wrong datatype, wrong shape.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mlyard.serving.binary_tensors import array_from_raw, array_to_raw, binary_data_size
from mlyard.serving.model_loading import DEFAULT_INPUT_NAME, NamedArrays, ServableModel
from mlyard.serving.protocol_v2 import InferenceRequest, PredictRequest
from mlyard.serving.tensors import (
    TensorError,
    TensorSpec,
    array_from_json,
    array_to_json_data,
    v2_datatype_of,
)


class InputCollector:
    """Checks request tensors one by one against ``model.inputs``, then hands the named arrays.

    The HTTP (JSON and binary) and gRPC front ends decode tensors their own way but share these
    checks, so every protocol refuses the same inputs with the same messages.
    """

    def __init__(self, model: ServableModel) -> None:
        self._model = model
        self._inputs = model.checked_inputs
        self._specs = {spec.name: spec for spec in self._inputs}
        self._arrays: NamedArrays = {}

    def expect(self, name: str, datatype: str) -> None:
        """Raise ``TensorError`` unless the model takes an input ``name`` of ``datatype``."""
        spec = self._specs.get(name)
        if self._specs and spec is None:
            raise TensorError(
                f"the model has no input {name!r}; its inputs: {_describe(self._inputs)}"
            )
        if spec is not None and datatype != spec.datatype:
            raise TensorError(
                f"input {name!r} has datatype {datatype}, but the model expects {spec.datatype}"
            )
        if name in self._arrays:
            raise TensorError(f"input {name!r} appears twice")

    def add(self, name: str, array: np.ndarray[Any, Any]) -> None:
        """Record a decoded input (after ``expect``); ``TensorError`` for a wrong shape."""
        spec = self._specs.get(name)
        if spec is not None:
            spec.check_shape(array.shape)
            if spec.text:
                array = _as_text(name, array)
        self._arrays[name] = array

    def arrays(self) -> NamedArrays:
        """Every input, once all were added; ``TensorError`` when one is missing."""
        _check_complete(self._model, self._arrays)
        return self._arrays


def v2_request_to_arrays(
    model: ServableModel, request: InferenceRequest, binary: memoryview | None = None
) -> NamedArrays:
    """The named arrays a v2 inference request carries, checked against ``model.inputs``.

    ``binary`` is the part of the body after the JSON header when the request uses the binary
    tensor extension; inputs with ``parameters.binary_data_size`` take their bytes from it, in
    order, and the sizes must add up to all of it.
    """
    collector = InputCollector(model)
    offset = 0
    for tensor in request.inputs:
        collector.expect(tensor.name, tensor.datatype)
        size = binary_data_size(tensor.name, tensor.parameters)
        if size is None:
            if tensor.data is None:
                raise TensorError(
                    f"input {tensor.name!r} has neither data nor a binary_data_size parameter"
                )
            array = array_from_json(tensor.name, tensor.datatype, tensor.shape, tensor.data)
        else:
            if binary is None:
                raise TensorError(
                    f"input {tensor.name!r} has binary_data_size, but the request has no "
                    "Inference-Header-Content-Length header saying where its JSON ends"
                )
            if tensor.data is not None:
                raise TensorError(f"input {tensor.name!r} has both data and binary_data_size")
            if offset + size > len(binary):
                raise TensorError(
                    f"input {tensor.name!r} has binary_data_size {size}, but only "
                    f"{len(binary) - offset} bytes of tensor data are left in the body"
                )
            array = array_from_raw(
                tensor.name, tensor.datatype, tensor.shape, binary[offset : offset + size]
            )
            offset += size
        collector.add(tensor.name, array)
    if binary is not None and offset != len(binary):
        raise TensorError(
            f"the body has {len(binary)} bytes of tensor data after the JSON header, but the "
            f"inputs' binary_data_size add up to {offset}"
        )
    return collector.arrays()


def predict_request_to_arrays(model: ServableModel, request: PredictRequest) -> NamedArrays:
    """The named arrays of a ``/predict`` body: ``instances`` rows or ``inputs``."""
    if (request.instances is None) == (request.inputs is None):
        raise TensorError('send exactly one of "instances" or "inputs"')
    rows: Any = request.instances if request.instances is not None else request.inputs
    inputs = model.checked_inputs
    if isinstance(rows, dict):
        named = rows
    elif len(inputs) > 1:
        if not all(isinstance(row, dict) for row in rows):
            raise TensorError(
                f"the model has several inputs ({_describe(inputs)}); send each row as an "
                "object keyed by input name, or inputs as an object of lists"
            )
        named = {spec.name: [row.get(spec.name) for row in rows] for spec in inputs}
    else:
        named = {inputs[0].name if inputs else DEFAULT_INPUT_NAME: rows}
    specs = {spec.name: spec for spec in inputs}
    arrays: NamedArrays = {}
    for name, values in named.items():
        spec = specs.get(name)
        if specs and spec is None:
            raise TensorError(f"the model has no input {name!r}; its inputs: {_describe(inputs)}")
        arrays[name] = _json_rows_to_array(name, values, spec)
    _check_complete(model, arrays)
    return arrays


def select_outputs(outputs: NamedArrays, requested: list[str] | None) -> NamedArrays:
    """The outputs the client asked for (all of them when it named none), in its order."""
    if requested is None:
        return outputs
    unknown = [name for name in requested if name not in outputs]
    if unknown:
        raise TensorError(
            f"the model has no output {unknown[0]!r}; its outputs: {', '.join(outputs)}"
        )
    return {name: outputs[name] for name in requested}


def v2_response_body(
    model: ServableModel, request: InferenceRequest, outputs: NamedArrays
) -> tuple[bytes, int | None]:
    """The body answering ``request``, and its JSON header's length when it carries binary data.

    An output goes as raw bytes when the client asked: per output with
    ``parameters.binary_data``, or for all outputs with the request's
    ``parameters.binary_data_output``; otherwise as JSON ``data``.
    """
    all_binary = _flag(request.parameters, "binary_data_output", default=False)
    binary_for: dict[str, bool] = {}
    for wanted in request.outputs or ():
        if wanted.parameters and "classification" in wanted.parameters:
            raise TensorError(
                f"output {wanted.name!r} asks for classification, which this server does not "
                "support; ask for the output itself"
            )
        binary_for[wanted.name] = _flag(wanted.parameters, "binary_data", default=all_binary)
    selected = select_outputs(
        outputs, [o.name for o in request.outputs] if request.outputs else None
    )
    tensors: list[dict[str, Any]] = []
    raw_parts: list[bytes] = []
    for name, array in selected.items():
        tensor: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": v2_datatype_of(array.dtype),
        }
        if binary_for.get(name, all_binary):
            raw = array_to_raw(array)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            raw_parts.append(raw)
        else:
            tensor["data"] = array_to_json_data(array)
        tensors.append(tensor)
    header: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if request.id is not None:
        header["id"] = request.id
    header["outputs"] = tensors
    encoded = json.dumps(header, separators=(",", ":")).encode()
    if not raw_parts:
        return encoded, None
    return b"".join([encoded, *raw_parts]), len(encoded)


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
    return _as_text(name, raw) if spec.text else raw


def _check_complete(model: ServableModel, arrays: NamedArrays) -> None:
    missing = [spec.name for spec in model.checked_inputs if spec.name not in arrays]
    if missing:
        raise TensorError(
            f"missing input {missing[0]!r}; the model's inputs: {_describe(model.checked_inputs)}"
        )
    if not arrays:
        raise TensorError("the request has no inputs")


def _flag(parameters: dict[str, Any] | None, key: str, *, default: bool) -> bool:
    if not parameters or key not in parameters:
        return default
    value = parameters[key]
    if not isinstance(value, bool):
        raise TensorError(f"parameter {key!r} is {value!r}; it must be true or false")
    return value


def _as_text(name: str, array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """BYTES elements as a numpy string array, for a model that takes text (MLflow checks the
    dtype); binary tensors arrive as bytes, decoded here as UTF-8."""
    texts: list[str] = []
    for index, item in enumerate(array.reshape(-1).tolist()):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TensorError(
                    f"input {name!r}: element {index} is not UTF-8 text, and the model takes "
                    "strings"
                ) from exc
        texts.append(str(item))
    return np.array(texts, dtype=np.str_).reshape(array.shape)


def _to_json_list(array: np.ndarray[Any, Any]) -> list[Any]:
    if array.dtype.kind in "OS":
        return array_to_json_data(array) if array.ndim <= 1 else array.tolist()
    result: list[Any] = array.tolist() if array.ndim else [array.item()]
    return result


def _describe(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name} ({s.datatype} {list(s.shape)})" for s in specs)
