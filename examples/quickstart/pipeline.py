"""Quickstart: a real ML pipeline on scikit-learn's digits, which ship inside scikit-learn.

    mlyard run examples/quickstart/pipeline.py
    mlyard run examples/quickstart/pipeline.py -p c=0.5 -p gate=0.9

load → split → train → evaluate (a quality gate: accuracy, precision and recall ≥ gate)
→ register the model in the MLflow registry, with its signature (a float32 [-1, 64] input),
inferred from a few test images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mlyard import Resources, log_metrics, log_model, log_params, pipeline, step

if TYPE_CHECKING:  # imported inside the steps: keeps loading this file fast
    from sklearn.linear_model import LogisticRegression


class QualityGateError(Exception):
    """The model is not good enough to register."""


@step
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """8x8 images of hand-written digits, scaled to [0, 1], and their labels."""
    from sklearn import datasets

    digits = datasets.load_digits()
    return digits.data.astype(np.float32) / 16.0, digits.target


@step(outputs=["x_train", "x_test", "y_train", "y_test"])
def split(
    features: np.ndarray, labels: np.ndarray, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    return x_train, x_test, y_train, y_test


@step(resources=Resources(cpus=1, memory="1GB"), retries=1)
def train(x_train: np.ndarray, y_train: np.ndarray, c: float) -> LogisticRegression:
    from sklearn.linear_model import LogisticRegression

    log_params({"model": "LogisticRegression", "C": c})
    model = LogisticRegression(C=c, max_iter=500)
    model.fit(x_train, y_train)
    return model


@step
def evaluate(
    model: LogisticRegression, x_test: np.ndarray, y_test: np.ndarray, gate: float
) -> dict[str, float]:
    """Score the model and stop the pipeline when any score is below the gate."""
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    predicted = model.predict(x_test)
    scores = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "precision": float(precision_score(y_test, predicted, average="macro")),
        "recall": float(recall_score(y_test, predicted, average="macro")),
    }
    log_metrics(scores)
    failing = {name: value for name, value in scores.items() if value < gate}
    if failing:
        listed = ", ".join(f"{name} {value:.3f}" for name, value in failing.items())
        raise QualityGateError(f"Quality gate failed: {listed} below {gate:.2f}.")
    return scores


@step
def register(
    model: LogisticRegression, scores: dict[str, float], x_test: np.ndarray, model_name: str
) -> None:
    """Log the model with MLflow's scikit-learn flavour and register a version; the example
    gives it its signature, so clients (and ``mlyard serve``) know the tensor it takes."""
    log_model(model, name=model_name, input_example=x_test[:5])


@pipeline
def quickstart(
    c: float = 1.0,
    test_size: float = 0.25,
    seed: int = 0,
    gate: float = 0.80,
    model_name: str = "digits-classifier",
) -> None:
    features, labels = load_digits()
    x_train, x_test, y_train, y_test = split(features, labels, test_size, seed)
    model = train(x_train, y_train, c)
    scores = evaluate(model, x_test, y_test, gate)
    register(model, scores, x_test, model_name)


if __name__ == "__main__":
    import mlyard

    result = mlyard.run(quickstart)
    print(result.state.value, result.metrics)
