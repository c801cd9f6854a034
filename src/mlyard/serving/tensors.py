"""Typed tensors of the Open Inference Protocol v2: datatypes, specs, and checks against them.

A request tensor is checked against the model's declared input before it reaches the model, so a
wrong shape or datatype becomes a 400 with a message naming what was expected, never a crash in
the model call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: v2 datatype name -> numpy dtype. BYTES holds Python ``str``/``bytes`` objects.
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
V2_DATATYPES = tuple(V2_TO_NUMPY)


class TensorError(ValueError):
    """A request tensor that does not fit the model; its message is shown to the client."""


def v2_datatype_of(dtype: np.dtype[Any]) -> str:
    """The v2 datatype name for a numpy dtype (strings and objects are BYTES)."""
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    native = dtype.newbyteorder("=")  # a big-endian array is the same datatype
    for name, candidate in V2_TO_NUMPY.items():
        if candidate == native:
            return name
    raise TensorError(f"numpy dtype {dtype} has no Open Inference Protocol v2 datatype")


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a model: v2 datatype and shape (-1 = any size).

    ``known`` is False for a placeholder of a model that does not say what it takes: the
    metadata shows it with ``note`` saying so, and requests are not checked against it.
    ``text`` marks a BYTES input the model takes as ``str`` (a string column).
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    known: bool = True
    note: str | None = None
    text: bool = False

    def metadata(self) -> dict[str, Any]:
        """The v2 REST metadata of this tensor; a placeholder carries ``parameters`` saying so."""
        described: dict[str, Any] = {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(self.shape),
        }
        if not self.known or self.note:
            described["parameters"] = {"shape_known": self.known, "description": self.note or ""}
        return described

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return V2_TO_NUMPY[self.datatype]

    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise ``TensorError`` unless ``shape`` fits this spec (same rank, fixed dims equal)."""
        if len(shape) != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        ):
            raise TensorError(
                f"input {self.name!r} has shape {list(shape)}, but the model expects "
                f"{list(self.shape)} (-1 means any size)"
            )

    def example(self) -> np.ndarray[Any, Any]:
        """A one-row array of zeros (empty strings for BYTES) fitting this spec, for warm-up."""
        shape = tuple(1 if dim == -1 else dim for dim in self.shape) or (1,)
        if self.datatype == "BYTES":
            return np.full(shape, "", dtype=np.str_ if self.text else object)
        return np.zeros(shape, dtype=self.numpy_dtype)


_ACCEPTED_KINDS: dict[str, str] = {
    "BOOL": "b",
    "UINT8": "bu",
    "UINT16": "bu",
    "UINT32": "bu",
    "UINT64": "bu",
    "INT8": "biu",
    "INT16": "biu",
    "INT32": "biu",
    "INT64": "biu",
    "FP16": "biuf",
    "FP32": "biuf",
    "FP64": "biuf",
}


def array_from_json(
    name: str, datatype: str, shape: Sequence[int], data: Any
) -> np.ndarray[Any, Any]:
    """Build the numpy array a v2 JSON tensor describes (data flat row-major, or nested).

    Raises ``TensorError`` when the datatype is unknown, the data do not fit the datatype
    (e.g. 1.5 in an INT32 tensor) or the number of elements does not match the shape.
    """
    if datatype not in V2_TO_NUMPY:
        raise TensorError(
            f"input {name!r} has datatype {datatype!r}; use one of {', '.join(V2_DATATYPES)}"
        )
    if any(dim < 0 for dim in shape):
        raise TensorError(f"input {name!r} has a negative dimension in shape {list(shape)}")
    expected_size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    dtype = V2_TO_NUMPY[datatype]
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).reshape(-1)
    else:
        try:
            raw = np.asarray(data)
        except ValueError as exc:  # ragged nested lists
            raise TensorError(f"input {name!r}: the data are not a regular array") from exc
        if raw.size and raw.dtype.kind not in _ACCEPTED_KINDS[datatype]:
            raise TensorError(
                f"input {name!r} is declared {datatype}, but its data hold "
                f"{_describe_kind(raw.dtype)} values"
            )
        flat = raw.reshape(-1).astype(dtype, copy=False)
    if flat.size != expected_size:
        raise TensorError(
            f"input {name!r} has {flat.size} elements, but shape {list(shape)} needs "
            f"{expected_size}"
        )
    return flat.reshape(tuple(shape))


def array_to_json_data(array: np.ndarray[Any, Any]) -> list[Any]:
    """The flat row-major JSON list of an array (bytes decoded as UTF-8 for BYTES)."""
    flat = array.reshape(-1)
    if flat.dtype.kind == "S" or flat.dtype.kind == "O":
        return [
            item.decode("utf-8", "replace") if isinstance(item, bytes) else item
            for item in flat.tolist()
        ]
    result: list[Any] = flat.tolist()
    return result


def _describe_kind(dtype: np.dtype[Any]) -> str:
    return {
        "b": "boolean",
        "i": "integer",
        "u": "integer",
        "f": "floating-point",
        "U": "string",
        "S": "string",
        "O": "mixed",
    }.get(dtype.kind, str(dtype))
