"""process counts emptied with a TRUNCATE of processes

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # TRUNCATE fires no DELETE triggers; without this, counts would outlive
    # the rows they count (a reseeded benchmark database showed it).
    op.execute(
        """
        CREATE FUNCTION forget_process_counts() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          TRUNCATE process_counts;
          RETURN NULL;
        END $$;
        CREATE TRIGGER processes_counted_on_truncate AFTER TRUNCATE ON processes
          FOR EACH STATEMENT EXECUTE FUNCTION forget_process_counts();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER processes_counted_on_truncate ON processes")
    op.execute("DROP FUNCTION forget_process_counts()")
