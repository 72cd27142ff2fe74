"""list columns: each process's current step label and open task count on its row

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Processes filled per batch, each batch committed on its own.
BATCH = 5000


def upgrade() -> None:
    # A list page read both per row from steps and tasks: two index probes
    # a row. Every write now keeps them on the process's row. (IF NOT EXISTS:
    # a backfill cut short leaves the columns added and the revision not
    # stamped, and the next upgrade runs this again.)
    op.execute("ALTER TABLE processes ADD COLUMN IF NOT EXISTS current_step_label text")
    op.execute(
        "ALTER TABLE processes ADD COLUMN IF NOT EXISTS open_task_count integer NOT NULL DEFAULT 0"
    )
    # The backfill, outside the migration's transaction, in batches that each
    # commit: in it, the new columns' lock would stop every read and write of
    # processes for as long as rewriting them all takes (minutes at a
    # million). A process without a current step has never run one, so it
    # has no label to show and no open task: its defaults (NULL, 0) are
    # already right, and it is not rewritten.
    with op.get_context().autocommit_block():
        connection = op.get_bind()
        after = "00000000-0000-0000-0000-000000000000"
        while after is not None:
            after = connection.execute(_FILL_BATCH, {"after": after, "batch": BATCH}).scalar()


_FILL_BATCH = sa.text(
    """
    WITH batch AS (
      SELECT process_id FROM processes WHERE process_id > CAST(:after AS uuid)
      ORDER BY process_id LIMIT :batch
    ), filled AS (
      UPDATE processes AS p
      SET current_step_label = s.label,
          open_task_count = (
            SELECT count(*) FROM tasks AS t
            WHERE t.process_id = p.process_id AND t.status = 'open')
      FROM batch, steps AS s
      WHERE p.process_id = batch.process_id
        AND s.process_id = p.process_id AND s.key = p.current_step
    )
    SELECT process_id::text FROM batch ORDER BY process_id DESC LIMIT 1
    """
)


def downgrade() -> None:
    op.drop_column("processes", "open_task_count")
    op.drop_column("processes", "current_step_label")
