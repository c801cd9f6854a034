from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mlyard.artifacts.materializers import load_value, save_value
from mlyard.artifacts.store import ArtifactStore
from mlyard.errors import ArtifactError


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


class Custom:
    def __init__(self, value: int) -> None:
        self.value = value


def test_each_type_gets_its_materializer_and_round_trips(store: ArtifactStore) -> None:
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    cases: list[tuple[object, str]] = [
        ({"a": [1, 2.5, None, "x"]}, "json"),
        ((1, 2), "json"),
        (np.arange(6, dtype=np.float32).reshape(2, 3), "numpy"),
        (np.float64(2.5), "numpy"),
        (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), "pandas"),
        (pd.Series([1.0, 2.0], name="s"), "pandas"),
        (pa.table({"a": [1, 2]}), "arrow"),
        (torch.ones(2, 2), "torch"),
        (torch.nn.Linear(2, 1), "torch"),
        (model, "joblib"),
        (Custom(3), "cloudpickle"),
    ]
    for value, materializer in cases:
        ref = save_value(store, value)
        assert ref.materializer == materializer, value
        loaded = load_value(store, ref)
        if isinstance(value, np.ndarray):
            assert np.array_equal(loaded, value)  # type: ignore[arg-type]
            assert ref.metadata["shape"] == [2, 3]
        elif isinstance(value, pd.DataFrame | pd.Series | pa.Table):
            assert value.equals(loaded)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, loaded)  # type: ignore[arg-type]
        elif isinstance(value, torch.nn.Module):
            assert isinstance(loaded, torch.nn.Linear)
        elif isinstance(value, LogisticRegression):
            assert list(loaded.predict([[1.0]])) == [1]  # type: ignore[attr-defined]
        elif isinstance(value, Custom):
            assert loaded.value == 3  # type: ignore[attr-defined]
        else:
            assert loaded == value


def test_identical_values_have_one_digest(store: ArtifactStore) -> None:
    first = save_value(store, np.arange(1000))
    assert save_value(store, np.arange(1000)).digest == first.digest
    assert save_value(store, pd.DataFrame({"a": [1]})).digest == (
        save_value(store, pd.DataFrame({"a": [1]})).digest
    )


def test_files_and_directories(store: ArtifactStore, tmp_path: Path) -> None:
    directory = tmp_path / "model"
    (directory / "nested").mkdir(parents=True)
    (directory / "nested" / "w.bin").write_bytes(b"\0\1")
    (directory / "config.json").write_text("{}")
    ref = save_value(store, directory)
    assert ref.materializer == "path"
    (directory / "config.json").touch()  # a new mtime must not change the digest
    assert save_value(store, directory).digest == ref.digest
    loaded = load_value(store, ref)
    assert isinstance(loaded, Path) and loaded.name == "model"
    assert (loaded / "nested" / "w.bin").read_bytes() == b"\0\1"
    single = tmp_path / "notes.txt"
    single.write_text("hi")
    loaded_file = load_value(store, save_value(store, single))
    assert isinstance(loaded_file, Path) and loaded_file.read_text() == "hi"


def test_unstorable_values_get_an_actionable_error(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match="No materializer could store") as caught:
        save_value(store, threading.Lock())
    assert "numpy array" in (caught.value.hint or "")
