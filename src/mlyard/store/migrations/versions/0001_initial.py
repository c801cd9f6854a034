"""The initial schema: runs, step runs, attempts, artifacts and lineage, cache, metrics, models.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("pipeline_name", sa.String(200), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("graph", sa.JSON, nullable=False),
        sa.Column("code_digest", sa.String(80), nullable=False),
        sa.Column("code_module", sa.String(200), nullable=False),
        sa.Column("project_dir", sa.Text, nullable=False),
        sa.Column("backend", sa.String(100), nullable=False),
        sa.Column("use_cache", sa.Boolean, nullable=False),
        sa.Column("artifacts_url", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("orchestrator_pid", sa.Integer),
        sa.Column("orchestrator_host", sa.String(255)),
        sa.Column("heartbeat_at", TS),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("mlflow_run_id", sa.String(64)),
    )
    op.create_table(
        "step_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cache_key", sa.String(80)),
        sa.Column("cached_from_run_id", sa.String(32)),
        sa.Column("cached_from_step_run_id", sa.String(40)),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("infrastructure_failures", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("reason", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("usage", sa.JSON),
        sa.Column("mlflow_run_id", sa.String(64)),
    )
    op.create_index("ix_step_runs_run_name", "step_runs", ["run_id", "name"], unique=True)
    op.create_table(
        "attempts",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column(
            "step_run_id",
            sa.String(40),
            sa.ForeignKey("step_runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("handle", sa.JSON),
        sa.Column("submitted_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("exit_code", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("infrastructure_failure", sa.Boolean, nullable=False),
        sa.Column("usage", sa.JSON),
        sa.Column("submit_script", sa.Text),
        sa.Column("error", sa.JSON),
        sa.Column("tracked", sa.Boolean, nullable=False),
    )
    op.create_table(
        "artifacts",
        sa.Column("digest", sa.String(80), primary_key=True),
        sa.Column("materializer", sa.String(40), nullable=False),
        sa.Column("type_name", sa.String(300), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "step_outputs",
        sa.Column(
            "step_run_id",
            sa.String(40),
            sa.ForeignKey("step_runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column(
            "digest", sa.String(80), sa.ForeignKey("artifacts.digest"), nullable=False, index=True
        ),
    )
    op.create_table(
        "step_inputs",
        sa.Column(
            "step_run_id",
            sa.String(40),
            sa.ForeignKey("step_runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column(
            "digest", sa.String(80), sa.ForeignKey("artifacts.digest"), nullable=False, index=True
        ),
    )
    op.create_table(
        "cache_entries",
        sa.Column("cache_key", sa.String(80), primary_key=True),
        sa.Column(
            "step_run_id",
            sa.String(40),
            sa.ForeignKey("step_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "step_run_id",
            sa.String(40),
            sa.ForeignKey("step_runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("key", sa.String(250), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "step_run_id",
            sa.String(40),
            sa.ForeignKey("step_runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("flavor", sa.String(40), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("version", sa.String(40)),
    )


def downgrade() -> None:
    for table in (
        "model_versions",
        "metrics",
        "cache_entries",
        "step_inputs",
        "step_outputs",
        "artifacts",
        "attempts",
        "step_runs",
        "runs",
    ):
        op.drop_table(table)
