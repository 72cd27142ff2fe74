"""Idempotency keys in the database, claimed in the transaction of the write they guard."""

from datetime import timedelta

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.idempotency import IdempotencyKey, RememberedRequest, replay
from server.domain.processes import utc_now
from server.storage.tables import IdempotencyKeyRow


def _row(key: IdempotencyKey) -> tuple[ColumnElement[bool], ...]:
    return (IdempotencyKeyRow.org_id == key.org_id, IdempotencyKeyRow.key == key.key)


async def claim(
    connection: AsyncConnection, key: IdempotencyKey, retention: timedelta
) -> bytes | None:
    """Claims `key` for the write in this transaction, or returns the response to replay.

    A concurrent request with the same key waits on the insert until the
    first one commits (and then replays its response) or rolls back (and
    then claims the key itself). A rejected write rolls its claim back too,
    so only acknowledged writes are remembered.
    """
    now = utc_now()
    claimed = await connection.execute(
        insert(IdempotencyKeyRow)
        .values(
            org_id=key.org_id,
            key=key.key,
            request_fingerprint=key.request_fingerprint,
            response=None,
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(IdempotencyKeyRow.key)
    )
    if claimed.first() is not None:
        return None
    row = (
        await connection.execute(
            select(
                IdempotencyKeyRow.request_fingerprint,
                IdempotencyKeyRow.response,
                IdempotencyKeyRow.created_at,
            )
            .where(*_row(key))
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        # Only an expired key can vanish in between (the purge took it): it is free.
        return await claim(connection, key, retention)
    if row.response is None:
        raise RuntimeError("a committed idempotency key has no response")
    remembered = RememberedRequest(row.request_fingerprint, row.response, now - row.created_at)
    response = replay(key, remembered, retention)
    if response is None:
        await connection.execute(
            update(IdempotencyKeyRow)
            .where(*_row(key))
            .values(request_fingerprint=key.request_fingerprint, response=None, created_at=now)
        )
    return response


async def remember(connection: AsyncConnection, key: IdempotencyKey, response: bytes) -> None:
    await connection.execute(update(IdempotencyKeyRow).where(*_row(key)).values(response=response))


async def forget_expired(connection: AsyncConnection, retention: timedelta) -> int:
    """Deletes keys older than `retention`; returns how many."""
    result = await connection.execute(
        delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < func.now() - retention)
    )
    return result.rowcount
