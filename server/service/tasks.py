"""Tasks: the human steps' work items, listed, read and completed by people."""

import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import NotFound
from server.domain.idempotency import IdempotencyKey
from server.domain.processes import complete_task
from server.domain.tasks import (
    Completion,
    Task,
    TaskPage,
    TaskQuery,
    task_page,
    validate_completion,
)
from server.domain.tokens import Caller
from server.service.processes import load_locked, record
from server.service.writes import Clock, Writes, Written
from server.storage import tasks
from server.storage.database import Database


class TaskService:
    def __init__(self, database: Database, writes: Writes, clock: Clock) -> None:
        self._database = database
        self._writes = writes
        self._clock = clock

    async def list(self, query: TaskQuery) -> TaskPage:
        # One snapshot for the page and its total, so they agree.
        async with self._database.transaction(isolation="REPEATABLE READ") as connection:
            matches = await tasks.page(connection, query)
            total = await tasks.total(connection, query)
        return task_page(query, matches, total)

    async def get(self, org_id: str, task_id: uuid.UUID) -> Task:
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            return await _get(connection, org_id, task_id)

    async def complete(
        self,
        caller: Caller,
        task_id: uuid.UUID,
        completion: Completion,
        *,
        key: IdempotencyKey | None,
        respond: Callable[[Task], bytes],
    ) -> bytes:
        """Decides an open task for the caller and moves its step, under the
        process's row lock (the one updates and timeouts take), so exactly one
        of a completion, an update ending the step and a timeout wins.

        Returns `respond(task)`, or the response remembered under `key` when
        this is a retry.
        """
        validate_completion(completion)  # before a connection and a lock

        async def write(connection: AsyncConnection) -> Written:
            task = await _get(connection, caller.org_id, task_id)
            process = await load_locked(connection, caller.org_id, task.process_id)
            change = complete_task(process, task_id, completion, caller, self._clock())
            record(connection, process, change)
            completed = process.step_of_task(task_id).task
            assert completed is not None  # step_of_task found the step by this task
            return Written(respond(completed), process.process_id)

        return await self._writes.run(key, write)


async def _get(connection: AsyncConnection, org_id: str, task_id: uuid.UUID) -> Task:
    task = await tasks.get_task(connection, org_id, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return task
