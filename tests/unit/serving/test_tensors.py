"""Typed v2 tensors: datatypes, shapes and data checked before anything reaches a model."""

from __future__ import annotations

import numpy as np
import pytest

from mlyard.serving.tensors import (
    TensorError,
    TensorSpec,
    array_from_json,
    array_to_json_data,
    v2_datatype_of,
)


def test_flat_row_major_data_is_reshaped() -> None:
    array = array_from_json("x", "INT32", [2, 3], [1, 2, 3, 4, 5, 6])
    assert array.dtype == np.int32
    assert array.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_nested_data_is_accepted() -> None:
    array = array_from_json("x", "FP32", [2, 2], [[1.5, 2], [3, 4]])
    assert array.dtype == np.float32
    assert array[0, 0] == pytest.approx(1.5)


def test_bytes_tensor_keeps_strings() -> None:
    array = array_from_json("x", "BYTES", [2], ["a", "b"])
    assert array_to_json_data(array) == ["a", "b"]


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP128", [1], [1.0], "use one of"),
        ("INT32", [2], [1.5, 2.0], "floating-point"),
        ("BOOL", [1], [1], "integer"),
        ("FP32", [2, 2], [1.0, 2.0, 3.0], "needs 4"),
        ("FP32", [-1], [1.0], "negative"),
        ("FP32", [2], ["a", "b"], "string"),
    ],
)
def test_bad_tensors_are_refused(
    datatype: str, shape: list[int], data: list[object], message: str
) -> None:
    with pytest.raises(TensorError, match=message):
        array_from_json("x", datatype, shape, data)


def test_spec_checks_rank_and_fixed_dimensions() -> None:
    spec = TensorSpec("x", "FP64", (-1, 64))
    spec.check_shape((5, 64))
    with pytest.raises(TensorError, match=r"expects \[-1, 64\]"):
        spec.check_shape((5, 63))
    with pytest.raises(TensorError):
        spec.check_shape((64,))


def test_spec_example_has_one_row() -> None:
    example = TensorSpec("x", "UINT8", (-1, 3)).example()
    assert example.shape == (1, 3)
    assert example.dtype == np.uint8


@pytest.mark.parametrize(
    ("dtype", "name"),
    [(np.float32, "FP32"), (np.int64, "INT64"), (np.bool_, "BOOL"), (np.str_, "BYTES")],
)
def test_numpy_dtypes_map_to_v2_names(dtype: type, name: str) -> None:
    assert v2_datatype_of(np.dtype(dtype)) == name
