"""Retention's statements: taking the pass's lock, picking a batch of expired
processes, reading their event logs, deleting them with what hangs off them.

Functions on the connection of a transaction that the service layer opened.
"""

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import ColumnElement, Select, delete, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import Unavailable
from server.domain.processes import Event
from server.domain.retention import FINISHED
from server.storage.database import Database
from server.storage.processes import event_of
from server.storage.tables import IdempotencyKeyRow, ProcessEvent, ProcessRow

# The advisory lock of the retention pass (any constant no other lock uses):
# "htk retention" as a number.
PASS_LOCK = 0x68746B_726574


@asynccontextmanager
async def pass_lock(database: Database) -> AsyncIterator[bool]:
    """Whether this worker took the pass's lock, held until the block ends.

    A session lock on a connection of its own, outside the pool: the pass's
    batches and the worker's calls keep every pooled connection, and the
    lock goes with the connection if the worker dies. Taken or not at once:
    nobody ever waits for it.
    """
    try:
        connection = await database.dedicated_connection("htk retention")
    except psycopg.OperationalError as error:
        raise Unavailable("the database is unavailable; retry later") from error
    async with connection:
        taken = await (
            await connection.execute("SELECT pg_try_advisory_lock(%s)", (PASS_LOCK,))
        ).fetchone()
        # Closing the connection, at the block's end, releases the lock.
        yield bool(taken and taken[0])


async def expired(connection: AsyncConnection, before: datetime, limit: int) -> list[uuid.UUID]:
    """The ids of up to `limit` processes that retention deletes at the
    cutoff `before` (expired_statement)."""
    return list((await connection.execute(expired_statement(before, limit))).scalars())


def expired_statement(before: datetime, limit: int) -> Select[*tuple[Any, ...]]:
    """The processes expired at `before` (domain.retention.expired), oldest
    finish first, walking processes_by_finish from its start to the cutoff
    (tests/e2e/test_query_plans.py holds the plan to that). A read: it
    locks nothing."""
    return (
        select(ProcessRow.process_id)
        .where(*_expired(before))
        .order_by(ProcessRow.finished_at)
        .limit(limit)
    )


def _expired(before: datetime) -> list[ColumnElement[bool]]:
    return [
        ProcessRow.finished_at < before,
        # Parameters of their own, not one expanded when sent: the statement
        # is the same for a plan and for PostgreSQL's cache.
        ProcessRow.status.in_([literal(status.value) for status in FINISHED]),
    ]


async def event_logs(
    connection: AsyncConnection, process_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Event]]:
    """Every event of each process, in seq order, by process."""
    logs: dict[uuid.UUID, list[Event]] = {process_id: [] for process_id in process_ids}
    statement = (
        select(*ProcessEvent.__table__.columns)
        .where(ProcessEvent.process_id.in_(list(process_ids)))
        .order_by(ProcessEvent.process_id, ProcessEvent.seq)
    )
    for row in await connection.execute(statement):
        logs[row.process_id].append(event_of(row))
    return logs


async def delete_processes(
    connection: AsyncConnection, process_ids: Sequence[uuid.UUID], before: datetime
) -> int:
    """Deletes those of the processes still expired at `before`, with the
    idempotency keys that name them; their steps, tasks, events and webhook
    deliveries go by the foreign keys' cascades, and the counters' triggers
    take them out of every total. A process whose row a call holds (an update being refused) is
    skipped, not waited for: a later batch takes it. Returns how many went.

    One statement, so that it waits for the tables' locks (if anything holds
    one) before it locks any row, a counter's above all."""
    doomed = (
        select(ProcessRow.process_id)
        .where(ProcessRow.process_id.in_(list(process_ids)), *_expired(before))
        .with_for_update(skip_locked=True)
        .cte("doomed")
    )
    keys = (
        delete(IdempotencyKeyRow)
        .where(IdempotencyKeyRow.process_id.in_(select(doomed.c.process_id)))
        .cte("keys")
    )
    deleted = await connection.execute(
        delete(ProcessRow)
        .where(ProcessRow.process_id.in_(select(doomed.c.process_id)))
        .returning(ProcessRow.process_id)
        .add_cte(keys)
    )
    return len(deleted.all())
