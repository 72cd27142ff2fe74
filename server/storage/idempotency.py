"""Idempotency keys in the database, claimed in the transaction of the write they guard."""

import uuid
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.idempotency import IdempotencyKey, RememberedRequest
from server.storage.database import in_one_round_trip, write_later
from server.storage.tables import IdempotencyKeyRow


def _row(key: IdempotencyKey) -> tuple[ColumnElement[bool], ...]:
    return (IdempotencyKeyRow.org_id == key.org_id, IdempotencyKeyRow.key == key.key)


# Raw SQL, sent with the BEGIN of its write's transaction: a keyed write's
# first statement (`in_one_round_trip`).
_CLAIM = """
INSERT INTO idempotency_keys (org_id, key, request_fingerprint, response, created_at)
VALUES (%(org_id)s, %(key)s, %(request_fingerprint)s, NULL, %(created_at)s)
ON CONFLICT DO NOTHING
RETURNING key
"""


async def insert_claim(connection: AsyncConnection, key: IdempotencyKey, now: datetime) -> bool:
    """Claims `key` unless a row holds it already; True if this transaction claimed it.

    A concurrent transaction inserting the same key waits here until this
    one commits or rolls back.
    """
    claimed = await in_one_round_trip(
        connection,
        (
            _CLAIM,
            {
                "org_id": key.org_id,
                "key": key.key,
                "request_fingerprint": key.request_fingerprint,
                "created_at": now,
            },
        ),
    )
    return bool(claimed)


async def lock_remembered(
    connection: AsyncConnection, key: IdempotencyKey, now: datetime
) -> RememberedRequest | None:
    """The committed request stored under `key`, locked; None if it is gone."""
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
        return None
    if row.response is None:
        raise RuntimeError("a committed idempotency key has no response")
    return RememberedRequest(row.request_fingerprint, row.response, now - row.created_at)


async def reclaim(connection: AsyncConnection, key: IdempotencyKey, now: datetime) -> None:
    """Takes over a locked, expired key for a new request."""
    await connection.execute(
        update(IdempotencyKeyRow)
        .where(*_row(key))
        .values(request_fingerprint=key.request_fingerprint, response=None, created_at=now)
    )


# Raw SQL, for `write_later`: the last write of a transaction with a key.
_REMEMBER = """
UPDATE idempotency_keys SET response = %(response)s, process_id = %(process_id)s
WHERE org_id = %(org_id)s AND key = %(key)s
"""


def remember(
    connection: AsyncConnection, key: IdempotencyKey, response: bytes, process_id: uuid.UUID
) -> None:
    """Stores the response of the write that claimed `key`. Left to the
    transaction's next round trip (its COMMIT): nothing reads the result."""
    write_later(
        connection,
        (
            _REMEMBER,
            {"response": response, "process_id": process_id, "org_id": key.org_id, "key": key.key},
        ),
    )


async def forget_expired(connection: AsyncConnection, retention: timedelta) -> int:
    """Deletes keys older than `retention`; returns how many."""
    result = await connection.execute(
        delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < func.now() - retention)
    )
    return result.rowcount
