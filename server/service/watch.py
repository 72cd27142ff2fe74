"""The watch streams: one process as it runs, or an organization's changes.

Each stream is an async iterator of domain values; transport turns them
into messages. A stream registers with the hub before it reads anything,
so no change can fall between what it read and what it is woken for.
"""

import asyncio
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing

from server.domain.processes import Event, Process, ProcessStatus
from server.domain.tokens import Caller
from server.domain.watch import ChangeFilter, Heartbeat, ProcessChange, ResumePoint
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
        self, caller: Caller, process_id: uuid.UUID, resume: ResumePoint | None
    ) -> AsyncGenerator[Process | Event | Heartbeat, None]:
        """The process (without `resume`) or its events after `resume`'s seq,
        then its events as they are logged, until the one that finishes it
        (or the caller's token is revoked). A finished process with no event
        after it is sent itself, so every stream has a first message.

        A heartbeat goes out first if there is nothing else to send, and
        whenever nothing else has for `heartbeat_seconds`.
        """
        after_seq = None if resume is None else resume.seq
        async with self._hub.watch_process(process_id, caller) as watcher:
            # One snapshot: the steps agree with the process's update count.
            async with self._database.transaction(isolation="REPEATABLE READ") as connection:
                process = await load_process(
                    connection, caller.org_id, process_id, for_update=False
                )
            if resume is None:
                yield process
                watcher.seen_seq = process.update_count
            else:
                resume.check(process.update_count)
                watcher.seen_seq = resume.seq
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            caught_up = False
            while True:
                # Closed here if the stream ends while it is sending an event.
                async with aclosing(self._events_after(watcher, shared=caught_up)) as events:
                    async for event in events:
                        yield event
                        quiet_since = loop.time()
                        if event.finishes_process:
                            return
                if not caught_up:
                    caught_up = True
                    nothing_sent = watcher.seen_seq == after_seq
                    if process.status is not ProcessStatus.RUNNING:
                        # Finished before the stream began: every event is
                        # sent. A stream that had none to send still answers
                        # at once, with the process, rather than end empty.
                        if nothing_sent:
                            yield process
                        return
                    if nothing_sent:
                        yield Heartbeat(self._clock())
                        quiet_since = loop.time()
                while not await watcher.wait(self._heartbeat_seconds - (loop.time() - quiet_since)):
                    if loop.time() - quiet_since >= self._heartbeat_seconds:
                        yield Heartbeat(self._clock())
                        quiet_since = loop.time()

    async def _events_after(
        self, watcher: ProcessWatcher, *, shared: bool
    ) -> AsyncGenerator[Event, None]:
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
        async with self._hub.watch_organization(change_filter, caller) as watcher:
            yield Heartbeat(self._clock())
            while True:
                change = await watcher.next(self._heartbeat_seconds)
                yield change or Heartbeat(self._clock())
