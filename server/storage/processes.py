"""Reading and writing processes, their steps and their event log.

Functions on the connection of a transaction that the service layer opened.
"""

import dataclasses
import functools
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, LiteralString

from psycopg.types.json import Jsonb
from sqlalchemy import FromClause
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.processes import (
    EVENT_OVERHEAD_BYTES,
    MAX_EVENTS_PAGE_BYTES,
    Change,
    Event,
    EventBatch,
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
from server.storage.database import in_one_round_trip, write_later
from server.storage.json_rows import Reader, json_array, recordset, to_json
from server.storage.notifications import Notification, notify
from server.storage.tables import ProcessRow, StepRow, TaskRow
from server.storage.tasks import TASK_JSON, TASK_STATE, task_state, task_values
from server.storage.wire import Statement

# The columns that change as a process runs (all but its definition).
_PROCESS_STATE = (
    "status",
    "current_step",
    "current_step_label",
    "open_task_count",
    "finished_at",
    "summary",
    "error",
    "reason",
    "update_count",
)
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
    "completed_by_token_id",
    "started_by_token_id",
    "deadline_at",
)


# Up to `limit` events after `after_seq`, cut where their sizes (see
# MAX_EVENTS_PAGE_BYTES) pass `max_bytes`, but never before the first; one
# more is read (not returned), and `found` counts them, to tell if more follow.
# process_events' columns in the table's order, as `event_of` reads them.
_EVENT_COLUMNS = ("process_id", "seq", "type", "step", "payload", "recorded_at", "actor")
# The events of a batch of (process_id, seq) keys: a primary-key probe each.
_EVENTS = f"""
SELECT {", ".join(_EVENT_COLUMNS)} FROM process_events
WHERE (process_id, seq) IN (SELECT * FROM unnest(%(process_ids)s::uuid[], %(seqs)s::integer[]))
"""  # noqa: S608
_EVENTS_AFTER = """
SELECT process_id, seq, type, step, payload, recorded_at, actor, found FROM (
  SELECT *, count(*) OVER () AS found,
    row_number() OVER (ORDER BY seq) AS position,
    sum(octet_length(payload::text) + octet_length(coalesce(step, ''))
        + octet_length(coalesce(actor, '')) + %(overhead)s)
      OVER (ORDER BY seq) AS bytes
  FROM (
    SELECT * FROM process_events
    WHERE process_id = %(process_id)s AND seq > %(after_seq)s
    ORDER BY seq LIMIT %(limit)s + 1
  ) AS next_events
) AS sized
WHERE position <= %(limit)s AND (position = 1 OR bytes <= %(max_bytes)s)
ORDER BY seq
"""

# Get and Update in SQL for Wire, which prepares them: a Get is one
# statement, an Update one to load and one to write. Through SQLAlchemy and a
# statement per table they cost several times what PostgreSQL spends on them.

# StepRow's columns carry the names of Step's fields; a step's task has a row
# of its own, which the step names by task_id.
_STEP_FIELDS = [field.name for field in dataclasses.fields(Step) if field.name != "task"]
_STEP_JSON = Reader(StepRow.__table__, _STEP_FIELDS, {"status": StepStatus})
_PROCESS_COLUMNS = (
    "process_id",
    "org_id",
    "namespace",
    "name",
    "started_at",
    "status",
    "finished_at",
    "summary",
    "error",
    "reason",
    "update_count",
    "created_by_token_id",
    "created_by",
    "labels",
    "url",
)
# The process, and its steps in order with their tasks: each step a JSON
# array of its columns and its task's (NULL for a step without a task).
# (The SQL of these statements is made of the schema's column names alone.)
_TASK_OF_STEP = (
    f"CASE WHEN t.task_id IS NULL THEN NULL ELSE {json_array('t', TASK_JSON.columns)} END"
)
_SELECT_PROCESSES = f"""
SELECT {", ".join(f"p.{column}" for column in _PROCESS_COLUMNS)},
  (SELECT json_agg(
            json_build_array({json_array("s", _STEP_JSON.columns)}, {_TASK_OF_STEP})
            ORDER BY s.position)
     FROM steps AS s LEFT JOIN tasks AS t ON t.task_id = s.task_id
    WHERE s.process_id = p.process_id)
FROM processes AS p
"""  # noqa: S608
_LOAD = _SELECT_PROCESSES + "WHERE p.process_id = %(process_id)s AND p.org_id = %(org_id)s"
# Whole batches at once, for retention's archive: one round trip, not one each.
_LOAD_MANY = _SELECT_PROCESSES + "WHERE p.process_id = ANY(%(process_ids)s)"
# Not part of _LOAD: its steps would come from the snapshot taken before the
# lock was granted, missing what the change that held it did to them. A
# statement that follows the lock sees that change.
_LOCK = "SELECT FROM processes WHERE process_id = %(process_id)s AND org_id = %(org_id)s FOR UPDATE"
# A process's update count is the seq of its last event.
_LAST_SEQS = (
    "SELECT process_id, update_count FROM processes WHERE process_id = ANY(%(process_ids)s)"
)


