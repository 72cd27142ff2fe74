"""The real server in this test process: servicers, interceptors, services and
storage over a real PostgreSQL, without Envoy or `htk run`.

The database is DATABASE_URL if set (each test works in an organization of
its own, so a shared database is fine), else an embedded PostgreSQL in a
scratch folder.
"""

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from server.app import Server, build_server
from server.domain.processes import utc_now
from server.service.writes import Clock
from server.settings import Settings
from server.storage.database import Database
from server.storage.embedded import embedded_database
from server.storage.migrate import upgrade_to_latest
from tests.support.orgs import Org
from tests.support.tokens import new_token


@contextmanager
def migrated_database(scratch: Path, database_url: str | None) -> Iterator[str]:
    """The URL of a database at the newest schema: `database_url`, or an
    embedded PostgreSQL under `scratch`."""
    if database_url:
        upgrade_to_latest(database_url)
        yield database_url
        return
    with embedded_database(scratch) as url:
        upgrade_to_latest(url)
        yield url


class SettableClock:
    """A clock tests move by hand; it reads the real time until set."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or utc_now()


@dataclass(frozen=True)
class InProcessServer:
    target: str
    database: Database
    clock: SettableClock
    server: Server

    async def token(self, org_id: str, scopes: str = "processes:write", name: str = "") -> str:
        """A new token; named `name`, else a name of its own."""
        return await new_token(self.database, self.clock, org_id, scopes, name)

    async def new_org(self, prefix: str = "org") -> Org:
        org_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
        return Org(org_id, await self.token(org_id), await self.token(org_id, ""))


@asynccontextmanager
async def in_process_server(
    database_url: str, clock: Clock | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[InProcessServer]:
    """Serves the API on a free loopback port of this process until the block ends;
    `env` sets settings as the environment would."""
    settable = SettableClock()
    database = Database(database_url, pool_size=4)
    server = build_server(Settings.from_env(env or {}), database, clock=clock or settable)
    port = server.add_address("127.0.0.1:0")
    await server.start()
    try:
        yield InProcessServer(f"127.0.0.1:{port}", database, settable, server)
    finally:
        await server.stop()
        await database.close()
