"""Reading and writing run metadata. Each method is one short transaction.

The orchestrator calls these *before* acting (persist-before-act), so a killed process leaves a
state from which ``mlyard runs resume`` can continue without running anything twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, overload

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Select,
    Table,
    Update,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError

from mlyard.errors import NotFoundError, StoreError
from mlyard.models.tasks import ArtifactRef, LoggedModel, MetricRecord
from mlyard.store import tables
from mlyard.store.database import open_database
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

RowT = TypeVar("RowT", bound=Row)


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(moment: datetime) -> datetime: ...
@overload
def as_utc(moment: None) -> None: ...
def as_utc(moment: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime: SQLite gives naive ones back, and everything
    mlyard writes is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


class MetadataStore:
    """The metadata database behind runs, steps, attempts, artifacts, lineage and the cache."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine = open_database(url)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends, rolled back on error."""
        try:
            with self._engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise StoreError(f"The metadata database refused a write: {exc}") from exc

    def close(self) -> None:
        self._engine.dispose()

    # --- runs ----------------------------------------------------------------------------

    def add(self, *rows: Row) -> None:
        with self.transaction() as connection:
            for row in rows:
                self.insert_in(connection, row)

    def update(
        self,
        row_type: type[RowT],
        key: str,
        connection: Connection | None = None,
        **fields: Any,
    ) -> None:
        """Change an existing row, in ``connection``'s transaction or in one of its own."""
        if connection is None:
            with self.transaction() as own:
                self.update(row_type, key, own, **fields)
        elif not self.update_in(connection, row_type, key, **fields):
            raise StoreError(f"{row_type.table.name} {key!r} vanished from the database.")

    @staticmethod
    def update_in(connection: Connection, row_type: type[RowT], key: str, **fields: Any) -> bool:
        """One UPDATE by primary key, without reading the row first (the orchestrator holds
        it in memory already); False when there is no such row. The statement is built once
        per table and set of fields: the orchestrator issues several per step."""
        statement = _update_by_key(row_type.table, tuple(fields))
        values = {f"new_{name}": value for name, value in fields.items()}
        result = connection.execute(statement, {"row_key": key, **values})
        return result.rowcount == 1

    @staticmethod
    def insert_in(connection: Connection, row: Row) -> None:
        """INSERT ``row``; a key the database assigns is set on it afterwards."""
        values = row.values()
        result = connection.execute(insert(row.table), values)
        for column in row.table.primary_key.columns:
            if column.key not in values:
                assigned = result.inserted_primary_key
                assert assigned is not None, "a single-row INSERT reports its key"
                setattr(row, column.key, assigned[0])

    def get_run(self, run_id: str) -> RunRow:
        """The run with this id, or the one run whose id starts with it (4 characters or more)."""
        runs = tables.runs
        with self.transaction() as connection:
            found = connection.execute(_run_by_id(), {"run_id": run_id}).mappings().first()
            if found is not None:
                return RunRow.from_mapping(found)
            prefixed = select(runs).where(runs.c.id.startswith(run_id, autoescape=True)).limit(2)
            matches = connection.execute(prefixed).mappings().all()
        if len(matches) == 1 and len(run_id) >= 4:
            return RunRow.from_mapping(matches[0])
        raise NotFoundError(f"No run with id {run_id!r}.", hint="List runs with `mlyard runs ls`.")

    def list_runs(self, *, limit: int = 20, pipeline: str | None = None) -> list[RunRow]:
        runs = tables.runs
        query = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
        if pipeline:
            query = query.where(runs.c.pipeline_name == pipeline)
        return self._rows(RunRow, query)

    def step_runs(self, run_id: str) -> list[StepRunRow]:
        step_runs = tables.step_runs
        return self._rows(StepRunRow, select(step_runs).where(step_runs.c.run_id == run_id))

    def attempts(self, step_run_ids: Iterable[str]) -> list[AttemptRow]:
        attempts = tables.attempts
        query = select(attempts).where(attempts.c.step_run_id.in_(list(step_run_ids)))
        return self._rows(AttemptRow, query.order_by(attempts.c.number))

    def _rows(self, row_type: type[RowT], query: Select[Any]) -> list[RowT]:
        with self.transaction() as connection:
            return [row_type.from_mapping(found) for found in connection.execute(query).mappings()]

    # --- artifacts, lineage, cache ------------------------------------------------------

    def outputs(self, step_run_ids: Iterable[str]) -> dict[str, dict[str, ArtifactRef]]:
        """Outputs by step run id and output name."""
        ids = list(step_run_ids)
        result: dict[str, dict[str, ArtifactRef]] = {i: {} for i in ids}
        produced, artifacts = tables.step_outputs, tables.artifacts
        query = (
            select(produced.c.step_run_id, produced.c.name, artifacts)
            .join(artifacts, artifacts.c.digest == produced.c.digest)
            .where(produced.c.step_run_id.in_(ids))
        )
        with self.transaction() as connection:
            for found in connection.execute(query).mappings():
                artifact = ArtifactRow.from_mapping(
                    {column.key: found[column] for column in artifacts.columns}
                )
                result[found["step_run_id"]][found["name"]] = _artifact_ref(artifact)
        return result

    def record_outputs(
        self,
        connection: Connection,
        step_run_id: str,
        outputs: Mapping[str, ArtifactRef],
        inputs: Mapping[str, Sequence[ArtifactRef]],
    ) -> None:
        """Lineage rows for one step run, inside the caller's transaction (Core statements:
        one insert per table). Recording the same step run again keeps its first lineage."""
        every = [*outputs.values(), *(ref for refs in inputs.values() for ref in refs)]
        now = utcnow()
        artifacts = {
            ref.digest: {
                "digest": ref.digest,
                "materializer": ref.materializer,
                "type_name": ref.type_name,
                "size_bytes": ref.size_bytes,
                "details": ref.metadata,
                "created_at": now,
            }
            for ref in every
        }
        if artifacts:
            # Another run may store the same content at the same moment: both keep one row.
            _insert_missing(connection, tables.artifacts, list(artifacts.values()))
        produced = [
            {"step_run_id": step_run_id, "name": name, "digest": ref.digest}
            for name, ref in outputs.items()
        ]
        consumed = [
            {"step_run_id": step_run_id, "name": name, "position": position, "digest": ref.digest}
            for name, refs_of_input in inputs.items()
            for position, ref in enumerate(refs_of_input)
        ]
        for table, rows in ((tables.step_outputs, produced), (tables.step_inputs, consumed)):
            if not rows:
                continue
            statement = _insert_or_skip(connection.dialect.name, table)
            if statement is None:  # no ON CONFLICT: clear what an earlier recording left
                connection.execute(delete(table).where(table.c.step_run_id == step_run_id))
                statement = insert(table)
            connection.execute(statement, rows)

    def remember_cache_entry(
        self, connection: Connection, cache_key: str, step_run_id: str, run_id: str
    ) -> None:
        """Point ``cache_key`` at this step run (the newest result wins)."""
        fields = {"step_run_id": step_run_id, "run_id": run_id}
        row = {"cache_key": cache_key, "created_at": utcnow(), **fields}
        upsert = _upsert_cache_entry(connection.dialect.name)
        if upsert is not None:  # one statement, also when a concurrent run inserts the key
            connection.execute(upsert, row)
        elif not self.update_in(connection, CacheEntryRow, cache_key, **fields):
            # A concurrent run may have just cached the same key: its entry is as good.
            _insert_missing(connection, tables.cache_entries, [row])

    def record_metrics(
        self,
        connection: Connection,
        step_run_id: str,
        metrics: Sequence[MetricRecord],
        models: Sequence[LoggedModel],
    ) -> None:
        """The step's metrics and logged models, inside the caller's transaction."""
        metric_rows = [
            MetricRow(
                step_run_id=step_run_id,
                key=m.key,
                value=m.value,
                step=m.step,
                timestamp_ms=m.timestamp_ms,
            ).values()
            for m in metrics
        ]
        model_rows = [
            ModelVersionRow(
                step_run_id=step_run_id,
                name=m.name,
                flavor=m.flavor,
                digest=m.artifact.digest,
                version=m.registered_version,
            ).values()
            for m in models
        ]
        for table, rows in ((tables.metrics, metric_rows), (tables.model_versions, model_rows)):
            if rows:
                connection.execute(insert(table), rows)

    def lookup_cache(self, cache_key: str) -> tuple[StepRunRow, dict[str, ArtifactRef]] | None:
        """The step run a cache key points at and its outputs, if it still exists."""
        with self.transaction() as connection:
            found = connection.execute(_cache_entry_lookup(), {"key": cache_key}).mappings().first()
        if found is None:
            return None
        source = StepRunRow.from_mapping(found)
        return source, self.outputs([source.id])[source.id]

    def forget_cache_entry(self, cache_key: str) -> None:
        entries = tables.cache_entries
        with self.transaction() as connection:
            connection.execute(delete(entries).where(entries.c.cache_key == cache_key))

    def metrics(self, step_run_ids: Iterable[str]) -> list[MetricRow]:
        metrics = tables.metrics
        query = select(metrics).where(metrics.c.step_run_id.in_(list(step_run_ids)))
        return self._rows(MetricRow, query.order_by(metrics.c.id))

    def model_versions(self, step_run_ids: Iterable[str]) -> list[ModelVersionRow]:
        versions = tables.model_versions
        query = select(versions).where(versions.c.step_run_id.in_(list(step_run_ids)))
        return self._rows(ModelVersionRow, query.order_by(versions.c.id))


