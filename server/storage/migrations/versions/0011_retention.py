"""retention: finding expired processes by finish time, and the keys that name a process

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The retention pass walks the oldest finishes first and stops at the
    # cutoff: only finished processes have a finish time, so running ones
    # (most updates) never touch this index.
    op.create_index(
        "processes_by_finish",
        "processes",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    # The process a remembered write changed, so that its keys go with it:
    # a retry must not replay a process retention deleted. NULL for keys
    # remembered before this revision (they expire within
    # HTK_IDEMPOTENCY_KEY_HOURS) and while a write is under way.
    op.add_column("idempotency_keys", sa.Column("process_id", sa.Uuid(), nullable=True))
    op.create_index(
        "idempotency_keys_by_process",
        "idempotency_keys",
        ["process_id"],
        postgresql_where=sa.text("process_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("idempotency_keys_by_process", table_name="idempotency_keys")
    op.drop_column("idempotency_keys", "process_id")
    op.drop_index("processes_by_finish", table_name="processes")
