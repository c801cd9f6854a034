"""Comparable description of a database schema, for tests that build it two ways."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, inspect


def schema_of(connection: Connection, schema: str | None = None) -> dict[str, dict[str, Any]]:
    """Tables of ``schema`` (the default one when None) with their columns, keys, indexes and
    unique constraints, in a stable order."""
    inspector = inspect(connection)
    described: dict[str, dict[str, Any]] = {}
    for table in sorted(inspector.get_table_names(schema=schema)):
        described[table] = {
            "columns": [
                (column["name"], str(column["type"]), column["nullable"])
                for column in inspector.get_columns(table, schema=schema)
            ],
            "primary_key": inspector.get_pk_constraint(table, schema=schema)["constrained_columns"],
            "foreign_keys": sorted(
                (
                    tuple(fk["constrained_columns"]),
                    fk["referred_table"],
                    tuple(fk["referred_columns"]),
                )
                for fk in inspector.get_foreign_keys(table, schema=schema)
            ),
            "indexes": sorted(
                (index["name"], tuple(index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(table, schema=schema)
            ),
            "unique": sorted(
                tuple(unique["column_names"])
                for unique in inspector.get_unique_constraints(table, schema=schema)
            ),
        }
    return described
