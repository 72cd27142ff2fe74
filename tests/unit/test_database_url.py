"""DATABASE_URL in libpq's forms, several hosts included: what SQLAlchemy, the
listener's own connection and the logs make of it. No database is reached."""

import asyncio
from typing import Any

import pytest

from server.app import UPKEEP_LONGEST_RETRY_SECONDS, PeriodicJob
from server.storage.database import Database, redacted_url, sqlalchemy_url


def connect_parameters(database_url: str) -> dict[str, Any]:
    """What every connection of the pool, and the listener's, is opened with."""
    database = Database(database_url, pool_size=1)
    try:
        _, parameters = database.engine.dialect.create_connect_args(database.engine.url)
    finally:
        asyncio.run(database.close())
    return {name: value for name, value in parameters.items() if name != "context"}


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        (
            "postgresql://htk:s3cret@db1:5432,db2:5433/htk?target_session_attrs=read-write",
            {
                "user": "htk",
                "password": "s3cret",
                "dbname": "htk",
                "host": "db1,db2",
                "port": "5432,5433",
                "target_session_attrs": "read-write",
            },
        ),
        # Ports may be left out, each host then gets libpq's default.
        (
            "postgresql://htk@db1,db2:6432,db3/htk",
            {"user": "htk", "dbname": "htk", "host": "db1,db2,db3", "port": ",6432,"},
        ),
        (
            "postgresql://htk@[::1]:5432,[fd00::2]/htk",
            {"user": "htk", "dbname": "htk", "host": "::1,fd00::2", "port": "5432,"},
        ),
        # Unix sockets, the embedded PostgreSQL's way: already SQLAlchemy's form.
        (
            "postgresql://postgres@/postgres?host=/srv/pg1,/srv/pg2&target_session_attrs=read-write",
            {
                "user": "postgres",
                "dbname": "postgres",
                "host": "/srv/pg1,/srv/pg2",
                "port": ",",
                "target_session_attrs": "read-write",
            },
        ),
        # Percent-encoded hosts (a socket folder) and passwords are decoded once.
        (
            "postgres://htk:p%40ss@%2Fsrv%2Fpg1,%2Fsrv%2Fpg2/htk",
            {
                "user": "htk",
                "password": "p@ss",
                "dbname": "htk",
                "host": "/srv/pg1,/srv/pg2",
                "port": ",",
            },
        ),
        # One host: as before.
        (
            "postgresql://htk:s3cret@db.internal:5433/htk?sslmode=require",
            {
                "user": "htk",
                "password": "s3cret",
                "dbname": "htk",
                "host": "db.internal",
                "port": 5433,
                "sslmode": "require",
            },
        ),
    ],
)
def test_every_host_reaches_the_connections(database_url: str, expected: dict[str, Any]) -> None:
    assert connect_parameters(database_url) == expected


def test_the_driver_is_psycopg_3_and_the_url_survives_alembics_round_trip() -> None:
    url = sqlalchemy_url("postgresql://htk@db1:5432,db2:5432/htk?target_session_attrs=read-write")
    assert url.startswith("postgresql+psycopg://htk@/htk?")
    # Alembic and the migrations read the rendered URL back.
    assert sqlalchemy_url(url) == url


@pytest.mark.parametrize(
    "database_url",
    [
        "postgresql://htk:s3cret@db1,db2/htk?host=db3",
        "postgresql://htk:s3cret@db1,db2/htk?port=5432",
        "postgresql://htk:s3cret@db1,,db2/htk",
        "postgresql://htk:s3cret@db1,db2:port/htk",
        "postgresql://htk:s3cret@db1,[::1/htk",
    ],
)
def test_a_malformed_host_list_is_refused_without_showing_the_password(database_url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL") as refused:
        sqlalchemy_url(database_url)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("database_url", "shown"),
    [
        (
            "postgresql://htk:s3cret@db1:5432,db2:5432/htk?target_session_attrs=read-write",
            "postgresql://htk:***@db1:5432,db2:5432/htk?target_session_attrs=read-write",
        ),
        (
            "postgresql://htk@/htk?host=/a,/b&password=s3cret&sslmode=require",
            "postgresql://htk@/htk?host=/a,/b&password=***&sslmode=require",
        ),
        ("postgresql://htk@db/htk", "postgresql://htk@db/htk"),
    ],
)
def test_logs_show_the_hosts_never_the_password(database_url: str, shown: str) -> None:
    assert redacted_url(database_url) == shown


async def nothing() -> int:
    return 0


@pytest.mark.parametrize(
    ("interval", "failures", "pause"),
    [
        (1.0, 0, 1.0),
        (1.0, 1, 1.0),
        (1.0, 2, 2.0),
        (1.0, 3, 4.0),
        (1.0, 10, UPKEEP_LONGEST_RETRY_SECONDS),
        # A job that runs rarely is not retried more often than it runs.
        (3600.0, 0, 3600.0),
        (3600.0, 5, 3600.0),
    ],
)
def test_failing_upkeep_backs_off_up_to_a_bound(
    interval: float, failures: int, pause: float
) -> None:
    assert PeriodicJob("work", nothing, interval).pause(failures) == pause
