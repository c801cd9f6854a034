"""The tracker the settings ask for."""

from __future__ import annotations

from mlyard.settings import Settings
from mlyard.tracking.base import Tracker
from mlyard.tracking.mlflow_tracker import MlflowTracker
from mlyard.tracking.null import NullTracker


def create_tracker(settings: Settings) -> Tracker:
    uri = settings.tracking_uri
    if uri is None:
        return NullTracker()
    return MlflowTracker(uri, settings.tracking.experiment)
