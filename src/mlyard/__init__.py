"""mlyard: pipelines written once in Python that run on a workstation, SLURM, Kubernetes or Ray.

The authoring API::

    from mlyard import Resources, log_metric, pipeline, step

    @step(resources=Resources(cpus=2, memory="4GB"), retries=1)
    def train(lr: float) -> float: ...

    @pipeline
    def my_pipeline(lr: float = 0.1) -> None:
        train(lr)

    run = mlyard.run(my_pipeline, lr=0.05)
"""

from __future__ import annotations

from mlyard.api import run
from mlyard.models.resources import Resources
from mlyard.orchestration.decorators import pipeline, step
from mlyard.tracking.context import log_metric, log_metrics, log_model, log_params

__version__ = "0.1.0"

__all__ = [
    "Resources",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_params",
    "pipeline",
    "run",
    "step",
]
