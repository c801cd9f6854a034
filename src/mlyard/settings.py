"""One settings tree, loaded once at the entry point and passed down.

Sources, strongest first: ``MLYARD_*`` environment variables (nested with ``__``, e.g.
``MLYARD_STORAGE__ARTIFACTS``), ``mlyard.toml`` in the project directory, then
``~/.config/mlyard/config.toml``. Where none of them sets the tracking URI, MLflow's own
``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI`` are used, as MLflow users expect; both are
read here, with the rest. Secrets never live here: S3 keys come from the standard AWS
variables, tokens from the environment.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mlyard.errors import ConfigError

PROJECT_CONFIG_NAME = "mlyard.toml"
LOCAL_BACKEND_NAME = "local"
#: A backend's own model of the fields of its profiles (``SlurmProfile``, ...).
ProfileFields = TypeVar("ProfileFields", bound=BaseModel)


def default_home() -> Path:
    return Path.home() / ".mlyard"


def user_config_path() -> Path:
    return Path.home() / ".config" / "mlyard" / "config.toml"


class StorageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifacts: str | None = Field(
        default=None,
        description="Artifact store URL: a directory, file:// or s3://bucket/prefix. "
        "Default: MLYARD_HOME/artifacts.",
    )
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint for S3-compatible stores (MinIO, SeaweedFS, Ceph)."
    )
    region: str | None = None


class DatabaseSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata DB. Default: SQLite under MLYARD_HOME. "
        "PostgreSQL: postgresql://user@host/db (password via PGPASSWORD or ~/.pgpass).",
    )


class TrackingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(
        default=None,
        description="MLflow tracking URI. Default: MLFLOW_TRACKING_URI, else SQLite under "
        "MLYARD_HOME. 'none' disables.",
    )
    registry_uri: str | None = Field(
        default=None,
        description="MLflow model registry URI. Default: MLFLOW_REGISTRY_URI when tracking.uri "
        "is not set either, else the tracking URI.",
    )
    experiment: str = Field(default="mlyard", description="MLflow experiment for runs.")
    live: bool = Field(
        default=False,
        description="Let steps log to an http(s) tracking server live; otherwise they buffer "
        "and the orchestrator replays.",
    )


class MlflowEnvironment(BaseModel):
    """MLflow's own variables, used only where mlyard's tracking settings are not set."""

    model_config = ConfigDict(frozen=True)

    tracking_uri: str | None = None
    registry_uri: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> MlflowEnvironment:
        """``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI``; an empty value is unset."""
        environ = os.environ if environ is None else environ
        return cls(
            tracking_uri=environ.get("MLFLOW_TRACKING_URI") or None,
            registry_uri=environ.get("MLFLOW_REGISTRY_URI") or None,
        )


class CostRates(BaseModel):
    """Billing rates, as HPC centres and clouds charge them (any currency or billing unit)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_hour: float = 0.0
    gpu_hour: float = 0.0
    memory_gb_hour: float = 0.0
    currency: str = "units"


class BackendProfile(BaseModel):
    """A named backend profile; each backend validates its own extra fields."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="local, slurm, kubernetes or ray.")
    costs: CostRates = Field(default_factory=CostRates)

    # builtins.type: the field ``type`` hides the builtin inside the class.
    def fields_as(self, model: builtins.type[ProfileFields], name: str) -> ProfileFields:
        """The profile's own fields (all but ``type`` and ``costs``) validated by the backend's
        ``model``; ``ConfigError`` naming each field that is wrong, and the known ones."""
        try:
            return model.model_validate(self.model_extra or {})
        except ValidationError as exc:
            raise ConfigError(
                f"Backend {name!r} ({self.type}) is not configured right: "
                f"{_describe_validation_error(exc, whole='profile')}.",
                hint=f"Fix [backends.{name}] in mlyard.toml. Known fields: "
                f"{', '.join(model.model_fields)}, costs.",
            ) from exc


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MLYARD_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(default_factory=default_home, description="Where embedded state lives.")
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    backends: dict[str, BackendProfile] = Field(default_factory=dict)
    default_backend: str = LOCAL_BACKEND_NAME

    # Set by load_settings(): the TOML files to read, strongest first.
    _toml_files: tuple[Path, ...] = ()
    # Read with the MLYARD_* variables, when the settings are built; never from a TOML file.
    _mlflow: MlflowEnvironment = PrivateAttr(default_factory=MlflowEnvironment.from_environment)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        tomls = tuple(
            TomlConfigSettingsSource(settings_cls, toml_file=path) for path in _TOML_FILES
        )
        return (init_settings, env_settings, *tomls)

    @property
    def artifacts_url(self) -> str:
        return self.storage.artifacts or str(self.home / "artifacts")

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.home / 'mlyard.db'}"

    @property
    def tracking_uri(self) -> str | None:
        """Where runs are tracked: ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else a
        SQLite store under ``home``; ``None`` when tracking is off (``tracking.uri = 'none'``)."""
        uri = self.tracking.uri or self._mlflow.tracking_uri
        if uri is None:
            return f"sqlite:///{self.home / 'mlflow.db'}"
        return None if uri.lower() == "none" else uri

    @property
    def registry_uri(self) -> str | None:
        """Where models are registered: ``tracking.registry_uri``; else, when mlyard's
        ``tracking.uri`` is not set either, ``MLFLOW_REGISTRY_URI``; else the tracking URI.
        ``None`` when tracking is off."""
        tracking = self.tracking_uri
        if tracking is None:
            return None
        if self.tracking.registry_uri:
            return self.tracking.registry_uri
        if self.tracking.uri is None and self._mlflow.registry_uri:
            return self._mlflow.registry_uri
        return tracking

    def backend_profile(self, name: str) -> BackendProfile:
        """The profile called ``name``; ``local`` exists even when not configured."""
        if name in self.backends:
            return self.backends[name]
        if name == LOCAL_BACKEND_NAME:
            return BackendProfile(type="local")
        known = ", ".join(sorted({LOCAL_BACKEND_NAME, *self.backends})) or LOCAL_BACKEND_NAME
        raise ConfigError(
            f"Unknown backend {name!r}.",
            hint=f"Configured backends: {known}. Add a [backends.{name}] table to "
            f"{PROJECT_CONFIG_NAME} or pass one of those to --backend.",
        )


# Module-level because pydantic-settings calls settings_customise_sources as a classmethod
# without instance state; load_settings() sets it right before constructing Settings.
_TOML_FILES: list[Path] = []


def load_settings(project_dir: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once, at the entry point; ``overrides`` beat every other source."""
    project_dir = project_dir or Path.cwd()
    # The pipeline's project first, then the directory the command runs in, then the user's.
    candidates = [project_dir / PROJECT_CONFIG_NAME, Path.cwd() / PROJECT_CONFIG_NAME]
    candidates.append(user_config_path())
    unique = list(dict.fromkeys(p.resolve() for p in candidates))
    _TOML_FILES[:] = [p for p in unique if p.is_file()]
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(
            f"The configuration is not valid: {_describe_validation_error(exc)}",
            hint="Fix the value in mlyard.toml or the MLYARD_* environment variable named.",
        ) from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Could not read the configuration: {exc}") from exc
    finally:
        _TOML_FILES.clear()
    settings.home = settings.home.expanduser()
    return settings


def _describe_validation_error(exc: ValidationError, whole: str = "") -> str:
    """Each error as ``location: message``; ``whole`` names the location of an error about
    the whole model (a model validator's)."""
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or whole
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)
