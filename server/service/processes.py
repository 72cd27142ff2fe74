"""Processes: listing, reading, creating and updating them, each in one transaction."""

import uuid
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import NotFound
from server.domain.idempotency import IdempotencyKey
from server.domain.processes import (
    Change,
    Event,
    EventsPage,
    ListQuery,
    Process,
    ProcessPage,
    StepDef,
    Update,
    apply_update,
    cancel,
    new_process,
    process_page,
    validate_reason,
    validate_update,
)
from server.domain.tokens import Caller
from server.domain.webhooks import WebhookEvent, messages_of
from server.service.writes import Clock, Writes, Written
from server.storage import processes, webhooks
from server.storage.database import Database


class ProcessService:
    def __init__(self, database: Database, writes: Writes, clock: Clock) -> None:
        self._database = database
        self._writes = writes
        self._clock = clock

    async def list(self, query: ListQuery) -> ProcessPage:
        # One statement reads the page and its total from one snapshot, so
        # they agree without a transaction's BEGIN and COMMIT round trips.
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            matches, total = await processes.page_and_total(connection, query)
        return process_page(query, matches, total)

    async def get(self, org_id: str, process_id: uuid.UUID) -> Process:
        # Autocommit: the process and its steps need no common snapshot (the
        # steps of a process only change under its row lock, with the
        # process), and a read so saves the BEGIN and COMMIT round trips.
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            return await load_process(connection, org_id, process_id, for_update=False)

    async def list_events(
        self, org_id: str, process_id: uuid.UUID, page: EventsPage
    ) -> Sequence[Event]:
        # Autocommit: the log only grows, so the process found by the first
        # statement has all the events the second one reads.
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            if not await processes.summaries(connection, org_id, [process_id]):
                raise NotFound(f"process {process_id} not found")
            batch = await processes.events_after(connection, process_id, page.after_seq, page.limit)
            return batch.events

    async def create(
        self,
        caller: Caller,
        *,
        namespace: str,
        name: str,
        step_defs: Sequence[StepDef],
        labels: Mapping[str, str] | None = None,
        url: str | None = None,
        key: IdempotencyKey | None,
        respond: Callable[[Process], bytes],
    ) -> bytes:
        """Starts tracking a new process; returns `respond(process)`, or the
        response remembered under `key` when this is a retry."""
        process = new_process(
            org_id=caller.org_id,
            namespace=namespace,
            name=name,
            step_defs=step_defs,
            now=self._clock(),
            created_by=caller,
            labels=labels,
            url=url,
        )

        async def write(connection: AsyncConnection) -> Written:
            processes.add(connection, process)
            webhooks.queue(
                connection,
                org_id=process.org_id,
                namespace=process.namespace,
                process_id=process.process_id,
                seq=0,
                messages=(WebhookEvent.PROCESS_CREATED,),
                now=process.started_at,
            )
            return Written(respond(process), process.process_id)

        return await self._writes.run(key, write)

    async def update(
        self,
        caller: Caller,
        process_id: uuid.UUID,
        change: Update,
        *,
        key: IdempotencyKey | None,
        respond: Callable[[Event], bytes],
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

        async def write(connection: AsyncConnection) -> Written:
            process = await load_locked(connection, caller.org_id, process_id)
            # Read under the lock, so recorded times follow the log's order.
            applied = apply_update(process, change, self._clock(), by=caller)
            record(connection, process, applied)
            return Written(respond(applied.event), process_id)

        return await self._writes.run(key, write)

    async def cancel(
        self,
        caller: Caller,
        process_id: uuid.UUID,
        reason: str | None,
        *,
        key: IdempotencyKey | None,
        respond: Callable[[Process], bytes],
    ) -> bytes:
        """Cancels a running process under its row lock (the one updates,
        task completions and timeouts take, so exactly one finish wins) and
        logs the cancel, atomically. Returns `respond(process)`, or the
        response remembered under `key` when this is a retry."""
        validate_reason(reason)  # before a connection and a lock

        async def write(connection: AsyncConnection) -> Written:
            process = await load_locked(connection, caller.org_id, process_id)
            record(connection, process, cancel(process, reason, self._clock(), by=caller))
            return Written(respond(process), process_id)

        return await self._writes.run(key, write)


def record(connection: AsyncConnection, process: Process, change: Change) -> None:
    """Writes what a change did to a process locked in this transaction: its
    state, the steps and tasks it moved, its event, and the webhook
    deliveries it causes (the outbox). Every kind of change (update, task
    completion, timeout, cancel) is recorded the same way. The writes go
    with the transaction's next round trip: its COMMIT, when nothing follows
    them."""
    processes.record_change(connection, process, change)
    webhooks.queue(
        connection,
        org_id=process.org_id,
        namespace=process.namespace,
        process_id=process.process_id,
        seq=change.event.seq,
        messages=messages_of(change),
        now=change.event.recorded_at,
    )


async def load_locked(connection: AsyncConnection, org_id: str, process_id: uuid.UUID) -> Process:
    """The process, with its row lock held until the transaction ends: every
    change to a process takes it first, so changes apply one at a time."""
    return await load_process(connection, org_id, process_id, for_update=True)


async def load_process(
    connection: AsyncConnection, org_id: str, process_id: uuid.UUID, *, for_update: bool
) -> Process:
    process = await processes.load(connection, org_id, process_id, for_update=for_update)
    if process is None:
        raise NotFound(f"process {process_id} not found")
    return process
