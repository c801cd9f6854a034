"""Opening the metadata database: the engine and migrations to the current schema.

SQLite (the embedded default) runs in WAL mode with a busy timeout so the CLI can read while an
orchestrator writes. PostgreSQL URLs (``postgresql://``) use psycopg 3.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from mlyard.errors import StoreError
from mlyard.extras import require_extra

#: The newest migration; the database is upgraded when it is behind.
HEAD_REVISION = "0001"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _normalise_url(url: str) -> str:
    # SQLAlchemy's plain postgresql:// means psycopg2; mlyard ships psycopg 3.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_database_engine(url: str) -> Engine:
    """An engine for ``url``, with SQLite tuned for one writer and concurrent readers."""
    url = _normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(
            f"The database URL {url!r} is not valid.",
            hint="Use sqlite:///path/to/mlyard.db or postgresql://user@host:5432/db "
            "(in database.url of mlyard.toml or MLYARD_DATABASE__URL).",
        ) from exc
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    if parsed.get_backend_name() == "postgresql":
        require_extra("postgres", needed_by="A PostgreSQL metadata database")
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(
            f"Cannot open the database {parsed.render_as_string(hide_password=True)}: {exc}",
            hint="Use a sqlite:/// or postgresql:// URL (in database.url of mlyard.toml or "
            "MLYARD_DATABASE__URL).",
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to ``HEAD_REVISION`` with Alembic (fast no-op when it is current).

    Several processes may open a new database at once (an orchestrator and a `runs ls`): the
    upgrade runs under a lock and re-checks the revision inside it.
    """
    try:
        with engine.connect() as connection:
            if _current_revision(connection) == HEAD_REVISION:
                return
        with _migration_lock(engine), engine.connect() as connection:
            current = _current_revision(connection)
            if current == HEAD_REVISION:
                return
            if current is None and not inspect(connection).get_table_names():
                _create_current_schema(connection)
            else:
                _migrate(connection)
            connection.commit()
    except OperationalError as exc:
        raise StoreError(
            f"Cannot reach the metadata database "
            f"{engine.url.render_as_string(hide_password=True)}: {exc.orig}",
            hint="Check database.url in mlyard.toml or MLYARD_DATABASE__URL, and that the "
            "server is running and accepts this user.",
        ) from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"Migrating the metadata database failed: {exc}") from exc


def _create_current_schema(connection: Connection) -> None:
    """A new, empty database: create the current schema from the table definitions and record
    it as ``HEAD_REVISION``, as Alembic's ``stamp`` would (Alembic's recipe for new databases).
    Saves importing Alembic (~0.1 s) on every first run; a test keeps both paths identical."""
    from mlyard.store.tables import metadata

    metadata.create_all(connection)
    version = MetaData()
    table = Table(
        "alembic_version",
        version,
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
    )
    version.create_all(connection)
    connection.execute(table.insert().values(version_num=HEAD_REVISION))


def _migrate(connection: Connection) -> None:
    """Upgrade an existing database to ``HEAD_REVISION`` with Alembic."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


#: Key of the PostgreSQL advisory lock held while migrating (any constant unique to mlyard).
_ADVISORY_LOCK_KEY = 0x6D6C79617264


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migrating process at a time: a file lock for SQLite, an advisory lock for PostgreSQL."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        lock_path = Path(database).expanduser().with_suffix(".migrate.lock")
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        return
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK_KEY}
                )
                connection.commit()
        return
    yield


def _current_revision(connection: Any) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def open_database(url: str) -> Engine:
    """An engine for ``url`` with its schema brought to ``HEAD_REVISION``."""
    engine = create_database_engine(url)
    upgrade_schema(engine)
    return engine
