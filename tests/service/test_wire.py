"""The hot statements' way to PostgreSQL (server/storage/wire.py), against the
real server: values go and come back as psycopg's own adapters have them,
a failure is reported by its own error whatever follows it, and statements
prepared on a connection are prepared again when the server forgot them."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from server.storage.wire import Wire, translated


@pytest.fixture
async def driver(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    connection = await psycopg.AsyncConnection.connect(url, autocommit=True, prepare_threshold=None)
    try:
        await connection.execute("CREATE TEMPORARY TABLE marks (mark text PRIMARY KEY)")
        yield connection
    finally:
        await connection.close()


async def test_values_go_and_come_back_as_psycopg_adapts_them(
    driver: psycopg.AsyncConnection[Any],
) -> None:
    wire = Wire(driver)
    values = {
        "id": uuid.uuid4(),
        "at": datetime(2026, 12, 7, 18, 0, 0, 123456, tzinfo=UTC),
        "data": Jsonb({"a": [1, 2.5, None, "x"]}),
        "names": ["a", "b"],
        "missing": None,
        "count": 7,
    }
    query = (
        "SELECT %(id)s::uuid, %(at)s::timestamptz, %(data)s::jsonb, %(names)s::text[],"
        " %(missing)s::text, %(count)s::int + 1, '100%%', %(count)s::int"
    )
    [outcome] = await wire.run([(query, values)])
    assert outcome.error is None
    assert outcome.rows == [
        (
            values["id"],
            values["at"],
            {"a": [1, 2.5, None, "x"]},
            ["a", "b"],
            None,
            8,
            "100%",
            7,
        )
    ]
    # Again, prepared this time, with a null where there was a number.
    [again] = await wire.run([(query, values | {"count": None})])
    assert again.rows[0][5:] == (None, "100%", None)


async def test_a_failure_is_reported_by_its_own_error_and_undoes_the_round_trip(
    driver: psycopg.AsyncConnection[Any],
) -> None:
    wire = Wire(driver)
    insert = "INSERT INTO marks VALUES (%(mark)s)"
    outcomes = await wire.run(
        [
            "BEGIN",
            (insert, {"mark": "kept?"}),
            (insert, {"mark": "twice"}),
            (insert, {"mark": "twice"}),
            ("SELECT count(*) FROM marks WHERE mark <> %(mark)s", {"mark": ""}),
            "COMMIT",
        ]
    )
    assert [outcome.error is None for outcome in outcomes] == [True, True, True] + [False] * 3
    assert {type(outcome.error) for outcome in outcomes[3:]} == {psycopg.errors.UniqueViolation}
    assert driver.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    await driver.rollback()
    [count] = await wire.run([("SELECT count(*) FROM marks WHERE mark <> %(mark)s", {"mark": ""})])
    assert count.rows == [(0,)]


async def test_a_statement_that_cannot_be_prepared_is_reported_by_its_own_error(
    driver: psycopg.AsyncConnection[Any],
) -> None:
    [outcome] = await Wire(driver).run(
        [("SELECT no_such_column FROM marks WHERE %(x)s", {"x": True})]
    )
    assert isinstance(outcome.error, psycopg.errors.UndefinedColumn)


async def test_statements_the_server_forgot_are_prepared_again(
    driver: psycopg.AsyncConnection[Any],
) -> None:
    wire = Wire(driver)
    select = ("SELECT %(n)s::int * 2", {"n": 2})
    [first] = await wire.run([select])
    assert first.rows == [(4,)]
    await driver.execute("DEALLOCATE ALL")
    [forgotten] = await wire.run([select])
    assert isinstance(forgotten.error, psycopg.errors.InvalidSqlStatementName)
    [again] = await wire.run([select])
    assert (again.error, again.rows) == (None, [(4,)])


def test_only_named_placeholders_are_taken() -> None:
    assert translated("SELECT %(a)s, %(b)s, %(a)s, '%%'") == (
        b"SELECT $1, $2, $1, '%'",
        ("a", "b"),
    )
    with pytest.raises(ValueError, match="placeholders"):
        translated("SELECT %s")
