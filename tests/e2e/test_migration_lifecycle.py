"""The migration that makes every run end cleanly, on rows written before it:
the steps of processes that had finished end as a finish now ends them, a
failed step gets the time it failed, running processes are left alone, and
the downgrade gives the old reading back."""

import psycopg
from alembic import command

from tests.e2e.test_migrations import before_migration
from tests.support.stack import Stack

FAILED_PROCESS = "00000000-0000-4000-8000-000000000001"
RUNNING_PROCESS = "00000000-0000-4000-8000-000000000002"
# (process, position, status, changed_seq) of each step written before the migration.
STEPS = [
    (FAILED_PROCESS, 0, "completed", 1),
    (FAILED_PROCESS, 1, "failed", 2),
    (FAILED_PROCESS, 2, "running", 3),
    (FAILED_PROCESS, 3, "pending", None),
    (RUNNING_PROCESS, 0, "failed", 1),
    (RUNNING_PROCESS, 1, "running", 2),
    (RUNNING_PROCESS, 2, "pending", None),
]
STEP_ROWS = "SELECT process_id::text, position, status, completed_at FROM steps ORDER BY 1, 2"


def test_finished_processes_steps_end_as_a_finish_now_ends_them(stack: Stack) -> None:
    with before_migration(stack, "every run ends cleanly:") as before:
        url, config = before.url, before.config
        with psycopg.connect(url) as connection:
            connection.execute("INSERT INTO organizations (org_id, created_at) VALUES ('a', now())")
            connection.execute(
                "INSERT INTO processes (process_id, org_id, namespace, name, status, step_count,"
                " task_ids, started_at, finished_at, error, update_count) VALUES"
                " (%s, 'a', 'a.ns', 'old', 'failed', 4, '{}', '2026-01-01T00:00Z',"
                "  '2026-01-01T00:10Z', 'gave up', 4),"
                " (%s, 'a', 'a.ns', 'live', 'running', 3, '{}', '2026-01-01T00:00Z',"
                "  NULL, NULL, 2)",
                (FAILED_PROCESS, RUNNING_PROCESS),
            )
            for process_id, position, status, changed_seq in STEPS:
                connection.execute(
                    "INSERT INTO steps (process_id, position, key, label, human, status,"
                    " started_at, completed_at, changed_seq, deadline_at)"
                    " VALUES (%s, %s, %s, 'Step', false, %s,"
                    "  CASE WHEN %s <> 'pending' THEN timestamptz '2026-01-01T00:00Z' END,"
                    "  CASE WHEN %s = 'completed' THEN timestamptz '2026-01-01T00:01Z' END,"
                    "  %s, CASE WHEN %s = 'running' THEN timestamptz '2026-01-02T00:00Z' END)",
                    (
                        process_id,
                        position,
                        f"s{position}",
                        status,
                        status,
                        status,
                        changed_seq,
                        status,
                    ),
                )
            # The events that last changed the failed steps tell when they failed.
            connection.execute(
                "INSERT INTO process_events (process_id, seq, type, step, payload, recorded_at)"
                " VALUES (%s, 2, 'step_failed', 's1', '{}', '2026-01-01T00:02Z'),"
                " (%s, 1, 'step_failed', 's0', '{}', '2026-01-01T00:03Z')",
                (FAILED_PROCESS, RUNNING_PROCESS),
            )

        command.upgrade(config, before.revision)

        with psycopg.connect(url) as connection:
            rows = [
                (process, position, status, at.isoformat() if at else None)
                for process, position, status, at in connection.execute(STEP_ROWS).fetchall()
            ]
            assert rows == [
                (FAILED_PROCESS, 0, "completed", "2026-01-01T00:01:00+00:00"),
                (FAILED_PROCESS, 1, "failed", "2026-01-01T00:02:00+00:00"),
                (FAILED_PROCESS, 2, "cancelled", "2026-01-01T00:10:00+00:00"),
                (FAILED_PROCESS, 3, "skipped", "2026-01-01T00:10:00+00:00"),
                (RUNNING_PROCESS, 0, "failed", "2026-01-01T00:03:00+00:00"),
                (RUNNING_PROCESS, 1, "running", None),
                (RUNNING_PROCESS, 2, "pending", None),
            ]
            deadlines = connection.execute(
                "SELECT process_id::text FROM steps WHERE deadline_at IS NOT NULL"
            ).fetchall()
            assert deadlines == [(RUNNING_PROCESS,)]
            connection.execute(
                "UPDATE processes SET status = 'cancelled', reason = 'stop' WHERE process_id = %s",
                (RUNNING_PROCESS,),
            )

        command.downgrade(config, before.down_revision)

        with psycopg.connect(url) as connection:
            statuses = connection.execute(
                "SELECT process_id::text, position, status, completed_at IS NULL FROM steps"
                " ORDER BY 1, 2"
            ).fetchall()
            assert statuses == [
                (FAILED_PROCESS, 0, "completed", False),
                (FAILED_PROCESS, 1, "failed", True),
                (FAILED_PROCESS, 2, "running", True),
                (FAILED_PROCESS, 3, "pending", True),
                (RUNNING_PROCESS, 0, "failed", True),
                (RUNNING_PROCESS, 1, "running", True),
                (RUNNING_PROCESS, 2, "pending", True),
            ]
            # A cancel has no word before: the process reads as failed, for its reason.
            process = connection.execute(
                "SELECT status, error FROM processes WHERE process_id = %s", (RUNNING_PROCESS,)
            ).fetchone()
            assert process == ("failed", "stop")
