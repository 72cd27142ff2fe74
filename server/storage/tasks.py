"""Reading and writing tasks, and finding the steps whose deadline has passed.

Plain functions on a connection whose transaction the caller owns: the
callers decide what a change means, these only move rows.
"""

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.tasks import Outcome, Task, TaskQuery, TaskStatus
from server.storage.counts import counted_total
from server.storage.database import in_one_round_trip
from server.storage.json_rows import Reader
from server.storage.tables import ProcessRow, StepRow, TaskCount, TaskRow

# TaskRow's columns carry the names of Task's fields.
_TASK_FIELDS = [field.name for field in dataclasses.fields(Task)]
# The columns that change as a task moves (all but what it copies).
TASK_STATE = (
    "status",
    "opened_at",
    "completed_at",
    "outcome",
    "comment",
    "completed_by",
    "completed_by_token_id",
)
# A task's columns as storage reads them in JSON (server/storage/processes.py).
TASK_JSON = Reader(TaskRow.__table__, _TASK_FIELDS, {"status": TaskStatus, "outcome": Outcome})
# A task's columns in its fields' order: a row builds a Task by position.
_TASK_COLUMNS = [TaskRow.__table__.c[name] for name in _TASK_FIELDS]
_STATUSES = {status.value: status for status in TaskStatus}
_OUTCOMES = {None: None} | {outcome.value: outcome for outcome in Outcome}

# Raw SQL, like the hot statements of server/storage/processes.py.
_GET_TASK = (
    f"SELECT {', '.join(_TASK_FIELDS)} FROM tasks"  # noqa: S608 - the schema's names alone
    " WHERE task_id = %(task_id)s AND org_id = %(org_id)s"
)
# Locks the processes, not the steps: a process's row lock is the one every
# change to it takes first, so the scanner queues with updates and task
# completions instead of deadlocking with them, and skips (until its next
# round) a process that one of them holds.
_LOCK_DUE_STEPS = (
    select(ProcessRow.org_id, StepRow.process_id, StepRow.key)
    .join(ProcessRow, ProcessRow.process_id == StepRow.process_id)
    .where(StepRow.deadline_at <= bindparam("now"))
    .order_by(StepRow.deadline_at)
    .limit(bindparam("limit"))
    .with_for_update(of=ProcessRow, skip_locked=True)
)


async def get_task(connection: AsyncConnection, org_id: str, task_id: uuid.UUID) -> Task | None:
    """The organization's task by that id, if it has one."""
    rows = await in_one_round_trip(connection, (_GET_TASK, {"org_id": org_id, "task_id": task_id}))
    return _task(rows[0]) if rows else None


async def page(connection: AsyncConnection, query: TaskQuery) -> list[Task]:
    """The query's page of tasks, and one more if another page follows."""
    return [_task(row) for row in (await connection.execute(task_page_statement(query))).all()]


async def total(connection: AsyncConnection, query: TaskQuery) -> int:
    """How many tasks match the query, over all pages."""
    return int((await connection.execute(task_total_statement(query))).scalar_one())


def task_page_statement(query: TaskQuery) -> Select[*tuple[Any, ...]]:
    """A page of the query's matches, newest first, plus one row to tell if
    more follow. Each filter combination walks one index of `tasks`."""
    statement = select(*_TASK_COLUMNS).where(*_filters(query))
    if query.after is not None:
        bound = tuple_(
            literal(query.after.created_at, TaskRow.created_at.type),
            literal(query.after.task_id, TaskRow.task_id.type),
        )
        statement = statement.where(tuple_(TaskRow.created_at, TaskRow.task_id) < bound)
    return (
        statement.order_by(TaskRow.created_at.desc(), TaskRow.task_id.desc())
        .limit(query.limit + 1)
        .offset(query.offset)
    )


def task_total_statement(query: TaskQuery) -> Select[*tuple[Any, ...]]:
    """How many tasks match: read from the counters where they suffice, else
    counted: one process has at most 200 tasks, and an outcome or a decider
    walks its own index (tasks_by_outcome, tasks_by_decider)."""
    if query.counted:
        return select(func.count()).select_from(TaskRow).where(*_filters(query))
    status = query.status.value if query.status is not None else None
    return counted_total(TaskCount, query.org_id, status=status, namespace=query.namespace)


def _filters(query: TaskQuery) -> list[ColumnElement[bool]]:
    filters = [TaskRow.org_id == query.org_id]
    if query.status_filter is not None:
        filters.append(TaskRow.status == query.status_filter.value)
    if query.namespace is not None:
        filters.append(TaskRow.namespace == query.namespace)
    if query.process_id is not None:
        filters.append(TaskRow.process_id == query.process_id)
    if query.outcome is not None:
        filters.append(TaskRow.outcome == query.outcome.value)
    if query.completed_by is not None:
        filters.append(TaskRow.completed_by == query.completed_by)
    return filters


@dataclasses.dataclass(frozen=True)
class DueStep:
    """A step whose deadline has passed, in a process now locked for its timeout."""

    org_id: str
    process_id: uuid.UUID
    step: str


async def lock_due_steps(connection: AsyncConnection, now: datetime, limit: int) -> list[DueStep]:
    """Up to `limit` steps whose deadline is `now` or earlier, oldest first,
    with their processes' row locks taken until the transaction ends.

    SKIP LOCKED: a process another worker holds (timing it out or changing it)
    is left to that worker or the next round, so each timeout is applied by
    whichever worker gets there first; the domain's `time_out` turns a step
    that is no longer due by then into nothing.
    """
    rows = await connection.execute(_LOCK_DUE_STEPS, {"now": now, "limit": limit})
    return [DueStep(row.org_id, row.process_id, row.key) for row in rows]


def _task(row: Sequence[Any]) -> Task:
    """The task of a row of _TASK_COLUMNS: by position, its status and outcome
    by dict lookups, as a list reads fifty (see storage.processes._summary)."""
    task_id, process_id, org_id, namespace, process_name, step, label, created_at = row[:8]
    status, opened_at, completed_at, outcome, comment, completed_by, token_id = row[8:]
    return Task(
        task_id,
        process_id,
        org_id,
        namespace,
        process_name,
        step,
        label,
        created_at,
        _STATUSES[status],
        opened_at,
        completed_at,
        _OUTCOMES[outcome],
        comment,
        completed_by,
        token_id,
    )


def task_state(task: Task) -> dict[str, Any]:
    """The task's key and the columns that change as it moves."""
    values = task_values(task)
    return {column: values[column] for column in ("task_id", *TASK_STATE)}


def task_values(task: Task) -> dict[str, Any]:
    """The task's row, column by column."""
    values = {name: getattr(task, name) for name in _TASK_FIELDS}
    return values | {
        "status": task.status.value,
        "outcome": task.outcome.value if task.outcome is not None else None,
    }