def _new_rows(table: FromClause, name: str, parameter: str) -> str:
    """SQL inserting into `table` (named `name`) the rows given as a JSON
    array of objects, one key per column, in the parameter `parameter`."""
    columns = [column.name for column in table.columns]
    return (
        f"INSERT INTO {name} ({', '.join(columns)})"  # noqa: S608 - the schema's names alone
        f" SELECT * FROM jsonb_to_recordset(%({parameter})s::jsonb)"
        f" AS new_row({recordset(table, columns)})"
    )


# A new process in one statement: its row, its steps and its tasks, each
# given as JSON rows (a step's task is stored after the step it names).
_ADD = f"""
WITH process AS ({_new_rows(ProcessRow.__table__, "processes", "process")}),
steps AS ({_new_rows(StepRow.__table__, "steps", "steps")})
{_new_rows(TaskRow.__table__, "tasks", "tasks")}
"""
# A change in one statement: the process's state, the steps and tasks it
# moved (given as JSON), and its event. Only state columns are set:
# rewriting indexed columns would make PostgreSQL update every index of the row.
_RECORD = f"""
WITH process AS (
  UPDATE processes SET {", ".join(f"{column} = %({column})s" for column in _PROCESS_STATE)}
  WHERE process_id = %(process_id)s
), steps AS (
  UPDATE steps AS s SET {", ".join(f"{column} = u.{column}" for column in _STEP_STATE)}
  FROM jsonb_to_recordset(%(steps)s::jsonb)
    AS u({recordset(StepRow.__table__, ("position", *_STEP_STATE))})
  WHERE s.process_id = %(process_id)s AND s.position = u.position
), tasks AS (
  UPDATE tasks AS t SET {", ".join(f"{column} = u.{column}" for column in TASK_STATE)}
  FROM jsonb_to_recordset(%(tasks)s::jsonb)
    AS u({recordset(TaskRow.__table__, ("task_id", *TASK_STATE))})
  WHERE t.task_id = u.task_id
)
INSERT INTO process_events (process_id, seq, type, step, payload, recorded_at, actor)
VALUES (%(process_id)s, %(seq)s, %(type)s, %(step)s, %(payload)s, %(recorded_at)s, %(actor)s)
"""  # noqa: S608


def add(connection: AsyncConnection, process: Process) -> None:
    """Stores a new process, its steps and the tasks of its human steps, and
    notifies watchers once committed. One statement, which travels with the
    transaction's next round trip (`write_later`): a Create's COMMIT."""
    steps = [
        _step_values(process.process_id, position, step)
        for position, step in enumerate(process.steps)
    ]
    parameters = {
        "process": to_json([_process_values(process)]),
        "steps": to_json(steps),
        "tasks": to_json([task_values(task) for task in process.tasks]),
    }
    write_later(connection, (_ADD, parameters))
    notify(connection, Notification(process.org_id, process.process_id, 0))