def _insert_missing(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT rows, skipping those whose primary key exists (also when another transaction
    inserts it concurrently): ON CONFLICT DO NOTHING on SQLite and PostgreSQL."""
    statement = _insert_or_skip(connection.dialect.name, table)
    if statement is not None:
        connection.execute(statement, rows)
    else:  # another database: skip the keys present now
        (key_column,) = table.primary_key.columns
        keys = [row[key_column.key] for row in rows]
        present = set(connection.scalars(select(key_column).where(key_column.in_(keys))))
        missing = [row for row in rows if row[key_column.key] not in present]
        if missing:
            connection.execute(insert(table), missing)


def _dialect_insert(dialect: str) -> Callable[[Table], Any] | None:
    """The INSERT construct with ON CONFLICT clauses of ``dialect``, if it has one."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    return None


@cache
def _insert_or_skip(dialect: str, table: Table) -> Executable | None:
    """INSERT ... ON CONFLICT DO NOTHING for ``table``; None where the dialect has none."""
    dialect_insert = _dialect_insert(dialect)
    if dialect_insert is None:
        return None
    statement: Executable = dialect_insert(table).on_conflict_do_nothing()
    return statement


@cache
def _upsert_cache_entry(dialect: str) -> Executable | None:
    """INSERT a cache entry or repoint the existing one; None where the dialect cannot."""
    dialect_insert = _dialect_insert(dialect)
    if dialect_insert is None:
        return None
    statement = dialect_insert(tables.cache_entries)
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["cache_key"],
        set_={"step_run_id": statement.excluded.step_run_id, "run_id": statement.excluded.run_id},
    )
    return upsert


