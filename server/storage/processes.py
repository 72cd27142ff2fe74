"""Reading and writing processes, their steps and their event log."""

import dataclasses
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    bindparam,
    func,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import NotFound
from server.domain.idempotency import IdempotencyKey
from server.domain.processes import (
    Event,
    ListQuery,
    Process,
    ProcessPage,
    ProcessStatus,
    ProcessSummary,
    SortOrder,
    Step,
    StepStatus,
    Update,
    apply_update,
    page_token,
    utc_now,
    validate_update,
)
from server.domain.tasks import Task
from server.storage import idempotency
from server.storage.counts import counted_total
from server.storage.database import Database
from server.storage.tables import ProcessCount, ProcessEvent, ProcessRow, StepRow
from server.storage.tasks import insert_tasks, tasks_of_process, write_tasks

# The columns that change as a process runs (all but its definition).
_PROCESS_STATE = ("status", "current_step", "finished_at", "summary", "error", "update_count")
_STEP_STATE = (
    "status",
    "started_at",
    "completed_at",
    "detail",
    "data",
    "error",
    "progress_message",
    "progress_percent",
    "started_seq",
    "changed_seq",
    "completed_by",
    "deadline_at",
)


# The statements of Get, Create and Update, built once: building a statement
# on every call costs more than PostgreSQL takes to run it. Parameters are
# bound by name; the `key_` ones select the row, the others are its values.
_LOAD_PROCESS = select(*ProcessRow.__table__.columns).where(
    ProcessRow.process_id == bindparam("process_id"), ProcessRow.org_id == bindparam("org_id")
)
_LOAD_PROCESS_FOR_UPDATE = _LOAD_PROCESS.with_for_update()
_LOAD_STEPS = (
    select(*StepRow.__table__.columns)
    .where(StepRow.process_id == bindparam("process_id"))
    .order_by(StepRow.position)
)
_INSERT_PROCESS = insert(ProcessRow)
_INSERT_STEP = insert(StepRow)
_INSERT_EVENT = insert(ProcessEvent)
_UPDATE_PROCESS = (
    update(ProcessRow)
    .where(ProcessRow.process_id == bindparam("key_process_id"))
    .values({column: bindparam(column) for column in _PROCESS_STATE})
)
_UPDATE_STEP = (
    update(StepRow)
    .where(
        StepRow.process_id == bindparam("key_process_id"),
        StepRow.position == bindparam("key_position"),
    )
    .values({column: bindparam(column) for column in _STEP_STATE})
)


