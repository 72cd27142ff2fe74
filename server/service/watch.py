"""The watch streams: one process as it runs, or an organization's changes.

Each stream is an async iterator of domain values; transport turns them
into messages. A stream registers with the hub before it reads anything,
so no change can fall between what it read and what it is woken for.
"""

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

from server.domain.processes import Event, Process, ProcessStatus, check_after_seq
from server.domain.tokens import Caller
from server.domain.watch import ChangeFilter, Heartbeat, ProcessChange
from server.service.feed import READ_BATCH
from server.service.hub import ProcessWatcher, WatchHub
from server.service.processes import load_process
from server.service.writes import Clock
from server.storage import processes
from server.storage.database import Database


class WatchService:
    def __init__(
        self, database: Database, hub: WatchHub, clock: Clock, *, heartbeat_seconds: float
    ) -> None:
        self._database = database
        self._hub = hub
        self._clock = clock
        self._heartbeat_seconds = heartbeat_seconds

    async def process(
        self, caller: Caller, process_id: uuid.UUID, after_seq: int | None
    ) -> AsyncGenerator[Process | Event | Heartbeat, None]:
        """The process (without `after_seq`) or its events after `after_seq`,
        then its events as they are logged, until the one that finishes it
        (or the caller's token is revoked).

        A heartbeat goes out first if there is nothing else to send, and
        whenever nothing else has for `heartbeat_seconds`.
        """
        if after_seq is not None:
            check_after_seq(after_seq)
        async with self._hub.watch_process(process_id, caller.token_id) as watcher:
            # One snapshot: the steps agree with the process's update count.
            async with self._database.transaction(isolation="REPEATABLE READ") as connection:
                process = await load_process(
                    connection, caller.org_id, process_id, for_update=False
                )
            if after_seq is None:
                yield process
                watcher.seen_seq = process.update_count
            else:
                check_after_seq(after_seq, process.update_count)
                watcher.seen_seq = after_seq
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            caught_up = False
            while True:
                async for event in self._events_after(watcher, shared=caught_up):
                    yield event
                    quiet_since = loop.time()
                    if event.finishes_process:
                        return
                if not caught_up:
                    caught_up = True
                    # Finished before the stream began: every event is sent.
                    if process.status is not ProcessStatus.RUNNING:
                        return
                    if watcher.seen_seq == after_seq:  # nothing sent yet
                        yield Heartbeat(self._clock())
                        quiet_since = loop.time()
                while not await watcher.wait(self._heartbeat_seconds - (loop.time() - quiet_since)):
                    if loop.time() - quiet_since >= self._heartbeat_seconds:
                        yield Heartbeat(self._clock())
                        quiet_since = loop.time()

    async def _events_after(self, watcher: ProcessWatcher, *, shared: bool) -> AsyncIterator[Event]:
        """The events logged after the watcher's `seen_seq`, all of them, in
        order: from the process's feed if `shared` and it has them, else
        from the log."""
        if shared and (events := await watcher.feed.after(watcher.seen_seq)) is not None:
            if events:
                watcher.seen_seq = events[-1].seq
            for event in events:
                yield event
            return
        while True:
            async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
                batch = await processes.events_after(
                    connection, watcher.process_id, watcher.seen_seq, READ_BATCH
                )
            if batch.events:
                watcher.seen_seq = batch.events[-1].seq
            for event in batch.events:
                yield event
            if not batch.more:
                return

    async def organization(
        self, caller: Caller, change_filter: ChangeFilter
    ) -> AsyncGenerator[ProcessChange | Heartbeat, None]:
        """Every change matching the filter from now on, with heartbeats: the
        first at once, to say that changes are being followed (until the
        caller's token is revoked)."""
        async with self._hub.watch_organization(change_filter, caller.token_id) as watcher:
            yield Heartbeat(self._clock())
            while True:
                change = await watcher.next(self._heartbeat_seconds)
                yield change or Heartbeat(self._clock())
