"""The studied FashionMNIST pipeline through the CLI, on generated IDX files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.cli import EXAMPLES, mlyard_json
from tests.e2e.idx_data import write_idx_dataset

pytestmark = pytest.mark.e2e
FMNIST = str(EXAMPLES / "fmnist" / "pipeline.py")


def test_fmnist_trains_a_cnn_passes_the_gates_and_registers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_idx_dataset(tmp_path / "fashion-mnist")
    view = mlyard_json("run", FMNIST, "-p", f"data={data}", "-p", "epochs=3", timeout=600)
    assert view["state"] == "SUCCEEDED", view.get("error")
    assert view["metrics"]["evaluate.accuracy"] >= 0.8
    assert view["metrics"]["preprocess.train_examples"] == 2000
    train = next(s for s in view["steps"] if s["name"] == "train")
    assert train["outputs"]["output"]["materializer"] == "torch"
    assert "fmnist-cnn version 1" in view["models"]
    _assert_registered_with_signature(monkeypatch)


def _assert_registered_with_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own client loads the CNN with the signature its input example gave it."""
    import mlflow.pyfunc

    home = Path(os.environ["MLYARD_HOME"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/fmnist-cnn/1")
    signature = model.metadata.signature
    assert [(str(s.type), tuple(s.shape)) for s in signature.inputs.inputs] == [
        ("float32", (-1, 1, 28, 28))
    ]
    assert [(str(s.type), tuple(s.shape)) for s in signature.outputs.inputs] == [
        ("float32", (-1, 10))
    ]


def test_fmnist_reports_missing_data_clearly(tmp_path: Path) -> None:
    view = mlyard_json("run", FMNIST, "-p", f"data={tmp_path / 'nothing'}")
    assert view["state"] == "FAILED"
    assert "train-images-idx3-ubyte(.gz) not found" in view["error"]