class ProcessStore:
    def __init__(self, database: Database, *, idempotency_retention: timedelta) -> None:
        self._database = database
        self._idempotency_retention = idempotency_retention

    async def create(
        self,
        process: Process,
        respond: Callable[[Process], bytes],
        key: IdempotencyKey | None = None,
    ) -> bytes:
        """Stores a new process; returns `respond(process)`, or the response
        remembered under `key` when this is a retry."""
        async with self._database.transaction() as connection:
            if key and (replayed := await idempotency.claim(connection, key, self._retention)):
                return replayed
            await connection.execute(_INSERT_PROCESS, _process_values(process))
            await connection.execute(
                _INSERT_STEP,
                [
                    _step_values(process.process_id, position, step)
                    for position, step in enumerate(process.steps)
                ],
            )
            await insert_tasks(connection, process.tasks)
            return await self._respond(connection, key, respond(process))

    async def get(self, org_id: str, process_id: uuid.UUID) -> Process:
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            return await _load(connection, org_id, process_id, for_update=False)

    async def update(
        self,
        org_id: str,
        process_id: uuid.UUID,
        change: Update,
        respond: Callable[[Event], bytes],
        key: IdempotencyKey | None = None,
    ) -> bytes:
        """Applies one update under the process's row lock and logs it, atomically.

        The lock serializes concurrent updates of one process, so none is
        lost and the event log's order is the order they were applied in.
        Returns `respond(event)`, or the response remembered under `key`
        when this is a retry.
        """
        # A malformed update is refused before it takes a connection and a lock;
        # apply_update checks again (microseconds) so that it is safe on its own.
        validate_update(change)
        async with self._database.transaction() as connection:
            if key and (replayed := await idempotency.claim(connection, key, self._retention)):
                return replayed
            process = await _load(connection, org_id, process_id, for_update=True)
            # Taken under the lock, so recorded times follow the log's order.
            applied = apply_update(process, change, utc_now())
            # Only the state columns: every parameter named after a column
            # would join the SET list, and rewriting indexed columns makes
            # PostgreSQL update every index of the row.
            state = _process_values(process)
            await connection.execute(
                _UPDATE_PROCESS,
                {column: state[column] for column in _PROCESS_STATE}
                | {"key_process_id": process_id},
            )
            if applied.step_positions:
                await connection.execute(
                    _UPDATE_STEP,
                    [
                        _step_state(process_id, position, process.steps[position])
                        for position in applied.step_positions
                    ],
                )
            await write_tasks(connection, applied.tasks)
            event = applied.event
            await connection.execute(
                _INSERT_EVENT,
                {
                    "process_id": process_id,
                    "seq": event.seq,
                    "type": event.type.value,
                    "step": event.step,
                    "payload": event.payload,
                    "recorded_at": event.recorded_at,
                },
            )
            return await self._respond(connection, key, respond(event))

    async def _respond(
        self, connection: AsyncConnection, key: IdempotencyKey | None, response: bytes
    ) -> bytes:
        if key:
            await idempotency.remember(connection, key, response)
        return response

    @property
    def _retention(self) -> timedelta:
        return self._idempotency_retention

    async def forget_expired_idempotency_keys(self) -> int:
        async with self._database.transaction() as connection:
            return await idempotency.forget_expired(connection, self._retention)

    async def list(self, query: ListQuery) -> ProcessPage:
        async with self._database.transaction(isolation="REPEATABLE READ") as connection:
            # One row more than the page tells whether another page follows.
            rows = (await connection.execute(list_page_statement(query))).all()
            total = int((await connection.execute(list_total_statement(query))).scalar_one())
        summaries = [
            ProcessSummary(
                process_id=row.process_id,
                namespace=row.namespace,
                name=row.name,
                status=ProcessStatus(row.status),
                current_step=row.current_step,
                started_at=row.started_at,
                step_count=row.step_count,
                task_ids=list(row.task_ids),
            )
            for row in rows[: query.limit]
        ]
        more = len(rows) > query.limit
        return ProcessPage(
            processes=summaries,
            total=total,
            next_page_token=page_token(query, summaries[-1]) if more else None,
        )


_SUMMARY_COLUMNS = (
    ProcessRow.process_id,
    ProcessRow.namespace,
    ProcessRow.name,
    ProcessRow.status,
    ProcessRow.current_step,
    ProcessRow.started_at,
    ProcessRow.step_count,
    ProcessRow.task_ids,
)


def list_page_statement(query: ListQuery) -> Select[*tuple[Any, ...]]:
    """A page of the query's matches, plus one row to tell if more follow.

    Each filter combination walks one index of `processes` in sort order
    (tests/e2e/test_query_plans.py holds the plans to that); a page token
    turns the offset into a bound on that walk, so depth costs nothing.
    """
    newest_first = query.sort is SortOrder.NEWEST
    position = tuple_(ProcessRow.started_at, ProcessRow.process_id)
    statement = select(*_SUMMARY_COLUMNS).where(*_filters(query))
    if query.after is not None:
        bound = tuple_(
            literal(query.after.started_at, ProcessRow.started_at.type),
            literal(query.after.process_id, ProcessRow.process_id.type),
        )
        statement = statement.where(position < bound if newest_first else position > bound)
    order = (
        (ProcessRow.started_at.desc(), ProcessRow.process_id.desc())
        if newest_first
        else (ProcessRow.started_at.asc(), ProcessRow.process_id.asc())
    )
    return statement.order_by(*order).limit(query.limit + 1).offset(query.offset)


