"""Rows of the metadata tables as plain records: what the store reads and the orchestrator keeps
in memory. Each names its table; a test keeps the fields and the table's columns identical."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, ClassVar, Self

from sqlalchemy import Table

from mlyard.store import tables


# eq=False: a row is one record in memory, compared by identity as the orchestrator expects.
@dataclass(kw_only=True, slots=True, eq=False)
class Row:
    table: ClassVar[Table]

    @classmethod
    def from_mapping(cls, values: Mapping[Any, Any]) -> Self:
        """A row from a result row's mapping (column name to value)."""
        return cls(**values)

    def values(self) -> dict[str, Any]:
        """Column name to value, for an INSERT; a key the database assigns is left out while
        it is None."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        for column in self.table.primary_key.columns:
            if column.autoincrement is True and values.get(column.key) is None:
                del values[column.key]
        return values

    @property
    def primary_key(self) -> Any:
        """The primary key (single-column tables only)."""
        (column,) = self.table.primary_key.columns
        return getattr(self, column.key)


@dataclass(kw_only=True, slots=True, eq=False)
class RunRow(Row):
    table: ClassVar[Table] = tables.runs

    id: str
    pipeline_name: str
    state: str
    params: dict[str, Any]
    graph: dict[str, Any]
    code_digest: str
    code_module: str
    project_dir: str
    backend: str
    use_cache: bool = True
    artifacts_url: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    orchestrator_pid: int | None = None
    orchestrator_host: str | None = None
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    error: str | None = None
    mlflow_run_id: str | None = None


@dataclass(kw_only=True, slots=True, eq=False)
class StepRunRow(Row):
    table: ClassVar[Table] = tables.step_runs

    id: str
    run_id: str
    name: str
    state: str
    cache_key: str | None = None
    cached_from_run_id: str | None = None
    cached_from_step_run_id: str | None = None
    failures: int = 0
    infrastructure_failures: int = 0
    next_attempt_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    reason: str | None = None
    error: str | None = None
    usage: dict[str, Any] | None = None
    mlflow_run_id: str | None = None


@dataclass(kw_only=True, slots=True, eq=False)
class AttemptRow(Row):
    table: ClassVar[Table] = tables.attempts

    id: str
    step_run_id: str
    number: int
    state: str
    handle: dict[str, Any] | None = None
    submitted_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    infrastructure_failure: bool = False
    usage: dict[str, Any] | None = None
    submit_script: str | None = None
    error: dict[str, Any] | None = None
    tracked: bool = False


@dataclass(kw_only=True, slots=True, eq=False)
class ArtifactRow(Row):
    table: ClassVar[Table] = tables.artifacts

    digest: str
    materializer: str
    type_name: str
    size_bytes: int
    details: dict[str, Any]
    created_at: datetime


@dataclass(kw_only=True, slots=True, eq=False)
class CacheEntryRow(Row):
    table: ClassVar[Table] = tables.cache_entries

    cache_key: str
    step_run_id: str
    run_id: str
    created_at: datetime


@dataclass(kw_only=True, slots=True, eq=False)
class MetricRow(Row):
    table: ClassVar[Table] = tables.metrics

    #: Assigned by the database on insert.
    id: int | None = None
    step_run_id: str
    key: str
    value: float
    step: int = 0
    timestamp_ms: int


@dataclass(kw_only=True, slots=True, eq=False)
class ModelVersionRow(Row):
    table: ClassVar[Table] = tables.model_versions

    #: Assigned by the database on insert.
    id: int | None = None
    step_run_id: str
    name: str
    flavor: str
    digest: str
    version: str | None = None
