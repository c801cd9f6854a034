"""The one error tree of mlyard.

Every error a user can cause is an ``MlyardError`` with a stable ``code`` and a message that says
what was wrong and what to do. Library errors are wrapped at the boundary (``raise ... from exc``).
The CLI maps the tree to exit codes in one place (``cli/errors.py``); a server maps it to HTTP.

    MlyardError
    ├── ConfigError              settings, profiles, unknown backend names
    │   └── MissingExtraError    an optional extra a feature needs is not installed
    ├── PipelineDefinitionError  pipeline files, decorators, DAG shape, parameters
    ├── ResourceError            requests no backend or machine can satisfy
    ├── StoreError               metadata database
    ├── ArtifactError            artifact store and materializers
    ├── TrackingError            MLflow
    ├── BackendError             submitting, polling, cancelling jobs
    ├── RunError                 a run ended badly or cannot be acted on
    │   └── StepFailedError      a step raised; carries its message verbatim
    └── NotFoundError            a run, step, model or artifact id that does not exist
"""

from __future__ import annotations


class MlyardError(Exception):
    """Root of every error mlyard raises on purpose."""

    code: str = "error"
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n{hint}")


class ConfigError(MlyardError):
    code = "config"
    exit_code = 2


class MissingExtraError(ConfigError):
    """A feature needs an optional extra that is not installed (raised by ``mlyard.extras``)."""

    code = "missing_extra"


class PipelineDefinitionError(MlyardError):
    code = "pipeline_definition"
    exit_code = 2


class ResourceError(MlyardError):
    code = "resources"
    exit_code = 2


class StoreError(MlyardError):
    code = "store"


class ArtifactError(MlyardError):
    code = "artifact"


class TrackingError(MlyardError):
    code = "tracking"


class BackendError(MlyardError):
    code = "backend"


class RunError(MlyardError):
    code = "run"


class StepFailedError(RunError):
    code = "step_failed"


class NotFoundError(MlyardError):
    code = "not_found"
    exit_code = 3
