"""every run ends cleanly: a cancel's reason, and finished processes' steps ended

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Processes that finished before a finish ended their steps must read as
# those finished since: what was running was cancelled and what never
# started was skipped, both when the process finished; a failed step ended
# when it failed, the time of the event that last changed it. (Their tasks
# were already cancelled at the finish.) The words are written out, as a
# migration must keep meaning what it meant when it ran.
_END_STEPS_OF_FINISHED = """
UPDATE steps AS s
SET status = CASE s.status WHEN 'running' THEN 'cancelled' ELSE 'skipped' END,
    completed_at = p.finished_at,
    deadline_at = NULL
FROM processes AS p
WHERE p.process_id = s.process_id AND p.status <> 'running'
  AND s.status IN ('running', 'pending')
"""
_TIME_FAILED_STEPS = """
UPDATE steps AS s
SET completed_at = e.recorded_at
FROM process_events AS e
WHERE s.status = 'failed' AND s.completed_at IS NULL
  AND e.process_id = s.process_id AND e.seq = s.changed_seq
"""
# Undone, the old reading comes back: no step of a finished process ended
# by the finish, and no failed step has an end.
_UNEND_STEPS = """
UPDATE steps
SET status = CASE status WHEN 'cancelled' THEN 'running' ELSE 'pending' END,
    completed_at = NULL
WHERE status IN ('cancelled', 'skipped')
"""


def upgrade() -> None:
    op.add_column("processes", sa.Column("reason", sa.Text(), nullable=True))
    op.execute(_END_STEPS_OF_FINISHED)
    op.execute(_TIME_FAILED_STEPS)


def downgrade() -> None:
    # A cancel has no word before this revision: it reads as a failure.
    op.execute(
        "UPDATE processes SET status = 'failed', error = coalesce(reason, 'cancelled')"
        " WHERE status = 'cancelled'"
    )
    op.execute(
        "UPDATE process_events SET type = 'failed',"
        " payload = jsonb_build_object('error', coalesce(payload->>'reason', 'cancelled'))"
        " WHERE type = 'cancelled'"
    )
    op.execute(_UNEND_STEPS)
    op.execute("UPDATE steps SET completed_at = NULL WHERE status = 'failed'")
    op.drop_column("processes", "reason")
