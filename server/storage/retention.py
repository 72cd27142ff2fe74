"""Retention's statements: taking the pass's lock, picking a batch of expired
processes, reading their event logs, deleting them with what hangs off them.

Functions on the connection of a transaction that the service layer opened.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.processes import Event
from server.domain.retention import FINISHED
from server.storage.processes import event_of
from server.storage.tables import IdempotencyKeyRow, ProcessEvent, ProcessRow

# The advisory lock of the retention pass (any constant no other lock uses):
# "htk retention" as a number.
PASS_LOCK = 0x68746B_726574


async def take_pass_lock(connection: AsyncConnection) -> bool:
    """Takes the pass's lock until this transaction ends, unless another
    transaction holds it (then False, at once: nobody ever waits for it)."""
    taken = await connection.execute(select(func.pg_try_advisory_xact_lock(PASS_LOCK)))
    return bool(taken.scalar_one())


async def lock_expired(
    connection: AsyncConnection, before: datetime, limit: int
) -> list[tuple[str, uuid.UUID]]:
    """Up to `limit` processes that retention deletes at the cutoff `before`,
    as (org_id, process_id), with their row locks (expired_statement)."""
    rows = await connection.execute(expired_statement(before, limit))
    return [(row.org_id, row.process_id) for row in rows]


def expired_statement(before: datetime, limit: int) -> Select[*tuple[Any, ...]]:
    """The processes expired at `before` (domain.retention.expired), oldest
    finish first, walking processes_by_finish from its start to the cutoff
    (tests/e2e/test_query_plans.py holds the plan to that). A process whose
    row a call holds (an update being refused) is skipped rather than
    waited for: the next batch takes it."""
    return (
        select(ProcessRow.org_id, ProcessRow.process_id)
        .where(
            ProcessRow.finished_at < before,
            # Parameters of their own, not one expanded when sent: the
            # statement is the same for a plan and for PostgreSQL's cache.
            ProcessRow.status.in_([literal(status.value) for status in FINISHED]),
        )
        .order_by(ProcessRow.finished_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


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


async def delete_processes(connection: AsyncConnection, process_ids: Sequence[uuid.UUID]) -> int:
    """Deletes the processes with the idempotency keys that name them; their
    steps, tasks and events go by the foreign keys' cascades, and the
    counters' triggers take them out of every total. Returns how many."""
    ids = list(process_ids)
    await connection.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.process_id.in_(ids)))
    deleted = await connection.execute(delete(ProcessRow).where(ProcessRow.process_id.in_(ids)))
    return deleted.rowcount
