"""A write that reaches a server that cannot take it, as one that was a primary
and is a standby now: UNAVAILABLE (retryable), never INTERNAL, and the
connection does not serve another call. Against the real PostgreSQL, made
read-only for one transaction as a standby is for all of them."""

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import Unavailable
from server.storage.database import Database, in_one_round_trip

# A write PostgreSQL refuses in a read-only transaction even when it changes no row.
WRITE = "UPDATE processes SET update_count = update_count WHERE false"


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    # One connection: the next transaction shows whether it was replaced.
    opened = Database(database_url, pool_size=1)
    try:
        yield opened
    finally:
        await opened.close()


async def backend_pid(database: Database) -> int:
    async with database.transaction() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def through_sqlalchemy(connection: AsyncConnection) -> None:
    await connection.execute(text(WRITE))


async def on_the_driver(connection: AsyncConnection) -> None:
    await in_one_round_trip(connection, (WRITE, {}))


@pytest.mark.parametrize("write", [through_sqlalchemy, on_the_driver])
async def test_a_write_on_a_read_only_server_is_unavailable_and_its_connection_dropped(
    database: Database, write: Callable[[AsyncConnection], Awaitable[None]]
) -> None:
    before = await backend_pid(database)
    with pytest.raises(Unavailable, match="retry later"):
        async with database.transaction() as connection:
            await connection.execute(text("SET LOCAL transaction_read_only = on"))
            await write(connection)
    assert await backend_pid(database) != before
