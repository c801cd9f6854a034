"""The runtime protocol: the task document a job reads and the result document it writes.

Both live in the artifact store (``tasks/<attempt_id>/task.json`` and ``result.json``), so the
compute side needs nothing but the artifact store: no database, no API server, no MLflow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlyard.models.resources import Resources

TASK_SCHEMA_VERSION = 1


class ArtifactRef(BaseModel):
    """A stored value: its content digest and how to turn the bytes back into an object."""

    model_config = ConfigDict(frozen=True)

    digest: str = Field(description="'sha256:<hex>' of the stored bytes; the storage key.")
    materializer: str = Field(description="Name of the materializer that wrote it.")
    type_name: str = Field(description="Qualified Python type of the value, for people.")
    size_bytes: int = Field(ge=0)
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Materializer details: shape, dtype, columns, …"
    )


class CodePackage(BaseModel):
    """The user's project, zipped and stored once per content digest."""

    model_config = ConfigDict(frozen=True)

    digest: str
    module: str = Field(description="Importable module name of the pipeline file in the package.")


class TrackingTarget(BaseModel):
    """Where a step may log live; when unreachable it buffers into its result instead."""

    model_config = ConfigDict(frozen=True)

    uri: str | None = None
    experiment_id: str | None = None
    run_id: str | None = Field(default=None, description="The step's nested MLflow run.")
    live: bool = Field(default=False, description="Try to log live from the compute side.")


class TaskSpec(BaseModel):
    """Everything ``python -m mlyard.runtime`` needs to run one attempt of one step."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = TASK_SCHEMA_VERSION
    run_id: str
    step_run_id: str
    attempt_id: str
    attempt: int = Field(ge=1)
    step_name: str
    function: str = Field(description="Attribute name of the step in the pipeline module.")
    code: CodePackage
    inputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    input_lists: dict[str, list[ArtifactRef]] = Field(
        default_factory=dict, description="Parameters that take a list of step outputs."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="JSON-able literal arguments.")
    output_names: list[str] = Field(default_factory=lambda: ["output"])
    resources: Resources = Field(default_factory=Resources)
    environment: dict[str, str] = Field(default_factory=dict)
    tracking: TrackingTarget = Field(default_factory=TrackingTarget)
    artifact_store: str = Field(description="URL of the artifact store the step reads and writes.")


class MetricRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    value: float
    step: int = 0
    timestamp_ms: int


class LoggedModel(BaseModel):
    """A model the step asked to log and register; the orchestrator does it with MLflow."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Registered model name.")
    flavor: str = Field(description="MLflow flavour: sklearn, pytorch, pyfunc, …")
    artifact: ArtifactRef
    input_example: ArtifactRef | None = Field(
        default=None,
        description="A few rows of the model's input, from which its MLflow signature is inferred.",
    )
    registered_version: str | None = None


class Usage(BaseModel):
    """What one attempt consumed."""

    model_config = ConfigDict(frozen=True)

    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0
    gpu_seconds: float = 0.0
    gpus: float = 0.0
    gpu_devices: list[str] = Field(default_factory=list)
    queue_seconds: float | None = None
    cost: float | None = None


class StepErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    traceback: str = ""


class TaskResult(BaseModel):
    """What one attempt produced. Written last, atomically: its presence means the attempt ended."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = TASK_SCHEMA_VERSION
    attempt_id: str
    status: Literal["succeeded", "failed"]
    outputs: dict[str, ArtifactRef] = Field(default_factory=dict)
    metrics: list[MetricRecord] = Field(default_factory=list)
    params: dict[str, str] = Field(default_factory=dict)
    models: list[LoggedModel] = Field(default_factory=list)
    live_metrics_sent: int = Field(
        default=0, ge=0, description="How many of ``metrics`` (a prefix) reached MLflow live."
    )
    mlflow_run_id: str | None = Field(
        default=None, description="The step's MLflow run, when the step created it (live)."
    )
    usage: Usage = Field(default_factory=Usage)
    error: StepErrorInfo | None = None
    started_at: datetime
    finished_at: datetime
    host: str = ""
