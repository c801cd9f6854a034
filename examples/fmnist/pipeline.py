"""FashionMNIST, as in the cloud–HPC integration study: preprocess → train a CNN → evaluate
(gates ≥ 0.80) → register. The same file runs unchanged on every backend.

    mlyard run examples/fmnist/pipeline.py -p data=/data/fashion-mnist
    mlyard run examples/fmnist/pipeline.py -p data=s3://datasets/fashion-mnist --backend hpc

``data`` is a directory or URI with the four standard IDX files (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
optionally ``.gz``). Training uses the GPU when the step was given one.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch

from mlyard import Resources, log_metric, log_metrics, log_model, log_params, pipeline, step

#: GPUs for the training step (0 on a machine without one; e.g. FMNIST_GPUS=1 on a GPU node).
TRAIN_GPUS = float(os.environ.get("FMNIST_GPUS", "0"))
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class QualityGateError(Exception):
    """The model is not good enough to register."""


def read_idx(data: str, name: str) -> np.ndarray:
    """One IDX file (raw or gzipped) from a directory or any fsspec URI."""
    import fsspec

    base = data.rstrip("/")
    for candidate in (f"{base}/{name}.gz", f"{base}/{name}"):
        filesystem, path = fsspec.core.url_to_fs(candidate)
        if filesystem.exists(path):
            with filesystem.open(path, "rb") as handle:
                raw = handle.read()
            if candidate.endswith(".gz"):
                raw = gzip.decompress(raw)
            dimensions = raw[3]
            shape = tuple(
                int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions)
            )
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)
    raise FileNotFoundError(f"{name}(.gz) not found under {data}")


@step(outputs=["x_train", "y_train", "x_test", "y_test"])
def preprocess(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the IDX files, scale pixels to [0, 1] and add the channel axis."""
    arrays = {key: read_idx(data, name) for key, name in IDX_FILES.items()}
    images = {
        k: (arrays[k].astype(np.float32) / 255.0)[:, None, :, :] for k in ("x_train", "x_test")
    }
    log_metrics({"train_examples": len(arrays["y_train"]), "test_examples": len(arrays["y_test"])})
    return (
        images["x_train"],
        arrays["y_train"].astype(np.int64),
        images["x_test"],
        arrays["y_test"].astype(np.int64),
    )


def build_cnn(classes: int = 10) -> torch.nn.Module:
    # A Sequential of built-in layers: the logged model needs none of this file to load.
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 7 * 7, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, classes),
    )


@step(resources=Resources(cpus=2, memory="4GB", gpus=TRAIN_GPUS), retries=1)
def train(
    x_train: np.ndarray, y_train: np.ndarray, epochs: int, lr: float, batch_size: int
) -> torch.nn.Module:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_cnn().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_function = torch.nn.CrossEntropyLoss()
    features = torch.from_numpy(x_train)
    labels = torch.from_numpy(y_train)
    log_params({"epochs": epochs, "lr": lr, "batch_size": batch_size, "device": str(device)})
    for epoch in range(epochs):
        order = torch.randperm(len(labels))
        total = 0.0
        for start in range(0, len(labels), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_function(model(features[batch].to(device)), labels[batch].to(device))
            loss.backward()
            optimizer.step()
            total += float(loss) * len(batch)
        log_metric("train_loss", total / len(labels), step=epoch)
    return model.cpu().eval()


@step
def evaluate(
    model: torch.nn.Module, x_test: np.ndarray, y_test: np.ndarray, gate: float
) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test)).argmax(dim=1).numpy()
    scores = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "precision": float(precision_score(y_test, predicted, average="macro", zero_division=0)),
        "recall": float(recall_score(y_test, predicted, average="macro", zero_division=0)),
    }
    log_metrics(scores)
    failing = {name: value for name, value in scores.items() if value < gate}
    if failing:
        listed = ", ".join(f"{name} {value:.3f}" for name, value in failing.items())
        raise QualityGateError(f"Quality gate failed: {listed} below {gate:.2f}.")
    return scores


@step
def register(
    model: torch.nn.Module, scores: dict[str, float], x_test: np.ndarray, model_name: str
) -> None:
    """Register the CNN; a few test images give it its signature (float32 [-1, 1, 28, 28] in,
    [-1, 10] scores out)."""
    log_model(model, name=model_name, flavor="pytorch", input_example=x_test[:5])


@pipeline
def fmnist(
    data: str,
    epochs: int = 2,
    lr: float = 1e-3,
    batch_size: int = 128,
    gate: float = 0.80,
    model_name: str = "fmnist-cnn",
) -> None:
    x_train, y_train, x_test, y_test = preprocess(data)
    model = train(x_train, y_train, epochs, lr, batch_size)
    scores = evaluate(model, x_test, y_test, gate)
    register(model, scores, x_test, model_name)
