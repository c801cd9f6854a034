"""The model registry as mlyard shows it: registered models, their versions and aliases.

These are read from MLflow's registry by ``mlyard.services.models`` and are what
``mlyard models ls|show --json`` prints and what model serving resolves references to.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ModelSummary(BaseModel):
    """One registered model, as ``mlyard models ls`` lists it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Registered model name.")
    latest_version: str | None = Field(
        default=None, description="Highest version number; None when it has no versions."
    )
    aliases: dict[str, str] = Field(
        default_factory=dict, description="Alias -> version, e.g. {'champion': '3'}."
    )
    updated_at: datetime | None = Field(default=None, description="Last change (UTC).")
    description: str | None = None


class ModelVersionInfo(BaseModel):
    """One version of a registered model."""

    model_config = ConfigDict(frozen=True)

    version: str
    status: str = Field(description="MLflow status: READY, PENDING_REGISTRATION, FAILED_...")
    run_id: str | None = Field(default=None, description="The MLflow run that logged it.")
    mlyard_run_id: str | None = Field(default=None, description="The mlyard run it came from.")
    step: str | None = Field(default=None, description="The step that logged it.")
    flavor: str | None = Field(
        default=None, description="Native MLflow flavour (sklearn, pytorch, python_function …)."
    )
    source: str = Field(description="Where MLflow stores the model's files.")
    aliases: list[str] = Field(default_factory=list)
    created_at: datetime | None = Field(default=None, description="Registration time (UTC).")


class ModelDetails(BaseModel):
    """A registered model with all its versions, newest first."""

    model_config = ConfigDict(frozen=True)

    name: str
    versions: list[ModelVersionInfo] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict, description="Alias -> version.")


class ResolvedModel(BaseModel):
    """A model reference resolved to something MLflow can load."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Registered model name (for runs:/ URIs, the artifact name).")
    version: str = Field(description="Registered version (for runs:/ URIs, the run id).")
    uri: str = Field(description="models:/NAME/VERSION, or the runs:/RUN_ID/PATH given.")
    flavor: str = Field(description="Native MLflow flavour, or python_function.")
