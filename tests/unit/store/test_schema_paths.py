"""A new database gets the current schema straight from the table definitions (no Alembic
import); it must be exactly what the Alembic migrations build, and later upgrades must work."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from mlyard.store.database import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    _create_current_schema,
    _migrate,
    create_database_engine,
    upgrade_schema,
)
from tests.unit.store.schema import schema_of


def test_head_revision_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION


def test_a_new_database_matches_the_migrated_schema(tmp_path: Path) -> None:
    created = create_database_engine(f"sqlite:///{tmp_path / 'created.db'}")
    migrated = create_database_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    with created.connect() as connection:
        _create_current_schema(connection)
        connection.commit()
        from_tables = schema_of(connection)
    with migrated.connect() as connection:
        _migrate(connection)
        connection.commit()
        from_migrations = schema_of(connection)
    assert from_tables == from_migrations
    assert "runs" in from_tables and "alembic_version" in from_tables


def test_upgrade_schema_creates_a_new_database_once_and_stamps_it(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    upgrade_schema(engine)
    upgrade_schema(engine)  # current: nothing to do
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert [row[0] for row in versions] == [HEAD_REVISION]