@cache
def _cache_entry_lookup() -> Select[Any]:
    """The step run a cache key points at: one SELECT (most lookups miss)."""
    entries, step_runs = tables.cache_entries, tables.step_runs
    return (
        select(step_runs)
        .join(entries, entries.c.step_run_id == step_runs.c.id)
        .where(entries.c.cache_key == bindparam("key"))
    )


@cache
def _run_by_id() -> Select[Any]:
    return select(tables.runs).where(tables.runs.c.id == bindparam("run_id"))


@cache
def _update_by_key(table: Table, names: tuple[str, ...]) -> Update:
    (key_column,) = table.primary_key.columns
    return (
        update(table)
        .where(key_column == bindparam("row_key"))
        .values({name: bindparam(f"new_{name}", type_=table.c[name].type) for name in names})
    )


def _artifact_ref(row: ArtifactRow) -> ArtifactRef:
    return ArtifactRef(
        digest=row.digest,
        materializer=row.materializer,
        type_name=row.type_name,
        size_bytes=row.size_bytes,
        metadata=row.details,
    )


__all__ = [
    "ArtifactRow",
    "AttemptRow",
    "CacheEntryRow",
    "MetadataStore",
    "MetricRow",
    "ModelVersionRow",
    "RunRow",
    "StepRunRow",
    "utcnow",
]
