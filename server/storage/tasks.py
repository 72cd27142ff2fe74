"""Reading and writing tasks, and finding the steps whose deadline has passed.

Plain functions on a connection whose transaction the caller owns: the
callers decide what a change means, these only move rows.
"""

import dataclasses
import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, LiteralString

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.tasks import Outcome, Task, TaskQuery, TaskStatus
from server.storage.database import in_one_round_trip
from server.storage.json_rows import Reader
from server.storage.tables import ProcessRow, StepRow, TaskRow
from server.storage.wire import Statement

# TaskRow's columns carry the names of Task's fields.
_TASK_FIELDS = tuple(field.name for field in dataclasses.fields(Task))
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
    return [_task(row) for row in await in_one_round_trip(connection, task_page_statement(query))]


async def total(connection: AsyncConnection, query: TaskQuery) -> int:
    """How many tasks match the query, over all pages."""
    [(count,)] = await in_one_round_trip(connection, task_total_statement(query))
    return int(count)


# ListTasks in SQL written once per filter shape, as List's is
# (server/storage/processes.py): which filters are given (each a column of
# `tasks`, by its SQL type), and whether a page token bounds the walk.
_TASK_FILTERS: dict[str, LiteralString] = {
    "status": "text",
    "namespace": "text",
    "process_id": "uuid",
    "outcome": "text",
    "completed_by": "text",
}


def _task_parameters(query: TaskQuery) -> dict[str, Any]:
    """The values of every statement of the query's shape (each uses some)."""
    status, after = query.status_filter, query.after
    return {
        "org_id": query.org_id,
        "status": status.value if status is not None else None,
        # The counters' status: the query's own, which `status` may narrow.
        "counted_status": query.status.value if query.status is not None else None,
        "namespace": query.namespace,
        "process_id": query.process_id,
        "outcome": query.outcome.value if query.outcome is not None else None,
        "completed_by": query.completed_by,
        "after_created_at": after.created_at if after is not None else None,
        "after_task_id": after.task_id if after is not None else None,
        # One more than the page, to tell if more follow.
        "limit": query.limit + 1,
        "offset": query.offset,
    }


def _given(parameters: dict[str, Any]) -> tuple[str, ...]:
    """The filters the query gives, in _TASK_FILTERS' order."""
    return tuple(name for name in _TASK_FILTERS if parameters[name] is not None)


def task_page_statement(query: TaskQuery) -> Statement:
    """A page of the query's matches, newest first, plus one row to tell if
    more follow. Each filter combination walks one index of `tasks`."""
    parameters = _task_parameters(query)
    return _task_page_sql(_given(parameters), query.after is not None), parameters


def task_total_statement(query: TaskQuery) -> Statement:
    """How many tasks match: read from the counters where they suffice, else
    counted: one process has at most 200 tasks, and an outcome or a decider
    walks its own index (tasks_by_outcome, tasks_by_decider)."""
    parameters = _task_parameters(query)
    if query.counted:
        return _task_count_sql(_given(parameters)), parameters
    return _task_sum_sql(query.status is not None, query.namespace is not None), parameters


@functools.cache
def _task_page_sql(given: tuple[str, ...], after: bool) -> LiteralString:
    conditions = _task_conditions(given)
    if after:
        conditions.append(
            "(created_at, task_id) < (%(after_created_at)s::timestamptz, %(after_task_id)s::uuid)"
        )
    return f"""
SELECT {", ".join(_TASK_FIELDS)}
FROM tasks WHERE {" AND ".join(conditions)}
ORDER BY created_at DESC, task_id DESC LIMIT %(limit)s::integer OFFSET %(offset)s::integer
"""  # noqa: S608


@functools.cache
def _task_count_sql(given: tuple[str, ...]) -> LiteralString:
    return f"SELECT count(*) FROM tasks WHERE {' AND '.join(_task_conditions(given))}"  # noqa: S608


@functools.cache
def _task_sum_sql(status: bool, namespace: bool) -> LiteralString:
    counted: list[LiteralString] = ["org_id = %(org_id)s::text"]
    if status:
        counted.append("status = %(counted_status)s::text")
    if namespace:
        counted.append("namespace = %(namespace)s::text")
    return f"SELECT coalesce(sum(count), 0) FROM task_counts WHERE {' AND '.join(counted)}"  # noqa: S608


def _task_conditions(given: tuple[str, ...]) -> list[LiteralString]:
    return [
        "org_id = %(org_id)s::text",
        *(f"{name} = %({name})s::{_TASK_FILTERS[name]}" for name in given),
    ]


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
    """The task of a row of _TASK_FIELDS' columns: by position, its status and outcome
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
