"""A tiny registered model (scikit-learn digits) for the tests of services."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DigitsModel:
    tracking_uri: str
    rows: list[list[float]]
    #: What the model answers for ``rows``.
    predictions: list[int]


def register_digits(directory: Path, name: str = "Digits_Classifier") -> DigitsModel:
    """Fit a small classifier and register it as version 1 of ``name`` in a SQLite store."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{directory / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("services", artifact_location=str(directory / "art"))
    features, labels = load_digits(return_X_y=True)
    classifier = LogisticRegression(max_iter=100).fit(features[:400], labels[:400])
    with mlflow.start_run(experiment_id=experiment):
        mlflow.sklearn.log_model(
            classifier,
            name="model",
            registered_model_name=name,
            pip_requirements=[],  # saves MLflow a process that works them out
            signature=infer_signature(features, classifier.predict(features)),
        )
    rows = [[float(v) for v in row] for row in features[:4]]
    return DigitsModel(uri, rows, [int(p) for p in classifier.predict(features[:4])])
