"""Connections stay open between calls (server/storage/database.py), so what
one call leaves on its connection must never reach the next: no transaction
left open by a failure, by SQLAlchemy's statements or by a cancelled call,
and no connection that the database has lost. Against the real PostgreSQL,
with a pool of one connection, so that the next call gets the same one
whenever it is given back."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from server.domain.errors import NotFound, Unavailable
from server.storage.database import Database, in_one_round_trip, write_later


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    opened = Database(database_url, pool_size=1)
    try:
        async with opened.transaction() as connection:
            await connection.execute(
                text("CREATE TABLE IF NOT EXISTS reuse_marks (mark text PRIMARY KEY)")
            )
        yield opened
    finally:
        await opened.close()


async def backend_pid(database: Database) -> int:
    async with database.transaction(isolation="AUTOCOMMIT") as connection:
        [(pid,)] = await in_one_round_trip(connection, ("SELECT pg_backend_pid()", {}))
        return int(pid)


async def in_transaction(database: Database) -> bool:
    """Whether the next call's connection starts inside a transaction: two
    calls in turn (on the same idle connection) see the same transaction id
    only if the first left its transaction open."""
    ids: list[str] = []
    for _ in range(2):
        async with database.transaction(isolation="AUTOCOMMIT") as connection:
            [(transaction_id,)] = await in_one_round_trip(
                connection, ("SELECT pg_current_xact_id()::text", {})
            )
            ids.append(transaction_id)
    return ids[0] == ids[1]


async def marks(database: Database, mark: str) -> int:
    async with database.transaction(isolation="AUTOCOMMIT") as connection:
        [(count,)] = await in_one_round_trip(
            connection, ("SELECT count(*) FROM reuse_marks WHERE mark = %(mark)s", {"mark": mark})
        )
        return int(count)


async def test_a_connection_serves_call_after_call(database: Database) -> None:
    first = await backend_pid(database)
    assert [await backend_pid(database) for _ in range(3)] == [first] * 3


@pytest.mark.parametrize("sent_by", ["driver", "sqlalchemy"])
async def test_a_failed_write_is_rolled_back_and_leaves_no_transaction_behind(
    database: Database, sent_by: str
) -> None:
    before = await backend_pid(database)
    mark = f"failed-{sent_by}"
    insert = "INSERT INTO reuse_marks VALUES (%(mark)s)"
    with pytest.raises(NotFound):
        async with database.transaction() as connection:
            if sent_by == "driver":
                await in_one_round_trip(connection, (insert, {"mark": mark}))
            else:
                await connection.execute(
                    text("INSERT INTO reuse_marks VALUES (:mark)"), {"mark": mark}
                )
            raise NotFound("the call's own error")
    assert not await in_transaction(database)
    assert await marks(database, mark) == 0
    # A domain error is no fault of the connection's: it serves on.
    assert await backend_pid(database) == before


async def test_sqlalchemy_statements_commit_and_leave_the_connection_at_rest(
    database: Database,
) -> None:
    async with database.transaction() as connection:
        await connection.execute(text("INSERT INTO reuse_marks VALUES ('by sqlalchemy')"))
        write_later(connection, ("INSERT INTO reuse_marks VALUES ('left for the commit')", {}))
    assert not await in_transaction(database)
    assert await marks(database, "by sqlalchemy") == 1
    assert await marks(database, "left for the commit") == 1
    # Run in autocommit, SQLAlchemy still keeps a transaction of its own.
    async with database.transaction(isolation="AUTOCOMMIT") as connection:
        await connection.execute(text("SELECT 1"))
    assert not await in_transaction(database)


async def test_a_call_cancelled_mid_statement_leaves_nothing_behind(database: Database) -> None:
    started = asyncio.Event()

    async def slow_write() -> None:
        async with database.transaction() as connection:
            await in_one_round_trip(connection, ("INSERT INTO reuse_marks VALUES ('slow')", {}))
            started.set()
            await in_one_round_trip(connection, ("SELECT pg_sleep(30)", {}))

    call = asyncio.create_task(slow_write())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.2)  # the sleep is under way; any moment in it will do
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not await in_transaction(database)
    assert await marks(database, "slow") == 0


async def test_a_lost_connection_fails_one_call_and_the_next_has_a_new_one(
    database: Database, database_url: str
) -> None:
    lost = await backend_pid(database)
    killer = Database(database_url, pool_size=1)
    try:
        async with killer.transaction(isolation="AUTOCOMMIT") as connection:
            await in_one_round_trip(
                connection, ("SELECT pg_terminate_backend(%(pid)s)", {"pid": lost})
            )
    finally:
        await killer.close()
    with pytest.raises(Unavailable):
        await backend_pid(database)
    assert await backend_pid(database) != lost


async def test_statements_prepared_before_a_rolled_back_call_are_prepared_again(
    database: Database,
) -> None:
    """Were psycopg to prepare SQLAlchemy's statements once they repeat, it
    would deallocate everything prepared on the connection at a rollback,
    the hot statements too, and the next call would find them missing."""
    for _ in range(8):  # past psycopg's threshold (5) for preparing its own
        async with database.transaction(isolation="AUTOCOMMIT") as connection:
            await connection.execute(text("SELECT count(*) FROM reuse_marks"))
        assert await marks(database, "prepared") == 0
    with pytest.raises(NotFound):
        async with database.transaction() as connection:
            await in_one_round_trip(connection, ("INSERT INTO reuse_marks VALUES ('rolled')", {}))
            raise NotFound("the call's own error")
    assert await marks(database, "rolled") == 0
