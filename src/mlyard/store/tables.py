"""The metadata schema as SQLAlchemy Core tables. Changes go through an Alembic migration.

Core rather than the ORM: every ``mlyard`` command opens this store, and importing and
configuring the ORM cost ~70 ms of each command's start-up for no feature mlyard uses
(the orchestrator keeps its rows in memory and writes single-row updates).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()


def _when(name: str, *, index: bool = False) -> Column[object]:
    """A moment in time; mlyard writes UTC (SQLite gives it back naive)."""
    return Column(name, DateTime(timezone=True), nullable=True, index=index)


def _step_run_id(*, primary_key: bool = False, index: bool = False) -> Column[str]:
    """The step run a row belongs to; the row goes when the step run does."""
    return Column(
        "step_run_id",
        String(40),
        ForeignKey("step_runs.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
        index=index,
    )


def _artifact_digest() -> Column[str]:
    """The stored artifact a lineage row points at."""
    return Column("digest", String(80), ForeignKey("artifacts.digest"), nullable=False, index=True)


runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("pipeline_name", String(200), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("params", JSON, nullable=False),
    Column("graph", JSON, nullable=False),
    Column("code_digest", String(80), nullable=False),
    Column("code_module", String(200), nullable=False),
    Column("project_dir", Text, nullable=False),
    Column("backend", String(100), nullable=False),
    Column("use_cache", Boolean, nullable=False, default=True),
    Column("artifacts_url", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    _when("started_at"),
    _when("finished_at"),
    Column("orchestrator_pid", Integer),
    Column("orchestrator_host", String(255)),
    _when("heartbeat_at"),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("mlflow_run_id", String(64)),
)

step_runs = Table(
    "step_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("cache_key", String(80)),
    Column("cached_from_run_id", String(32)),
    Column("cached_from_step_run_id", String(40)),
    Column("failures", Integer, nullable=False, default=0),
    Column("infrastructure_failures", Integer, nullable=False, default=0),
    _when("next_attempt_at"),
    _when("started_at"),
    _when("finished_at"),
    Column("reason", Text),
    Column("error", Text),
    Column("usage", JSON),
    Column("mlflow_run_id", String(64)),
    Index("ix_step_runs_run_name", "run_id", "name", unique=True),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", String(48), primary_key=True),
    _step_run_id(index=True),
    Column("number", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("handle", JSON),
    _when("submitted_at"),
    _when("finished_at"),
    Column("exit_code", Integer),
    Column("reason", Text),
    Column("infrastructure_failure", Boolean, nullable=False, default=False),
    Column("usage", JSON),
    Column("submit_script", Text),
    Column("error", JSON),
    Column("tracked", Boolean, nullable=False, default=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("digest", String(80), primary_key=True),
    Column("materializer", String(40), nullable=False),
    Column("type_name", String(300), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("details", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: Lineage: which step run produced (or, for cached steps, reused) which artifact.
step_outputs = Table(
    "step_outputs",
    metadata,
    _step_run_id(primary_key=True),
    Column("name", String(100), primary_key=True),
    _artifact_digest(),
)

#: Lineage: which step runs consumed which artifact.
step_inputs = Table(
    "step_inputs",
    metadata,
    _step_run_id(primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("position", Integer, primary_key=True),
    _artifact_digest(),
)

cache_entries = Table(
    "cache_entries",
    metadata,
    Column("cache_key", String(80), primary_key=True),
    _step_run_id(),
    Column("run_id", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _step_run_id(index=True),
    Column("key", String(250), nullable=False),
    Column("value", Float, nullable=False),
    Column("step", Integer, nullable=False, default=0),
    Column("timestamp_ms", BigInteger, nullable=False),
)

#: Models a step logged and the registry version they became.
model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _step_run_id(index=True),
    Column("name", String(250), nullable=False),
    Column("flavor", String(40), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("version", String(40)),
)