def record_change(connection: AsyncConnection, process: Process, change: Change) -> None:
    """Writes what a change did to a process: its state, the steps and tasks
    the change moved, and its event; notifies watchers once committed. The write
    travels with the transaction's next round trip (`write_later`): nothing
    reads its result, and an Update's COMMIT so carries it."""
    event = change.event
    state = _process_values(process)
    steps = [_step_state(position, process.steps[position]) for position in change.step_positions]
    parameters = {column: state[column] for column in _PROCESS_STATE} | {
        "process_id": process.process_id,
        "steps": to_json(steps),
        "tasks": to_json([task_state(task) for task in change.tasks]),
        "seq": event.seq,
        "type": event.type.value,
        "step": event.step,
        "payload": Jsonb(event.payload),
        "recorded_at": event.recorded_at,
        "actor": event.actor,
    }
    write_later(connection, (_RECORD, parameters))
    notify(connection, Notification(process.org_id, process.process_id, event.seq))


async def events_after(
    connection: AsyncConnection, process_id: uuid.UUID, after_seq: int, limit: int
) -> EventBatch:
    """Up to `limit` events of the process after `after_seq`, in seq order, and
    no more than MAX_EVENTS_PAGE_BYTES of them but the first."""
    parameters = {
        "process_id": process_id,
        "after_seq": after_seq,
        "limit": limit,
        "max_bytes": MAX_EVENTS_PAGE_BYTES,
        "overhead": EVENT_OVERHEAD_BYTES,
    }
    rows = await in_one_round_trip(connection, (_EVENTS_AFTER, parameters))
    events = [event_of(row) for row in rows]
    return EventBatch(events=events, more=bool(rows) and rows[0][-1] > len(rows))


