"""Row records and the tables they are stored in stay in step."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from mlyard.models.tasks import ArtifactRef, LoggedModel, MetricRecord
from mlyard.store import tables
from mlyard.store.repository import MetadataStore, as_utc, utcnow
from mlyard.store.rows import (
    ArtifactRow,
    AttemptRow,
    CacheEntryRow,
    MetricRow,
    ModelVersionRow,
    Row,
    RunRow,
    StepRunRow,
)

ROW_TYPES: list[type[Row]] = [
    RunRow,
    StepRunRow,
    AttemptRow,
    ArtifactRow,
    CacheEntryRow,
    MetricRow,
    ModelVersionRow,
]


@pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda row_type: row_type.__name__)
def test_a_row_has_exactly_its_tables_columns(row_type: type[Row]) -> None:
    assert [field.name for field in fields(row_type)] == [c.key for c in row_type.table.columns]


@pytest.mark.parametrize("row_type", ROW_TYPES, ids=lambda row_type: row_type.__name__)
def test_a_rows_defaults_are_its_columns_defaults(row_type: type[Row]) -> None:
    for field in fields(row_type):
        column = row_type.table.c[field.name]
        if column.default is not None:  # the table's default, for writers other than mlyard
            assert field.default == column.default.arg, field.name  # type: ignore[attr-defined]
        elif field.default is not MISSING:
            assigned_by_database = column.primary_key and column.autoincrement is True
            assert field.default is None, field.name
            assert column.nullable or assigned_by_database, field.name


def test_every_table_has_a_row_type() -> None:
    lineage = {tables.step_outputs.name, tables.step_inputs.name}  # written as plain rows
    assert {row_type.table.name for row_type in ROW_TYPES} | lineage == set(tables.metadata.tables)


def test_a_stored_row_reads_back_equal_and_database_keys_are_assigned(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    now = utcnow()
    run = RunRow(
        id="abcdef123456",
        pipeline_name="p",
        state="PENDING",
        params={"lr": 0.1},
        graph={"steps": []},
        code_digest="sha256:" + "0" * 64,
        code_module="m",
        project_dir="/p",
        backend="local",
        artifacts_url="/a",
        created_at=now,
    )
    step = StepRunRow(id="abcdef123456.1", run_id=run.id, name="a", state="PENDING")
    store.add(run, step)
    stored = store.get_run(run.id)
    assert as_utc(stored.created_at) == now  # SQLite gives it back naive
    stored.created_at = now
    assert stored.values() == run.values()  # defaults and JSON survive
    assert stored.use_cache is True and stored.cancel_requested is False
    assert store.step_runs(run.id)[0].values() == step.values()

    ref = ArtifactRef(
        digest="sha256:" + "1" * 64, materializer="json", type_name="int", size_bytes=1
    )
    model = LoggedModel(name="clf", flavor="sklearn", artifact=ref, registered_version="3")
    with store.transaction() as connection:
        store.record_outputs(connection, step.id, {"model": ref}, {})
        metrics = [
            MetricRecord(key="acc", value=v, step=i, timestamp_ms=i)
            for i, v in [(0, 0.5), (1, 0.9)]
        ]
        store.record_metrics(connection, step.id, metrics, [model])
    assert [(m.key, m.value, m.step) for m in store.metrics([step.id])] == [
        ("acc", 0.5, 0),
        ("acc", 0.9, 1),
    ]
    assert all(m.id is not None for m in store.metrics([step.id]))
    (version,) = store.model_versions([step.id])
    assert (version.name, version.flavor, version.version, version.digest) == (
        "clf",
        "sklearn",
        "3",
        ref.digest,
    )
    extra = ModelVersionRow(step_run_id=step.id, name="other", flavor="sklearn", digest=ref.digest)
    store.add(extra)
    assert extra.id is not None and version.id is not None and extra.id > version.id
