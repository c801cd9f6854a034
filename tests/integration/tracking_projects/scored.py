"""A pipeline whose steps log metrics (one with a history), for the MLflow pipeline-run tests."""

from __future__ import annotations

import time

from mlyard import log_metric, log_metrics, pipeline, step


@step
def train(epochs: int) -> float:
    loss = 1.0
    for epoch in range(epochs):
        loss = 1.0 / (epoch + 2)
        log_metric("loss", loss, step=epoch)
    return loss


@step
def evaluate(loss: float, seconds: float) -> float:
    time.sleep(seconds)  # a window in which a test can pause MLflow or the orchestrator
    accuracy = 1.0 - loss / 2
    log_metrics({"accuracy": accuracy, "recall": accuracy - 0.25})
    return accuracy


@step
def report(accuracy: float) -> str:
    return f"accuracy {accuracy:.3f}"


@pipeline
def scored(epochs: int = 3, seconds: float = 0.0) -> None:
    report(evaluate(train(epochs), seconds))
