"""Tokens for tests and the benchmark, made in this process by the service
`htk token create` calls: a CLI run per token (a Python start, the server's
imports, a migration check) cost about a second on a loaded machine, twice
per organization. The tests of the `htk token` commands still run the CLI."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from server.domain.processes import utc_now
from server.domain.tokens import parse_scopes
from server.service.tokens import TokenService
from server.service.writes import Clock
from server.storage.database import Database

T = TypeVar("T")


def token_name(name: str = "") -> str:
    """`name`, else a name of its own (names are unique among an organization's active tokens)."""
    return name or f"tests-{uuid.uuid4().hex[:8]}"


async def new_token(database: Database, clock: Clock, org_id: str, scopes: str, name: str) -> str:
    """A new token of `org_id` (created if new) with `scopes` as the CLI reads them."""
    _, token = await _created(TokenService(database, clock), org_id, scopes, name)
    return token


async def _created(
    tokens: TokenService, org_id: str, scopes: str, name: str
) -> tuple[uuid.UUID, str]:
    return await tokens.create(org_id, token_name(name), parse_scopes(scopes))


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
    _, token = created_token(env, org_id, scopes, name)
    return token


def created_token(
    env: Mapping[str, str], org_id: str, scopes: str = "processes:write", name: str = ""
) -> tuple[uuid.UUID, str]:
    """Like create_token, with the token's id (what `htk token list` shows)."""
    return _with_tokens(env, lambda tokens: _created(tokens, org_id, scopes, name))


def revoke_token(env: Mapping[str, str], token_id: uuid.UUID) -> None:
    """Revokes the token as `htk token revoke` does (its tests run the CLI itself)."""
    assert _with_tokens(env, lambda tokens: tokens.revoke(token_id)), f"no token {token_id}"


def _with_tokens(env: Mapping[str, str], action: Callable[[TokenService], Awaitable[T]]) -> T:
    """Runs `action` with the token service of the stack started with `env`."""

    async def run() -> T:
        database = Database(stack_database_url(env), pool_size=1)
        try:
            return await action(TokenService(database, utc_now))
        finally:
            await database.close()

    # A thread of its own, so that a caller inside a running event loop
    # (an async test) can wait for it too.
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, run()).result(timeout=60)
