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
from server.domain.retention import ArchivedProcess, archive_line, cutoff
from server.service.writes import Clock
from server.storage import archive, processes, retention
from server.storage.database import Database

log = logging.getLogger(__name__)

# The API's JSON of a process and its event log: transport's, so that the
# archive reads exactly as GetProcess and ListProcessEvents answer.
Render = Callable[[Process, Sequence[Event]], ArchivedProcess]


@dataclass(frozen=True)
class ArchiveTo:
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
        archive_to: ArchiveTo | None,
    ) -> None:
        self._database = database
        self._clock = clock
        self._days = days
        self._batch_size = batch_size
        self._archive_to = archive_to

    async def delete_expired(self) -> int:
        """Deletes the processes expired now, a batch per transaction, until
        none is left; returns how many.

        One batch of all workers and instances runs at a time: each takes a
        transaction-level advisory lock, and a worker that finds it taken
        stops at once (the holder carries on). So the archive has a single
        writer, and no two passes pick, archive or delete the same process.
        The lock is the pass's own: no call of the API ever waits for it.
        """
        before = cutoff(self._clock(), self._days)
        if before is None:
            return 0
        deleted = 0
        while True:
            batch = await self._delete_batch(before)
            deleted += batch
            if batch < self._batch_size:
                return deleted

    async def _delete_batch(self, before: datetime) -> int:
        started = time.perf_counter()
        async with self._database.transaction() as connection:
            if not await retention.take_pass_lock(connection):
                return 0
            expired = await retention.lock_expired(connection, before, self._batch_size)
            if not expired:
                return 0
            if self._archive_to is not None:
                await self._archive(connection, self._archive_to, expired)
            # Last: the counters' rows, which finishing calls update too, are
            # locked from here to the commit only.
            deleted = await retention.delete_processes(connection, [pid for _, pid in expired])
        metrics.RETENTION_BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.RETENTION_PROCESSES.labels(str(self._archive_to is not None).lower()).inc(deleted)
        return deleted

    async def _archive(
        self, connection: AsyncConnection, to: ArchiveTo, expired: list[tuple[str, uuid.UUID]]
    ) -> None:
        """Writes the batch to the archive, durably, before its delete runs:
        a crash before the commit leaves the processes in the database too,
        and the next pass writes them again (reading keeps one of each)."""
        loaded = []
        for org_id, process_id in expired:
            process = await processes.load(connection, org_id, process_id, for_update=False)
            assert process is not None  # locked by this transaction
            loaded.append(process)
        logs = await retention.event_logs(connection, [process.process_id for process in loaded])
        archived_at = self._clock()

        def write() -> Path:
            lines = [
                archive_line(to.render(process, logs[process.process_id]), archived_at)
                for process in loaded
            ]
            return archive.append(to.directory, lines, archived_at)

        try:
            # Rendering, compressing and fsync, off the event loop: calls
            # this worker serves meanwhile are not held up.
            path = await asyncio.to_thread(write)
        except OSError as error:
            # Nothing is deleted unarchived: the batch rolls back.
            raise Unavailable(f"the archive could not be written: {error}") from error
        log.debug("archived %d processes to %s", len(loaded), path)
