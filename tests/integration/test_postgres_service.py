"""scripts/services/postgres.sh: a real PostgreSQL on loopback, reached through SQLAlchemy 2."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.conftest import ServiceStarter

pytestmark = pytest.mark.integration


def test_postgres_serves_the_mlyard_database_on_loopback(services: ServiceStarter) -> None:
    env = services("postgres")
    url = make_url(env["DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, str(url.port), url.username, url.database) == (
        "127.0.0.1",
        env["PGPORT"],
        "mlyard",
        "mlyard",
    )
    assert env["PGPASSWORD"] == url.password and len(env["PGPASSWORD"]) >= 32

    engine = sa.create_engine(env["DATABASE_URL"])
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE probe (id serial PRIMARY KEY, note text)"))
            connection.execute(sa.text("INSERT INTO probe (note) VALUES ('written')"))
        with engine.connect() as connection:
            row = connection.execute(
                sa.text("SELECT note, current_user, current_database() FROM probe")
            ).one()
            address = connection.execute(sa.text("SELECT host(inet_server_addr())")).scalar()
        assert tuple(row) == ("written", "mlyard", "mlyard")
        assert address == "127.0.0.1"
    finally:
        engine.dispose()


def test_postgres_refuses_a_wrong_password(services: ServiceStarter) -> None:
    env = services("postgres")
    wrong = make_url(env["DATABASE_URL"]).set(password="not-the-password")
    engine = sa.create_engine(wrong)
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()
