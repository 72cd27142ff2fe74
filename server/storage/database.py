"""Connections to PostgreSQL, and the one way to run work in a transaction."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from server.domain.errors import Unavailable


def sqlalchemy_url(database_url: str) -> str:
    """Selects the psycopg 3 driver for a plain `postgresql://` URL."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


# All well inside Envoy's 30 s route timeout, so a stuck database yields a
# clear UNAVAILABLE from the server rather than a cut connection.
POOL_TIMEOUT_SECONDS = 10
STATEMENT_TIMEOUT = "10s"
LOCK_TIMEOUT = "5s"


class Database:
    """A connection pool and the sessions drawn from it."""

    def __init__(self, database_url: str, *, pool_size: int) -> None:
        self.engine: AsyncEngine = create_async_engine(
            sqlalchemy_url(database_url),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_SECONDS,
            # Connections survive a database restart: a dead one is replaced.
            pool_pre_ping=True,
            connect_args={
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT}"
                f" -c lock_timeout={LOCK_TIMEOUT}"
            },
        )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self, *, snapshot: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        With `snapshot`, every statement sees the same snapshot (REPEATABLE
        READ), e.g. a page and the count of all matches. A lost or refused
        connection, a full pool or a timeout becomes `Unavailable`, which
        callers may retry.
        """
        try:
            async with self._sessions() as session, session.begin():
                if snapshot:
                    await session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ"}
                    )
                yield session
        except (OperationalError, InterfaceError, PoolTimeoutError) as error:
            raise Unavailable("the database is unavailable; retry later") from error

    async def close(self) -> None:
        await self.engine.dispose()