async def last_seqs(
    connection: AsyncConnection, process_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """The seq of the last event of each of these processes (0: none yet), by id."""
    rows = await in_one_round_trip(connection, (_LAST_SEQS, {"process_ids": process_ids}))
    return dict(rows)


async def events(
    connection: AsyncConnection, keys: Sequence[tuple[uuid.UUID, int]]
) -> dict[tuple[uuid.UUID, int], Event]:
    """The events with these (process_id, seq) keys, by key."""
    if not keys:
        return {}
    process_ids, seqs = zip(*keys, strict=True)
    parameters = {"process_ids": list(process_ids), "seqs": list(seqs)}
    rows = await in_one_round_trip(connection, (_EVENTS, parameters))
    return {(row[0], row[1]): event_of(row) for row in rows}


def event_of(row: Sequence[Any]) -> Event:
    """The event in a row of process_events' columns, in the table's order
    (_EVENT_COLUMNS; any columns after them are ignored)."""
    _, seq, kind, step, payload, recorded_at, actor = row[:7]
    return Event(
        seq=seq,
        type=event_type(kind),
        step=step,
        payload=payload,
        recorded_at=recorded_at,
        actor=actor,
    )


async def summaries(
    connection: AsyncConnection, org_id: str, process_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, ProcessSummary]:
    """The organization's processes among `process_ids`, as a list shows them, by id."""
    parameters = {"org_id": org_id, "process_ids": list(process_ids)}
    rows = await in_one_round_trip(connection, (_SUMMARIES, parameters))
    return {row[0]: _summary(row) for row in rows}


async def page_and_total(
    connection: AsyncConnection, query: ListQuery
) -> tuple[list[ProcessSummary], int]:
    """The query's page of matches (and one more if another page follows), and
    how many processes match over all pages: one statement, so one snapshot
    for both, and one round trip."""
    rows = await in_one_round_trip(connection, list_statement(query))
    return [_summary(row[1:]) for row in rows if row[1] is not None], int(rows[0][0])


# List in SQL for Wire, which prepares it: one statement per filter
# shape, written once. Built and compiled by SQLAlchemy on every call, it cost
# more than PostgreSQL takes to run it. A shape is which filters are given,
# whether a page token bounds the walk, and the sort order.
# ProcessSummary's fields in order, each a column of processes: a list's
# row builds a summary by position.
_SUMMARY_FIELDS = tuple(field.name for field in dataclasses.fields(ProcessSummary))
_STATUSES = {status.value: status for status in ProcessStatus}
_SUMMARIES = (
    f"SELECT {', '.join(_SUMMARY_FIELDS)} FROM processes"  # noqa: S608
    " WHERE org_id = %(org_id)s::text AND process_id = ANY(%(process_ids)s::uuid[])"
)


@dataclasses.dataclass(frozen=True)
class _ListShape:
    status: bool
    namespace: bool
    search: bool
    labels: bool
    after: bool
    newest_first: bool


def _shape(query: ListQuery) -> _ListShape:
    return _ListShape(
        status=query.status is not None,
        namespace=query.namespace is not None,
        search=query.search is not None,
        labels=bool(query.labels),
        after=query.after is not None,
        newest_first=query.sort is SortOrder.NEWEST,
    )


def _list_parameters(query: ListQuery) -> dict[str, Any]:
    """The values of every statement of the query's shape (each uses some)."""
    after = query.after
    return {
        "org_id": query.org_id,
        "status": query.status.value if query.status is not None else None,
        "namespace": query.namespace,
        "pattern": _search_pattern(query.search) if query.search is not None else None,
        "labels": Jsonb(dict(query.labels)),
        "after_started_at": after.started_at if after is not None else None,
        "after_process_id": after.process_id if after is not None else None,
        # One more than the page, to tell if more follow.
        "limit": query.limit + 1,
        "offset": query.offset,
    }


def list_statement(query: ListQuery) -> Statement:
    """The page (`list_page_statement`) beside the total (`list_total_statement`)
    on each of its rows; an empty page still gives one row, of the total alone."""
    return _list_sql(_shape(query)), _list_parameters(query)


def list_page_statement(query: ListQuery) -> Statement:
    """A page of the query's matches, plus one row to tell if more follow.

    Each filter combination walks one index of `processes` in sort order
    (tests/e2e/test_query_plans.py holds the plans to that); a page token
    turns the offset into a bound on that walk, so depth costs nothing.
    """
    return _page_sql(_shape(query)), _list_parameters(query)


def list_total_statement(query: ListQuery) -> Statement:
    """How many processes match, read from counters that triggers keep: per
    namespace and status, with a search per name too, with labels per label
    set too. Labels and a search together count the matching processes."""
    return _total_sql(_shape(query)), _list_parameters(query)


@functools.cache
def _list_sql(shape: _ListShape) -> LiteralString:
    return f"""
SELECT ({_total_sql(shape)}) AS total, page.*
FROM (SELECT 1) AS one_row LEFT JOIN ({_page_sql(shape)}) AS page ON true
ORDER BY {_order(shape, "page.")}
"""  # noqa: S608


@functools.cache
def _page_sql(shape: _ListShape) -> LiteralString:
    conditions = _filters(shape)
    if shape.after:
        bound = "(%(after_started_at)s::timestamptz, %(after_process_id)s::uuid)"
        conditions.append(f"(started_at, process_id) {'<' if shape.newest_first else '>'} {bound}")
    return f"""
SELECT {", ".join(_SUMMARY_FIELDS)}
FROM processes WHERE {" AND ".join(conditions)}
ORDER BY {_order(shape, "")} LIMIT %(limit)s::integer OFFSET %(offset)s::integer
"""  # noqa: S608


@functools.cache
def _total_sql(shape: _ListShape) -> LiteralString:
    if shape.labels and shape.search:
        return f"SELECT count(*) FROM processes WHERE {' AND '.join(_filters(shape))}"  # noqa: S608
    counted = _counted(shape)
    if shape.labels:
        counts = "process_label_counts"
        counted.append("labels @> %(labels)s::jsonb")
    elif shape.search:
        # ILIKE folds the name and the pattern with lower(); the counts keep
        # the name folded, so only the pattern is folded here.
        counts = "process_name_counts"
        counted.append("folded_name LIKE lower(%(pattern)s::text) ESCAPE '\\'")
    else:
        counts = "process_counts"
    return f"SELECT coalesce(sum(count), 0) FROM {counts} WHERE {' AND '.join(counted)}"  # noqa: S608


def _counted(shape: _ListShape) -> list[LiteralString]:
    """The conditions that both processes and their counters have columns for."""
    conditions: list[LiteralString] = ["org_id = %(org_id)s::text"]
    if shape.status:
        conditions.append("status = %(status)s::text")
    if shape.namespace:
        conditions.append("namespace = %(namespace)s::text")
    return conditions


def _filters(shape: _ListShape) -> list[LiteralString]:
    conditions = _counted(shape)
    if shape.search:
        conditions.append("name ILIKE %(pattern)s::text ESCAPE '\\'")
    if shape.labels:
        conditions.append("labels @> %(labels)s::jsonb")
    return conditions


def _order(shape: _ListShape, prefix: LiteralString) -> LiteralString:
    direction = "DESC" if shape.newest_first else "ASC"
    return f"{prefix}started_at {direction}, {prefix}process_id {direction}"


def _summary(row: Sequence[Any]) -> ProcessSummary:
    """A process as a list shows it, from its _SUMMARY_FIELDS in order: by
    position, as a dict of them per row costs more than the rest of the row's
    Python; the status by a dict lookup, the enum's call costs as much again."""
    process_id, namespace, name, status, *rest = row
    return ProcessSummary(process_id, namespace, name, _STATUSES[status], *rest)


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
    `for_update` takes its row lock first (both statements in one round trip)."""
    keys = {"org_id": org_id, "process_id": process_id}
    lock: tuple[Statement, ...] = ((_LOCK, keys),) if for_update else ()
    rows = await in_one_round_trip(connection, *lock, (_LOAD, keys))
    return _process_of(rows[0]) if rows else None


async def load_many(
    connection: AsyncConnection, process_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Process]:
    """The processes with these ids, whatever their organization, by id."""
    rows = await in_one_round_trip(connection, (_LOAD_MANY, {"process_ids": list(process_ids)}))
    loaded = [_process_of(row) for row in rows]
    return {process.process_id: process for process in loaded}


def _process_of(row: Sequence[Any]) -> Process:
    """A process from a row of _SELECT_PROCESSES."""
    process = dict(zip(_PROCESS_COLUMNS, row[:-1], strict=True))
    process["status"] = _STATUSES[process["status"]]
    return Process(**process, steps=[_step_of(step_and_task) for step_and_task in row[-1]])


def _step_of(step_and_task: list[Any]) -> Step:
    """A step from the JSON arrays of its columns and of its task's."""
    columns, task = step_and_task
    return Step(
        **_STEP_JSON.values(columns),
        task=Task(**TASK_JSON.values(task)) if task is not None else None,
    )


def _process_values(process: Process) -> dict[str, Any]:
    return {
        "process_id": process.process_id,
        "org_id": process.org_id,
        "namespace": process.namespace,
        "name": process.name,
        "status": process.status.value,
        "current_step": process.current_step,
        "current_step_label": process.current_step_label,
        "open_task_count": process.open_task_count,
        "step_count": len(process.steps),
        "task_ids": process.task_ids,
        "started_at": process.started_at,
        "finished_at": process.finished_at,
        "summary": process.summary,
        "error": process.error,
        "reason": process.reason,
        "update_count": process.update_count,
        "created_by_token_id": process.created_by_token_id,
        "created_by": process.created_by,
        "labels": process.labels,
        "url": process.url,
    }


def _step_values(process_id: uuid.UUID, position: int, step: Step) -> dict[str, Any]:
    values = {name: getattr(step, name) for name in _STEP_FIELDS}
    return values | {
        "process_id": process_id,
        "position": position,
        "status": step.status.value,
        "task_id": step.task_id,
    }


def _step_state(position: int, step: Step) -> dict[str, Any]:
    """The step's position and state columns, as _RECORD reads them."""
    values = {column: getattr(step, column) for column in _STEP_STATE}
    return values | {"position": position, "status": step.status.value}
