"""Tensors as raw bytes: the v2 binary tensor data extension over HTTP and gRPC's raw contents.

A fixed-size tensor travels as its elements in little-endian byte order, row-major; a BYTES
tensor as each element's length (4 bytes, little-endian) followed by its bytes. Over HTTP the
body is then a JSON header of ``Inference-Header-Content-Length`` bytes followed by the tensors,
each input saying its size in ``parameters.binary_data_size``; over gRPC each tensor is one entry
of ``raw_input_contents`` / ``raw_output_contents``. Every size is checked against the shape and
datatype before anything is decoded, so a short or padded buffer is a ``TensorError`` (a 400 /
INVALID_ARGUMENT), never a partial tensor.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlyard.serving.tensors import V2_DATATYPES, V2_TO_NUMPY, TensorError, v2_datatype_of

HEADER_LENGTH_HEADER = "inference-header-content-length"
_LENGTH_PREFIX = struct.Struct("<I")


def split_binary_body(body: bytes, declared_header_length: str) -> tuple[bytes, memoryview]:
    """The JSON header and the tensor bytes of a body sent with the binary extension.

    Raises ``TensorError`` unless ``declared_header_length`` (the value of the
    ``Inference-Header-Content-Length`` header) is a whole number of bytes within the body.
    """
    text = declared_header_length.strip()
    if not text.isdigit():
        raise TensorError(
            f"the Inference-Header-Content-Length header is {declared_header_length!r}; it must "
            "be the length in bytes of the JSON header at the start of the body"
        )
    header_length = int(text)
    if header_length > len(body):
        raise TensorError(
            f"the Inference-Header-Content-Length header says the JSON header has "
            f"{header_length} bytes, but the whole body has only {len(body)}"
        )
    view = memoryview(body)
    return bytes(view[:header_length]), view[header_length:]


def binary_data_size(name: str, parameters: dict[str, Any] | None) -> int | None:
    """An input's ``binary_data_size`` parameter, or ``None`` when it carries JSON data."""
    if not parameters or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TensorError(
            f"input {name!r} has binary_data_size {size!r}; it must be a whole number of bytes"
        )
    return size


def element_count(name: str, shape: Sequence[int]) -> int:
    """How many elements ``shape`` holds; ``TensorError`` for a negative dimension."""
    if any(dim < 0 for dim in shape):
        raise TensorError(f"input {name!r} has a negative dimension in shape {list(shape)}")
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def array_from_raw(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview
) -> np.ndarray[Any, Any]:
    """The array that ``raw`` holds for a tensor of ``datatype`` and ``shape``.

    Fixed-size datatypes are read without copying (the array is read-only and shares ``raw``).
    Raises ``TensorError`` when the datatype is unknown or the byte count does not match.
    """
    if datatype not in V2_TO_NUMPY:
        raise TensorError(
            f"input {name!r} has datatype {datatype!r}; use one of {', '.join(V2_DATATYPES)}"
        )
    count = element_count(name, shape)
    if datatype == "BYTES":
        return _bytes_elements(name, raw, count).reshape(tuple(shape))
    dtype = V2_TO_NUMPY[datatype].newbyteorder("<")
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise TensorError(
            f"input {name!r} carries {len(raw)} bytes, but {datatype} {list(shape)} needs "
            f"{expected} ({count} elements of {dtype.itemsize} bytes)"
        )
    array = np.frombuffer(raw, dtype=dtype, count=count)
    if datatype == "BOOL" and np.any(array.view(np.uint8) > 1):
        raise TensorError(f"input {name!r} is BOOL, but holds bytes other than 0 and 1")
    return array.reshape(tuple(shape))


def array_to_raw(array: np.ndarray[Any, Any]) -> bytes:
    """The raw bytes of an output tensor, laid out as ``array_from_raw`` reads them."""
    if v2_datatype_of(array.dtype) == "BYTES":
        return _serialize_bytes_elements(array)
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return little.tobytes()


def _bytes_elements(name: str, raw: bytes | memoryview, count: int) -> np.ndarray[Any, Any]:
    view = memoryview(raw)
    elements = np.empty(count, dtype=object)
    offset = 0
    for index in range(count):
        if offset + 4 > len(view):
            raise TensorError(
                f"input {name!r} ends after {index} of its {count} BYTES elements; each element "
                "is a 4-byte little-endian length followed by that many bytes"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise TensorError(
                f"input {name!r}: BYTES element {index} says {length} bytes, but only "
                f"{len(view) - offset} are left"
            )
        elements[index] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise TensorError(
            f"input {name!r} has {len(view) - offset} bytes left over after its {count} BYTES "
            "elements; its shape or its data is wrong"
        )
    return elements


def _serialize_bytes_elements(array: np.ndarray[Any, Any]) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1).tolist():
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LENGTH_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)
