"""Step timeouts: failing the running steps whose deadline has passed."""

from server.domain.processes import time_out
from server.service.processes import load_locked, record
from server.service.writes import Clock
from server.storage import tasks
from server.storage.database import Database

# Steps timed out per transaction; more wait for the next round.
BATCH = 100


class DeadlineService:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._database = database
        self._clock = clock

    async def enforce(self) -> int:
        """Times out the steps now due (up to BATCH); returns how many.

        Any number of workers and instances may run this at once: each due
        step's process is locked by the first to find it (the others skip
        it), and the domain changes nothing for a step that an update,
        completion or earlier timeout has moved since, so each timeout is
        applied exactly once.
        """
        now = self._clock()
        timed_out = 0
        async with self._database.transaction() as connection:
            for due in await tasks.lock_due_steps(connection, now, BATCH):
                process = await load_locked(connection, due.org_id, due.process_id)
                change = time_out(process, due.step, now)
                if change is not None:
                    await record(connection, process, change)
                    timed_out += 1
        return timed_out
