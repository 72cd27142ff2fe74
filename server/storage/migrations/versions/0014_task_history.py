"""task history: decided tasks listed by outcome and by who decided

Revision ID: 0014
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # ListTasks' `outcome` and `completed_by` filters page newest first and
    # count exactly: without these, both walk every task of the
    # organization. Only decided tasks have either, so open and pending
    # ones (the inbox's churn) never touch them.
    op.create_index(
        "tasks_by_outcome",
        "tasks",
        ["org_id", "outcome", "created_at", "task_id"],
        postgresql_where=sa.text("outcome IS NOT NULL"),
    )
    op.create_index(
        "tasks_by_decider",
        "tasks",
        ["org_id", "completed_by", "created_at", "task_id"],
        postgresql_where=sa.text("completed_by IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("tasks_by_decider", table_name="tasks")
    op.drop_index("tasks_by_outcome", table_name="tasks")
