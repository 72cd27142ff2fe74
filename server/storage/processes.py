"""Reading and writing processes, their steps and their event log."""

import dataclasses
import uuid
from typing import Any

from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.domain.errors import NotFound
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
    utc_now,
    validate_update,
)
from server.storage.database import Database
from server.storage.tables import ProcessEvent, ProcessRow, StepRow

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
)


class ProcessStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def create(self, process: Process) -> None:
        async with self._database.transaction() as session:
            await session.execute(insert(ProcessRow).values(_process_values(process)))
            await session.execute(
                insert(StepRow),
                [
                    _step_values(process.process_id, position, step)
                    for position, step in enumerate(process.steps)
                ],
            )

    async def get(self, org_id: str, process_id: uuid.UUID) -> Process:
        async with self._database.transaction() as session:
            return await _load(session, org_id, process_id, for_update=False)

    async def update(self, org_id: str, process_id: uuid.UUID, change: Update) -> Event:
        """Applies one update under the process's row lock and logs it, atomically.

        The lock serializes concurrent updates of one process, so none is
        lost and the event log's order is the order they were applied in.
        """
        # A malformed update is refused before it takes a connection and a lock;
        # apply_update checks again (microseconds) so that it is safe on its own.
        validate_update(change)
        async with self._database.transaction() as session:
            process = await _load(session, org_id, process_id, for_update=True)
            # Taken under the lock, so recorded times follow the log's order.
            applied = apply_update(process, change, utc_now())
            state = _process_values(process)
            await session.execute(
                update(ProcessRow)
                .where(ProcessRow.process_id == process_id)
                .values({column: state[column] for column in _PROCESS_STATE})
            )
            if applied.step_position is not None:
                step = process.steps[applied.step_position]
                step_state = _step_values(process_id, applied.step_position, step)
                await session.execute(
                    update(StepRow)
                    .where(
                        StepRow.process_id == process_id,
                        StepRow.position == applied.step_position,
                    )
                    .values({column: step_state[column] for column in _STEP_STATE})
                )
            event = applied.event
            await session.execute(
                insert(ProcessEvent).values(
                    process_id=process_id,
                    seq=event.seq,
                    type=event.type.value,
                    step=event.step,
                    payload=event.payload,
                    recorded_at=event.recorded_at,
                )
            )
            return event

    async def list(self, query: ListQuery) -> ProcessPage:
        matching = _matching(query)
        newest_first = query.sort is SortOrder.NEWEST
        page = (
            matching.order_by(
                ProcessRow.started_at.desc() if newest_first else ProcessRow.started_at.asc(),
                ProcessRow.process_id.desc() if newest_first else ProcessRow.process_id.asc(),
            )
            .limit(query.limit)
            .offset(query.offset)
        )
        count = select(func.count()).select_from(matching.subquery())
        async with self._database.transaction(snapshot=True) as session:
            rows = (await session.execute(page)).scalars().all()
            total = (await session.execute(count)).scalar_one()
        return ProcessPage(
            processes=[
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
                for row in rows
            ],
            total=total,
        )


def _matching(query: ListQuery) -> Select[ProcessRow]:
    statement = select(ProcessRow).where(ProcessRow.org_id == query.org_id)
    if query.status is not None:
        statement = statement.where(ProcessRow.status == query.status.value)
    if query.namespace is not None:
        statement = statement.where(ProcessRow.namespace == query.namespace)
    if query.search is not None:
        statement = statement.where(
            ProcessRow.name.ilike(f"%{_escape_like(query.search)}%", escape="\\")
        )
    return statement


def _escape_like(text: str) -> str:
    """Makes LIKE's wildcards and its escape character match themselves."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def _load(
    session: AsyncSession, org_id: str, process_id: uuid.UUID, *, for_update: bool
) -> Process:
    statement = select(ProcessRow).where(
        ProcessRow.process_id == process_id, ProcessRow.org_id == org_id
    )
    if for_update:
        statement = statement.with_for_update()
    row = (await session.execute(statement)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"process {process_id} not found")
    steps = (
        await session.execute(
            select(StepRow).where(StepRow.process_id == process_id).order_by(StepRow.position)
        )
    ).scalars()
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
        steps=[_step(step) for step in steps],
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


# StepRow's columns carry the names of Step's fields.
_STEP_FIELDS = [field.name for field in dataclasses.fields(Step)]


def _step(row: StepRow) -> Step:
    values = {name: getattr(row, name) for name in _STEP_FIELDS}
    return Step(**values | {"status": StepStatus(row.status)})


def _step_values(process_id: uuid.UUID, position: int, step: Step) -> dict[str, Any]:
    values = {name: getattr(step, name) for name in _STEP_FIELDS}
    return values | {"process_id": process_id, "position": position, "status": step.status.value}
