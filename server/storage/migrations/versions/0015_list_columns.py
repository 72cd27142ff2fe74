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


def upgrade() -> None:
    # A list page read both per row from steps and tasks: two index probes
    # a row. Every write now keeps them on the process's row.
    op.add_column("processes", sa.Column("current_step_label", sa.Text(), nullable=True))
    op.add_column(
        "processes",
        sa.Column("open_task_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    # One pass, each row rewritten once. A process without a current step
    # has never run one, so it has no label to show and no open task: its
    # defaults (NULL, 0) are already right, and it is not rewritten.
    op.execute(
        """
        UPDATE processes AS p
        SET current_step_label = s.label,
            open_task_count = (
              SELECT count(*) FROM tasks AS t
              WHERE t.process_id = p.process_id AND t.status = 'open')
        FROM steps AS s
        WHERE s.process_id = p.process_id AND s.key = p.current_step
        """
    )


def downgrade() -> None:
    op.drop_column("processes", "open_task_count")
    op.drop_column("processes", "current_step_label")
