"""On real PostgreSQL, a new database created from the table definitions has exactly the schema
the Alembic migrations build (each in its own PostgreSQL schema of the test database)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from mlyard.store.database import _create_current_schema, _migrate, create_database_engine
from tests.conftest import ServiceStarter
from tests.unit.store.schema import schema_of

pytestmark = pytest.mark.integration


def test_created_and_migrated_schemas_are_identical_on_postgres(services: ServiceStarter) -> None:
    url = services("postgres")["DATABASE_URL"]
    admin = sa.create_engine(url)
    names = {way: f"schema_{way}_{uuid.uuid4().hex[:8]}" for way in ("created", "migrated")}
    described = {}
    try:
        with admin.begin() as connection:
            for name in names.values():
                connection.execute(sa.text(f"CREATE SCHEMA {name}"))
        for way, build in (("created", _create_current_schema), ("migrated", _migrate)):
            engine = create_database_engine(url)
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text(f"SET search_path TO {names[way]}"))
                    build(connection)
                    connection.commit()
                    described[way] = schema_of(connection, names[way])
            finally:
                engine.dispose()
    finally:
        with admin.begin() as connection:
            for name in names.values():
                connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()
    assert described["created"] == described["migrated"]
    assert "step_runs" in described["created"]
