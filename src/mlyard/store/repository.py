"""Reading and writing run metadata. Each method is one short transaction.

The orchestrator calls these *before* acting (persist-before-act), so a killed process leaves a
state from which ``mlyard runs resume`` can continue without running anything twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar, cast, overload

from sqlalchemy import (
    Connection,
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
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mlyard.errors import NotFoundError, StoreError
from mlyard.models.tasks import ArtifactRef, LoggedModel, MetricRecord
from mlyard.store.database import open_database
from mlyard.store.tables import (
    ArtifactRow,
    AttemptRow,
    Base,
    CacheEntryRow,
    MetricRow,
    ModelVersionRow,
    RunRow,
    StepInputRow,
    StepOutputRow,
    StepRunRow,
)

RowT = TypeVar("RowT", bound=Base)


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
        self._sessions: sessionmaker[Session] = open_database(url)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise StoreError(f"The metadata database refused a write: {exc}") from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def close(self) -> None:
        bind = self._sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()

    # --- runs ----------------------------------------------------------------------------

    def add(self, *rows: Base) -> None:
        with self.transaction() as session:
            session.add_all(rows)

    def update(
        self, row_type: type[RowT], key: str, session: Session | None = None, **fields: Any
    ) -> None:
        """Change an existing row, in ``session`` or in a transaction of its own."""
        if session is None:
            with self.transaction() as own:
                self.update(row_type, key, own, **fields)
        elif not self.update_in(session, row_type, key, **fields):
            raise StoreError(f"{row_type.__tablename__} {key!r} vanished from the database.")

    @staticmethod
    def update_in(session: Session, row_type: type[RowT], key: str, **fields: Any) -> bool:
        """One UPDATE by primary key, without loading the row first (the orchestrator holds
        it in memory already); False when there is no such row.

        A Core statement, built once per table and set of fields: the orchestrator issues
        several per step, and the ORM's bulk-update path costs ~1 ms each."""
        statement = _update_by_key(_table(row_type), tuple(fields))
        values = {f"new_{name}": value for name, value in fields.items()}
        result = session.connection().execute(statement, {"row_key": key, **values})
        return result.rowcount == 1

    @staticmethod
    def insert_in(session: Session, row: Base) -> None:
        """INSERT ``row`` (a new mapped object) as a Core statement; the object stays in the
        caller's hands with its column defaults filled in, as a flush would have done."""
        table = _table(type(row))
        values = dict(sa_inspect(row).dict)
        for column in table.columns:
            default = column.default
            if column.key not in values and default is not None and default.is_scalar:
                values[column.key] = default.arg  # type: ignore[attr-defined]
                setattr(row, column.key, default.arg)  # type: ignore[attr-defined]
        session.connection().execute(insert(table), [values])

    def get_run(self, run_id: str) -> RunRow:
        with self.transaction() as session:
            row = session.get(RunRow, run_id)
            if row is None:
                row = self._run_by_prefix(session, run_id)
            return row

    def _run_by_prefix(self, session: Session, prefix: str) -> RunRow:
        matches = session.scalars(select(RunRow).where(RunRow.id.startswith(prefix)).limit(2)).all()
        if len(matches) == 1 and len(prefix) >= 4:
            return matches[0]
        raise NotFoundError(f"No run with id {prefix!r}.", hint="List runs with `mlyard runs ls`.")

    def list_runs(self, *, limit: int = 20, pipeline: str | None = None) -> list[RunRow]:
        with self.transaction() as session:
            query = select(RunRow).order_by(RunRow.created_at.desc()).limit(limit)
            if pipeline:
                query = query.where(RunRow.pipeline_name == pipeline)
            return list(session.scalars(query))

    def step_runs(self, run_id: str) -> list[StepRunRow]:
        with self.transaction() as session:
            return list(session.scalars(select(StepRunRow).where(StepRunRow.run_id == run_id)))

    def attempts(self, step_run_ids: Iterable[str]) -> list[AttemptRow]:
        ids = list(step_run_ids)
        with self.transaction() as session:
            query = select(AttemptRow).where(AttemptRow.step_run_id.in_(ids))
            return list(session.scalars(query.order_by(AttemptRow.number)))

    # --- artifacts, lineage, cache ------------------------------------------------------

    def outputs(self, step_run_ids: Iterable[str]) -> dict[str, dict[str, ArtifactRef]]:
        """Outputs by step run id and output name."""
        ids = list(step_run_ids)
        result: dict[str, dict[str, ArtifactRef]] = {i: {} for i in ids}
        with self.transaction() as session:
            rows = session.execute(
                select(StepOutputRow, ArtifactRow)
                .join(ArtifactRow, ArtifactRow.digest == StepOutputRow.digest)
                .where(StepOutputRow.step_run_id.in_(ids))
            )
            for output, artifact in rows:
                result[output.step_run_id][output.name] = _artifact_ref(artifact)
        return result

    def record_outputs(
        self,
        session: Session,
        step_run_id: str,
        outputs: Mapping[str, ArtifactRef],
        inputs: Mapping[str, Sequence[ArtifactRef]],
    ) -> None:
        """Lineage rows for one step run, inside the caller's transaction (Core statements:
        one insert per table). Recording the same step run again keeps its first lineage."""
        connection = session.connection()
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
            _insert_missing(connection, _table(ArtifactRow), list(artifacts.values()))
        produced = [
            {"step_run_id": step_run_id, "name": name, "digest": ref.digest}
            for name, ref in outputs.items()
        ]
        consumed = [
            {"step_run_id": step_run_id, "name": name, "position": position, "digest": ref.digest}
            for name, refs_of_input in inputs.items()
            for position, ref in enumerate(refs_of_input)
        ]
        for table, rows in ((_table(StepOutputRow), produced), (_table(StepInputRow), consumed)):
            if not rows:
                continue
            statement = _insert_or_skip(connection.dialect.name, table)
            if statement is None:  # no ON CONFLICT: clear what an earlier recording left
                connection.execute(delete(table).where(table.c.step_run_id == step_run_id))
                statement = insert(table)
            connection.execute(statement, rows)

    def remember_cache_entry(
        self, session: Session, cache_key: str, step_run_id: str, run_id: str
    ) -> None:
        """Point ``cache_key`` at this step run (the newest result wins)."""
        fields = {"step_run_id": step_run_id, "run_id": run_id}
        row = {"cache_key": cache_key, "created_at": utcnow(), **fields}
        connection = session.connection()
        upsert = _upsert_cache_entry(connection.dialect.name)
        if upsert is not None:  # one statement, also when a concurrent run inserts the key
            connection.execute(upsert, row)
        elif not self.update_in(session, CacheEntryRow, cache_key, **fields):
            # A concurrent run may have just cached the same key: its entry is as good.
            _insert_missing(connection, _table(CacheEntryRow), [row])

    def record_metrics(
        self,
        session: Session,
        step_run_id: str,
        metrics: Sequence[MetricRecord],
        models: Sequence[LoggedModel],
    ) -> None:
        session.add_all(
            MetricRow(
                step_run_id=step_run_id,
                key=m.key,
                value=m.value,
                step=m.step,
                timestamp_ms=m.timestamp_ms,
            )
            for m in metrics
        )
        session.add_all(
            ModelVersionRow(
                step_run_id=step_run_id,
                name=m.name,
                flavor=m.flavor,
                digest=m.artifact.digest,
                version=m.registered_version,
            )
            for m in models
        )

    def lookup_cache(self, cache_key: str) -> tuple[StepRunRow, dict[str, ArtifactRef]] | None:
        """The step run a cache key points at and its outputs, if it still exists."""
        with self.transaction() as session:
            # A Core SELECT first: most lookups miss, and the ORM query costs ~1 ms per step.
            step_run_id = session.connection().scalar(_cache_entry_lookup(), {"key": cache_key})
            source = None if step_run_id is None else session.get(StepRunRow, step_run_id)
            if source is None:
                return None
        return source, self.outputs([source.id])[source.id]

    def forget_cache_entry(self, cache_key: str) -> None:
        with self.transaction() as session:
            session.execute(delete(CacheEntryRow).where(CacheEntryRow.cache_key == cache_key))

    def metrics(self, step_run_ids: Iterable[str]) -> list[MetricRow]:
        ids = list(step_run_ids)
        with self.transaction() as session:
            query = select(MetricRow).where(MetricRow.step_run_id.in_(ids))
            return list(session.scalars(query.order_by(MetricRow.id)))

    def model_versions(self, step_run_ids: Iterable[str]) -> list[ModelVersionRow]:
        ids = list(step_run_ids)
        with self.transaction() as session:
            query = select(ModelVersionRow).where(ModelVersionRow.step_run_id.in_(ids))
            return list(session.scalars(query))


def _table(row_type: type[Base]) -> Table:
    return cast(Table, row_type.__table__)


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
    statement = dialect_insert(_table(CacheEntryRow))
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["cache_key"],
        set_={"step_run_id": statement.excluded.step_run_id, "run_id": statement.excluded.run_id},
    )
    return upsert


@cache
def _cache_entry_lookup() -> Select[str]:
    return select(CacheEntryRow.step_run_id).where(CacheEntryRow.cache_key == bindparam("key"))


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
