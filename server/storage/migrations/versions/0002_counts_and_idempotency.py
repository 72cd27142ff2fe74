"""process counts kept by triggers, idempotency keys, an index for status+namespace

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Rows are upserted in key order, so that two transactions moving counts
# between the same rows lock them in the same order and cannot deadlock.
# A process's organization and namespace never change; only its status does.
_COUNT_TRIGGERS = """
CREATE FUNCTION count_inserted_processes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO process_counts AS counts (org_id, namespace, status, count)
  SELECT org_id, namespace, status, count(*) FROM inserted
  GROUP BY org_id, namespace, status ORDER BY org_id, namespace, status
  ON CONFLICT (org_id, namespace, status) DO UPDATE SET count = counts.count + excluded.count;
  RETURN NULL;
END $$;

CREATE FUNCTION count_deleted_processes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE process_counts AS counts SET count = counts.count - deleted_counts.count
  FROM (SELECT org_id, namespace, status, count(*) AS count FROM deleted
        GROUP BY org_id, namespace, status) AS deleted_counts
  WHERE (counts.org_id, counts.namespace, counts.status)
      = (deleted_counts.org_id, deleted_counts.namespace, deleted_counts.status);
  RETURN NULL;
END $$;

CREATE FUNCTION count_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO process_counts AS counts (org_id, namespace, status, count)
  SELECT NEW.org_id, NEW.namespace, change.status, change.delta
  FROM (VALUES (OLD.status, -1), (NEW.status, 1)) AS change (status, delta)
  ORDER BY change.status
  ON CONFLICT (org_id, namespace, status) DO UPDATE SET count = counts.count + excluded.count;
  RETURN NULL;
END $$;

-- Statement-level with a transition table: a COPY of a million rows adds
-- to each counter once, not a million times.
CREATE TRIGGER processes_counted_on_insert AFTER INSERT ON processes
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
  EXECUTE FUNCTION count_inserted_processes();
CREATE TRIGGER processes_counted_on_delete AFTER DELETE ON processes
  REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT
  EXECUTE FUNCTION count_deleted_processes();
-- Row-level, and only for an actual change: most updates leave the status be.
CREATE TRIGGER processes_counted_on_status_change AFTER UPDATE OF status ON processes
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION count_status_change();
"""


def upgrade() -> None:
    op.create_table(
        "process_counts",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "namespace", "status"),
    )
    op.execute(
        "INSERT INTO process_counts (org_id, namespace, status, count)"
        " SELECT org_id, namespace, status, count(*) FROM processes"
        " GROUP BY org_id, namespace, status"
    )
    op.execute(_COUNT_TRIGGERS)
    op.create_index(
        "processes_by_namespace_status",
        "processes",
        ["org_id", "namespace", "status", "started_at", "process_id"],
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("request_fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
        sa.PrimaryKeyConstraint("org_id", "key"),
    )
    op.create_index("idempotency_keys_by_age", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("idempotency_keys_by_age", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_index("processes_by_namespace_status", table_name="processes")
    for trigger in ("on_insert", "on_delete", "on_status_change"):
        op.execute(f"DROP TRIGGER processes_counted_{trigger} ON processes")
    for function in ("count_inserted_processes", "count_deleted_processes", "count_status_change"):
        op.execute(f"DROP FUNCTION {function}()")
    op.drop_table("process_counts")
