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
        # Every step due before this has been timed out (or a worker of
        # another scan holds it); counted from the start until a scan says so.
        self.enforced_until = clock()

    def lag_seconds(self) -> float:
        """How long ago the deadline of a step that may still run past it passed."""
        return max(0.0, (self._clock() - self.enforced_until).total_seconds())

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
            due_steps = await tasks.lock_due_steps(connection, now, BATCH)
            for due in due_steps:
                process = await load_locked(connection, due.org_id, due.process_id)
                change = time_out(process, due.step, now)
                if change is not None:
                    record(connection, process, change)
                    timed_out += 1
        # A full batch may have left due steps for the next round.
        if len(due_steps) < BATCH:
            self.enforced_until = now
        return timed_out
