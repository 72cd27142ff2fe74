"""Tokens for tests and the benchmark, made in this process by the service
`htk token create` calls: a CLI run per token (a Python start, the server's
imports, a migration check) cost about a second on a loaded machine, twice
per organization. The tests of the `htk token` commands still run the CLI."""

import asyncio
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from server.domain.processes import utc_now
from server.domain.tokens import parse_scopes
from server.service.tokens import TokenService
from server.service.writes import Clock
from server.storage.database import Database


def token_name(name: str = "") -> str:
    """`name`, else a name of its own (names are unique among an organization's active tokens)."""
    return name or f"tests-{uuid.uuid4().hex[:8]}"


async def new_token(database: Database, clock: Clock, org_id: str, scopes: str, name: str) -> str:
    """A new token of `org_id` (created if new) with `scopes` as the CLI reads them."""
    _, token = await TokenService(database, clock).create(
        org_id, token_name(name), parse_scopes(scopes)
    )
    return token


def stack_database_url(env: Mapping[str, str]) -> str:
    """The database of a stack started with `env`: DATABASE_URL, else its embedded PostgreSQL."""
    if url := env.get("DATABASE_URL"):
        return url
    return f"postgresql://postgres@/postgres?host={env['HTK_DATA_DIR']}/postgres"


def create_token(
    env: Mapping[str, str], org_id: str, scopes: str = "processes:write", name: str = ""
) -> str:
    """A new token of `org_id` in the database of the stack started with `env`;
    named `name`, else a name of its own."""

    async def create() -> str:
        database = Database(stack_database_url(env), pool_size=1)
        try:
            return await new_token(database, utc_now, org_id, scopes, name)
        finally:
            await database.close()

    # A thread of its own, so that a caller inside a running event loop
    # (an async test) can wait for it too.
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, create()).result(timeout=60)
