"""The tracker the settings ask for."""

from __future__ import annotations

from mlyard.settings import Settings
from mlyard.tracking.base import Tracker
from mlyard.tracking.mlflow_tracker import MlflowTracker
from mlyard.tracking.null import NullTracker


def create_tracker(settings: Settings) -> Tracker:
    """``NullTracker`` when tracking is off, else an ``MlflowTracker`` on the configured
    tracking and registry URIs and experiment. Imports no MLflow: that happens on the
    tracker's first call."""
    uri = settings.tracking_uri
    if uri is None:
        return NullTracker()
    return MlflowTracker(uri, settings.tracking.experiment, settings.registry_uri)
