"""The one way a write runs: one transaction, optionally guarded by an idempotency key."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.idempotency import IdempotencyKey, replay
from server.storage import idempotency
from server.storage.database import Database

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Written:
    """What a write did: the response to send (and to replay for a retry),
    already encoded by transport, and the process it changed, whose
    retention forgets the write's key with it."""

    response: bytes
    process_id: uuid.UUID


# A write's work inside the transaction.
Write = Callable[[AsyncConnection], Awaitable[Written]]


class Writes:
    def __init__(self, database: Database, *, clock: Clock, key_retention: timedelta) -> None:
        self._database = database
        self._clock = clock
        self._key_retention = key_retention

    async def run(self, key: IdempotencyKey | None, write: Write) -> bytes:
        """Runs `write` in a READ COMMITTED transaction and returns its response.

        With a key, a retry of an acknowledged write returns the response
        remembered for it and writes nothing. The key is claimed in the same
        transaction: a rejected write rolls its claim back, so only
        acknowledged writes are remembered, and a concurrent retry waits for
        the first attempt's outcome.
        """
        async with self._database.transaction() as connection:
            if key and (replayed := await self._claim(connection, key)) is not None:
                return replayed
            written = await write(connection)
            if key:
                idempotency.remember(connection, key, written.response, written.process_id)
            return written.response

    async def _claim(self, connection: AsyncConnection, key: IdempotencyKey) -> bytes | None:
        """Claims `key` for this write, or returns the response to replay."""
        now = self._clock()
        if await idempotency.insert_claim(connection, key, now):
            return None
        remembered = await idempotency.lock_remembered(connection, key, now)
        if remembered is None:
            # Only an expired key can vanish in between (the purge took it): it is free.
            return await self._claim(connection, key)
        response = replay(key, remembered, self._key_retention)
        if response is None:
            await idempotency.reclaim(connection, key, now)
        return response

    async def forget_expired_keys(self) -> int:
        async with self._database.transaction() as connection:
            return await idempotency.forget_expired(connection, self._key_retention)
