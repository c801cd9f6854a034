"""A consumer's batches reach the model in the dtype its signature declares."""

from __future__ import annotations

import numpy as np

from mlyard.consumers.model import as_declared


def test_json_floats_become_the_declared_float32() -> None:
    batch = np.asarray([[0.5, 1.0], [0.25, 0.0]])  # as JSON decodes: float64
    converted = as_declared(batch, np.dtype(np.float32))
    assert converted.dtype == np.float32
    assert converted.tolist() == [[0.5, 1.0], [0.25, 0.0]]


def test_integers_become_declared_floats() -> None:
    assert as_declared(np.asarray([[1, 2]]), np.dtype(np.float32)).dtype == np.float32


def test_fractions_are_never_truncated_to_declared_integers() -> None:
    batch = np.asarray([[0.5, 1.5]])
    assert as_declared(batch, np.dtype(np.int64)) is batch


def test_no_signature_or_the_same_dtype_passes_the_batch_as_it_is() -> None:
    batch = np.asarray([[1.0]], dtype=np.float32)
    assert as_declared(batch, None) is batch
    assert as_declared(batch, np.dtype(np.float32)) is batch


def test_text_is_not_converted_to_numbers() -> None:
    batch = np.asarray([["a"]])
    assert as_declared(batch, np.dtype(np.float32)) is batch