def list_total_statement(query: ListQuery) -> Select[*tuple[Any, ...]]:
    """How many processes match: read from the counters unless a search is given."""
    if query.search is not None:
        return select(func.count()).select_from(ProcessRow).where(*_filters(query))
    status = query.status.value if query.status is not None else None
    return counted_total(ProcessCount, query.org_id, status=status, namespace=query.namespace)


def _filters(query: ListQuery) -> list[ColumnElement[bool]]:
    filters = [ProcessRow.org_id == query.org_id]
    if query.status is not None:
        filters.append(ProcessRow.status == query.status.value)
    if query.namespace is not None:
        filters.append(ProcessRow.namespace == query.namespace)
    if query.search is not None:
        filters.append(ProcessRow.name.ilike(f"%{_escape_like(query.search)}%", escape="\\"))
    return filters


def _escape_like(text: str) -> str:
    """Makes LIKE's wildcards and its escape character match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _load(
    connection: AsyncConnection, org_id: str, process_id: uuid.UUID, *, for_update: bool
) -> Process:
    keys = {"org_id": org_id, "process_id": process_id}
    row = (
        await connection.execute(_LOAD_PROCESS_FOR_UPDATE if for_update else _LOAD_PROCESS, keys)
    ).one_or_none()
    if row is None:
        raise NotFound(f"process {process_id} not found")
    steps = (await connection.execute(_LOAD_STEPS, keys)).all()
    # Most processes have no human step, and so no task to read.
    has_tasks = any(step.task_id is not None for step in steps)
    tasks = (
        {task.task_id: task for task in await tasks_of_process(connection, process_id)}
        if has_tasks
        else {}
    )
    return Process(
        process_id=row.process_id,
        org_id=row.org_id,
        namespace=row.namespace,
        name=row.name,
        started_at=row.started_at,
        status=ProcessStatus(row.status),
        finished_at=row.finished_at,
        summary=row.summary,
        error=row.error,
        update_count=row.update_count,
        steps=[_step(step, tasks.get(step.task_id)) for step in steps],
    )


def _process_values(process: Process) -> dict[str, Any]:
    return {
        "process_id": process.process_id,
        "org_id": process.org_id,
        "namespace": process.namespace,
        "name": process.name,
        "status": process.status.value,
        "current_step": process.current_step,
        "step_count": len(process.steps),
        "task_ids": process.task_ids,
        "started_at": process.started_at,
        "finished_at": process.finished_at,
        "summary": process.summary,
        "error": process.error,
        "update_count": process.update_count,
    }


# StepRow's columns carry the names of Step's fields; a step's task has a row
# of its own, which the step names by task_id.
_STEP_FIELDS = [field.name for field in dataclasses.fields(Step) if field.name != "task"]


def _step(row: Row[Any], task: Task | None) -> Step:
    values = {name: getattr(row, name) for name in _STEP_FIELDS}
    return Step(**values | {"status": StepStatus(row.status), "task": task})


def _step_values(process_id: uuid.UUID, position: int, step: Step) -> dict[str, Any]:
    values = {name: getattr(step, name) for name in _STEP_FIELDS}
    return values | {
        "process_id": process_id,
        "position": position,
        "status": step.status.value,
        "task_id": step.task_id,
    }


def _step_state(process_id: uuid.UUID, position: int, step: Step) -> dict[str, Any]:
    """The parameters of _UPDATE_STEP: the step's state columns and its key."""
    values = _step_values(process_id, position, step)
    return {column: values[column] for column in _STEP_STATE} | {
        "key_process_id": process_id,
        "key_position": position,
    }
