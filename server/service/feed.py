"""A process's latest events, read from the log once for all its watchers in a server process.

Ten watchers of one process, woken by one notification, would otherwise
run ten identical queries. The feed keeps the events it read last, without
gaps, and reads on when a notification announces more (or when
notifications may have been missed): one query per change and server
process. A watcher the feed cannot serve (one behind what it keeps, or
replaying history) reads the log itself, as before.
"""

import asyncio
import uuid
from collections import deque

from server.domain.processes import Event
from server.storage import processes
from server.storage.database import Database

# Events kept: plenty for watchers that are a little behind.
KEPT_EVENTS = 256
# Events read from the log at a time (fewer if they are large: see
# MAX_EVENTS_PAGE_BYTES).
READ_BATCH = 500


class ProcessFeed:
    def __init__(self, database: Database, process_id: uuid.UUID) -> None:
        self._database = database
        self.process_id = process_id
        self._kept: deque[Event] = deque(maxlen=KEPT_EVENTS)
        # The log has been read up to here (None: not yet).
        self._read_seq: int | None = None
        # The log holds at least this much, as far as the server knows.
        self._announced_seq = 0
        self._reading: asyncio.Task[None] | None = None

    def announce(self, seq: int) -> None:
        """A notification said that event `seq` is logged."""
        self._announced_seq = max(self._announced_seq, seq)

    def doubt(self) -> None:
        """Notifications may have been missed: read on, whatever was announced."""
        if self._read_seq is not None:
            self._announced_seq = max(self._announced_seq, self._read_seq + 1)

    async def after(self, seq: int) -> list[Event] | None:
        """The events logged after `seq`, all of them; None if the feed does
        not keep them all (the caller reads the log itself)."""
        if self._read_seq is None or self._announced_seq > self._read_seq:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.create_task(self._read_on(seq))
                self._reading.add_done_callback(_consume_error)
            # Shielded: one watcher leaving must not stop the read for the others.
            await asyncio.shield(self._reading)
        if self._read_seq is None or seq > self._read_seq:
            return None
        first_kept = self._kept[0].seq if self._kept else self._read_seq + 1
        if first_kept > seq + 1:
            return None
        return [event for event in self._kept if event.seq > seq]

    async def _read_on(self, seq: int) -> None:
        """Reads every event after what the feed has (after `seq` the first time)."""
        announced = self._announced_seq
        read_seq = seq if self._read_seq is None else self._read_seq
        while True:
            async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
                batch = await processes.events_after(
                    connection, self.process_id, read_seq, READ_BATCH
                )
            self._kept.extend(batch.events)
            read_seq = batch.events[-1].seq if batch.events else read_seq
            self._read_seq = read_seq
            if not batch.more:
                break
        # Whatever was announced before the read began was committed before
        # it, so the read found it.
        if self._announced_seq <= announced:
            self._announced_seq = read_seq


def _consume_error(task: "asyncio.Task[None]") -> None:
    """Marks a failed read's error as seen: its watchers, if any are left,
    got it; a read nobody waits for any more must not log it as lost."""
    if not task.cancelled():
        task.exception()
