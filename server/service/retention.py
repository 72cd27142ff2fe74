"""Retention: deleting the finished processes older than HTK_RETENTION_DAYS,
archived first when HTK_ARCHIVE_DIR is set, in small batches."""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from server import metrics
from server.domain.errors import Unavailable
from server.domain.processes import Event, Process
from server.domain.retention import ArchivedProcess, archive_line, cutoff, rest_after
from server.service.writes import Clock
from server.storage import archive, processes, retention
from server.storage.database import Database

log = logging.getLogger(__name__)

# The API's JSON of a process and its event log: transport's, so that the
# archive reads exactly as GetProcess and ListProcessEvents answer.
Render = Callable[[Process, Sequence[Event]], ArchivedProcess]


@dataclass(frozen=True)
class ArchiveTo:
    """Where deleted processes are kept (HTK_ARCHIVE_DIR), and how they read."""

    directory: Path
    render: Render


class RetentionService:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        days: float,
        batch_size: int,
        duty_cycle: float,
        archive_to: ArchiveTo | None,
    ) -> None:
        self._database = database
        self._clock = clock
        self._days = days
        self._batch_size = batch_size
        self._duty_cycle = duty_cycle
        self._archive_to = archive_to

    async def delete_expired(self) -> int:
        """Deletes the processes expired now, a batch at a time, until none is
        left; returns how many.

        One pass of all workers and instances runs at a time: it holds an
        advisory lock from start to end, and a worker that finds it taken
        stops at once (the holder carries on). So the archive has one
        writer, and no two passes pick, archive or delete the same process.
        No call of the API ever waits for this lock.
        """
        before = cutoff(self._clock(), self._days)
        if before is None:
            return 0
        async with retention.pass_lock(self._database) as taken:
            if not taken:
                return 0
            deleted = 0
            while True:
                started = time.perf_counter()
                picked, batch = await self._delete_batch(before)
                deleted += batch
                # A batch that deleted nothing found only processes calls hold.
                if picked < self._batch_size or batch == 0:
                    return deleted
                worked = time.perf_counter() - started
                await asyncio.sleep(rest_after(worked, self._duty_cycle))

    async def _delete_batch(self, before: datetime) -> tuple[int, int]:
        """Deletes one batch; returns how many it picked and how many went.

        Three short steps, and locks in the last one only: reading the batch
        (a finished process never changes again, so what is read stays
        true), archiving it durably, and deleting it. A crash before the
        delete commits leaves the processes in the database and in the
        archive, and the next pass archives them again (reading keeps one).
        """
        async with self._database.transaction() as connection:
            expired = await retention.expired(connection, before, self._batch_size)
            loaded = await _load(connection, expired) if self._archive_to is not None else []
        if not expired:
            return 0, 0
        if self._archive_to is not None:
            await self._archive(self._archive_to, loaded)
        started = time.perf_counter()
        async with self._database.transaction() as connection:
            deleted = await retention.delete_processes(connection, expired, before)
        metrics.RETENTION_BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.RETENTION_PROCESSES.labels(str(self._archive_to is not None).lower()).inc(deleted)
        return len(expired), deleted

    async def _archive(self, to: ArchiveTo, loaded: list[tuple[Process, list[Event]]]) -> None:
        archived_at = self._clock()

        def write() -> Path:
            lines = [
                archive_line(to.render(process, events), archived_at) for process, events in loaded
            ]
            return archive.append(to.directory, lines, archived_at)

        try:
            # Rendering, compressing and fsync, off the event loop: calls
            # this worker serves meanwhile share the interpreter with it
            # (turns of a few milliseconds) instead of waiting for a batch.
            path = await asyncio.to_thread(write)
        except OSError as error:
            # Nothing is deleted unarchived.
            raise Unavailable(f"the archive could not be written: {error}") from error
        log.debug("archived %d processes to %s", len(loaded), path)


async def _load(
    connection: AsyncConnection, process_ids: list[uuid.UUID]
) -> list[tuple[Process, list[Event]]]:
    """The processes with their whole event logs, as the archive keeps them."""
    loaded = await processes.load_many(connection, process_ids)
    logs = await retention.event_logs(connection, process_ids)
    # Another pass may have deleted one since it was picked, if this pass's
    # lock went with a lost connection: there is nothing left to archive then.
    return [(loaded[pid], logs[pid]) for pid in process_ids if pid in loaded]
