"""Reading and writing processes, their steps and their event log.

Functions on the connection of a transaction that the service layer opened.
"""

import dataclasses
import uuid
from collections.abc import Iterable, Sequence
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

from server.domain.processes import (
    Event,
    ListQuery,
    Process,
    ProcessStatus,
    ProcessSummary,
    SortOrder,
    Step,
    StepStatus,
    event_type,
)
from server.domain.tasks import Task
from server.storage.counts import counted_total
from server.storage.notifications import NOTIFY, Notification
from server.storage.tables import (
    ProcessCount,
    ProcessEvent,
    ProcessNameCount,
    ProcessRow,
    StepRow,
)
from server.storage.tasks import insert_tasks, tasks_of_process

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
_INSERT_STEP = insert(StepRow)


def _notifying(row: Any) -> Select[Any]:
    """Inserts the row and notifies its change, in one statement (one round trip)."""
    table = row.__table__
    inserted = (
        insert(table)
        .values({column.name: bindparam(column.name) for column in table.columns})
        .returning(table.c.process_id)
        .cte("inserted")
    )
    return select(NOTIFY).select_from(inserted)


_INSERT_PROCESS = _notifying(ProcessRow)
_INSERT_EVENT = _notifying(ProcessEvent)
_EVENTS_AFTER = (
    select(*ProcessEvent.__table__.columns)
    .where(
        ProcessEvent.process_id == bindparam("process_id"),
        ProcessEvent.seq > bindparam("after_seq"),
    )
    .order_by(ProcessEvent.seq)
    .limit(bindparam("limit"))
)
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


async def add(connection: AsyncConnection, process: Process) -> None:
    """Stores a new process, its steps and the tasks of its human steps, and
    notifies watchers at commit."""
    notification = Notification(process.org_id, process.process_id, 0)
    await connection.execute(
        _INSERT_PROCESS, _process_values(process) | {"notification": notification.encode()}
    )
    await connection.execute(
        _INSERT_STEP,
        [
            _step_values(process.process_id, position, step)
            for position, step in enumerate(process.steps)
        ],
    )
    await insert_tasks(connection, process.tasks)


async def save_change(
    connection: AsyncConnection, process: Process, step_positions: Sequence[int]
) -> None:
    """Writes back the state of a process and of the steps at `step_positions`.

    Only the state columns: every parameter named after a column would join
    the SET list, and rewriting indexed columns makes PostgreSQL update
    every index of the row.
    """
    state = _process_values(process)
    await connection.execute(
        _UPDATE_PROCESS,
        {column: state[column] for column in _PROCESS_STATE}
        | {"key_process_id": process.process_id},
    )
    if step_positions:
        await connection.execute(
            _UPDATE_STEP,
            [
                _step_state(process.process_id, position, process.steps[position])
                for position in step_positions
            ],
        )


async def append_event(
    connection: AsyncConnection, org_id: str, process_id: uuid.UUID, event: Event
) -> None:
    """Appends the event to the process's log, and notifies watchers at commit."""
    await connection.execute(
        _INSERT_EVENT,
        {
            "process_id": process_id,
            "seq": event.seq,
            "type": event.type.value,
            "step": event.step,
            "payload": event.payload,
            "recorded_at": event.recorded_at,
            "notification": Notification(org_id, process_id, event.seq).encode(),
        },
    )


async def events_after(
    connection: AsyncConnection, process_id: uuid.UUID, after_seq: int, limit: int
) -> list[Event]:
    """Up to `limit` events of the process after `after_seq`, in seq order."""
    rows = await connection.execute(
        _EVENTS_AFTER, {"process_id": process_id, "after_seq": after_seq, "limit": limit}
    )
    return [_event(row) for row in rows]


async def events(
    connection: AsyncConnection, keys: Sequence[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], Event]:
    """The events with these (process_id, seq) keys, by key."""
    if not keys:
        return {}
    key = tuple_(ProcessEvent.process_id, ProcessEvent.seq)
    statement = select(*ProcessEvent.__table__.columns).where(key.in_(keys))
    return {(row.process_id, row.seq): _event(row) for row in await connection.execute(statement)}


def _event(row: Row[Any]) -> Event:
    return Event(
        seq=row.seq,
        type=event_type(row.type),
        step=row.step,
        payload=row.payload,
        recorded_at=row.recorded_at,
    )


async def summaries(
    connection: AsyncConnection, org_id: str, process_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, ProcessSummary]:
    """The organization's processes among `process_ids`, as a list shows them, by id."""
    statement = select(*_SUMMARY_COLUMNS).where(
        ProcessRow.org_id == org_id, ProcessRow.process_id.in_(list(process_ids))
    )
    return {row.process_id: _summary(row) for row in await connection.execute(statement)}


async def page(connection: AsyncConnection, query: ListQuery) -> list[ProcessSummary]:
    """The query's page of matches, and one more if another page follows."""
    rows = (await connection.execute(list_page_statement(query))).all()
    return [_summary(row) for row in rows]


def _summary(row: Any) -> ProcessSummary:  # a row of _SUMMARY_COLUMNS
    return ProcessSummary(
        process_id=row.process_id,
        namespace=row.namespace,
        name=row.name,
        status=ProcessStatus(row.status),
        current_step=row.current_step,
        started_at=row.started_at,
        step_count=row.step_count,
        task_ids=list(row.task_ids),
    )


async def total(connection: AsyncConnection, query: ListQuery) -> int:
    """How many processes match the query, over all pages."""
    return int((await connection.execute(list_total_statement(query))).scalar_one())


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
    """How many processes match, read from counters that triggers keep: per
    namespace and status, and with a search, per name too."""
    status = query.status.value if query.status is not None else None
    if query.search is None:
        return counted_total(ProcessCount, query.org_id, status=status, namespace=query.namespace)
    named = counted_total(ProcessNameCount, query.org_id, status=status, namespace=query.namespace)
    # ILIKE folds the name and the pattern with lower(); the counts keep the
    # name folded, so only the pattern is folded here.
    return named.where(
        ProcessNameCount.folded_name.like(func.lower(_search_pattern(query.search)), escape="\\")
    )


def _filters(query: ListQuery) -> list[ColumnElement[bool]]:
    filters = [ProcessRow.org_id == query.org_id]
    if query.status is not None:
        filters.append(ProcessRow.status == query.status.value)
    if query.namespace is not None:
        filters.append(ProcessRow.namespace == query.namespace)
    if query.search is not None:
        filters.append(ProcessRow.name.ilike(_search_pattern(query.search), escape="\\"))
    return filters


def _search_pattern(search: str) -> str:
    """The LIKE pattern of names containing `search`."""
    return f"%{_escape_like(search)}%"


def _escape_like(text: str) -> str:
    """Makes LIKE's wildcards and its escape character match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def load(
    connection: AsyncConnection, org_id: str, process_id: uuid.UUID, *, for_update: bool
) -> Process | None:
    """The organization's process with its steps, if it has one by that id;
    `for_update` takes its row lock."""
    keys = {"org_id": org_id, "process_id": process_id}
    row = (
        await connection.execute(_LOAD_PROCESS_FOR_UPDATE if for_update else _LOAD_PROCESS, keys)
    ).one_or_none()
    if row is None:
        return None
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
