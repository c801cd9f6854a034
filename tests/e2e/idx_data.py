"""Small FashionMNIST-shaped IDX files a CNN can learn: class k has a bright bar at row 2k+4."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _examples(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 10, size=count)
    images = rng.integers(0, 40, size=(count, 28, 28))
    for index, label in enumerate(labels):
        row = 2 * int(label) + 4
        images[index, row : row + 2, 4:24] = 230
    return images, labels


def write_idx_dataset(directory: Path, train: int = 2000, test: int = 300) -> Path:
    """Write the four standard files (gzipped) and return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x_train, y_train = _examples(train, rng)
    x_test, y_test = _examples(test, rng)
    files = {
        "train-images-idx3-ubyte.gz": x_train,
        "train-labels-idx1-ubyte.gz": y_train,
        "t10k-images-idx3-ubyte.gz": x_test,
        "t10k-labels-idx1-ubyte.gz": y_test,
    }
    for name, array in files.items():
        (directory / name).write_bytes(gzip.compress(_idx(array), mtime=0))
    return directory
