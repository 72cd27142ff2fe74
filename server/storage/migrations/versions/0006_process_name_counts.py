"""process_name_counts: process counts per name too, for a search's exact total

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The counterparts of process_counts' triggers (0002, 0003) with the name
# (lower-cased) in the key; written out again for the reason 0004 gives.
# Rows are upserted in key order, so that two transactions moving counts
# between the same rows lock them in the same order and cannot deadlock. A
# row that reaches zero is deleted: a name seen once must not leave a row
# behind for every status its process went through. The server never
# renames a process or moves it to another namespace, but if anything does,
# its count moves with it.
_COUNT_TRIGGERS = """
CREATE FUNCTION count_inserted_process_names() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO process_name_counts AS counts (org_id, namespace, status, folded_name, count)
  SELECT org_id, namespace, status, lower(name), count(*) FROM inserted
  GROUP BY org_id, namespace, status, lower(name)
  ORDER BY org_id, namespace, status, lower(name)
  ON CONFLICT (org_id, namespace, status, folded_name)
  DO UPDATE SET count = counts.count + excluded.count;
  RETURN NULL;
END $$;

CREATE FUNCTION count_deleted_process_names() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  WITH deleted_counts AS (
    SELECT org_id, namespace, status, lower(name) AS folded_name, count(*) AS count
    FROM deleted GROUP BY org_id, namespace, status, lower(name)
  )
  UPDATE process_name_counts AS counts SET count = counts.count - deleted_counts.count
  FROM deleted_counts
  WHERE (counts.org_id, counts.namespace, counts.status, counts.folded_name)
      = (deleted_counts.org_id, deleted_counts.namespace, deleted_counts.status,
         deleted_counts.folded_name);
  DELETE FROM process_name_counts AS counts
  USING (SELECT DISTINCT org_id, namespace, status, lower(name) AS folded_name FROM deleted)
    AS emptied
  WHERE (counts.org_id, counts.namespace, counts.status, counts.folded_name)
      = (emptied.org_id, emptied.namespace, emptied.status, emptied.folded_name)
    AND counts.count = 0;
  RETURN NULL;
END $$;

CREATE FUNCTION count_process_name_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO process_name_counts AS counts (org_id, namespace, status, folded_name, count)
  SELECT NEW.org_id, change.namespace, change.status, change.folded_name, change.delta
  FROM (VALUES (OLD.namespace, OLD.status, lower(OLD.name), -1),
               (NEW.namespace, NEW.status, lower(NEW.name), 1))
    AS change (namespace, status, folded_name, delta)
  ORDER BY change.namespace, change.status, change.folded_name
  ON CONFLICT (org_id, namespace, status, folded_name)
  DO UPDATE SET count = counts.count + excluded.count;
  -- The old row is locked already, by the upsert above.
  DELETE FROM process_name_counts
  WHERE (org_id, namespace, status, folded_name)
      = (OLD.org_id, OLD.namespace, OLD.status, lower(OLD.name))
    AND count = 0;
  RETURN NULL;
END $$;

CREATE FUNCTION forget_process_name_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE process_name_counts;
  RETURN NULL;
END $$;

CREATE TRIGGER processes_name_counted_on_insert AFTER INSERT ON processes
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
  EXECUTE FUNCTION count_inserted_process_names();
CREATE TRIGGER processes_name_counted_on_delete AFTER DELETE ON processes
  REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT
  EXECUTE FUNCTION count_deleted_process_names();
-- Row-level, and only for a change of key: most updates leave all three be
-- (and a rename that changes only the case of letters keeps the count's row).
CREATE TRIGGER processes_name_counted_on_change AFTER UPDATE OF name, namespace, status
  ON processes FOR EACH ROW
  WHEN ((OLD.namespace, OLD.status, lower(OLD.name))
        IS DISTINCT FROM (NEW.namespace, NEW.status, lower(NEW.name)))
  EXECUTE FUNCTION count_process_name_change();
CREATE TRIGGER processes_name_counted_on_truncate AFTER TRUNCATE ON processes
  FOR EACH STATEMENT EXECUTE FUNCTION forget_process_name_counts();
"""


def upgrade() -> None:
    op.create_table(
        "process_name_counts",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("folded_name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "namespace", "status", "folded_name"),
    )
    # CREATE TRIGGER locks out writers of processes until this commits, so
    # the count below sees every process the triggers will not.
    op.execute(_COUNT_TRIGGERS)
    op.execute(
        "INSERT INTO process_name_counts (org_id, namespace, status, folded_name, count)"
        " SELECT org_id, namespace, status, lower(name), count(*) FROM processes"
        " GROUP BY org_id, namespace, status, lower(name)"
    )
    # Built once over the counted rows: faster than growing it row by row.
    op.create_index(
        "process_name_counts_trigram",
        "process_name_counts",
        ["folded_name"],
        postgresql_using="gin",
        postgresql_ops={"folded_name": "gin_trgm_ops"},
    )


def downgrade() -> None:
    for trigger in ("on_insert", "on_delete", "on_change", "on_truncate"):
        op.execute(f"DROP TRIGGER processes_name_counted_{trigger} ON processes")
    for function in (
        "count_inserted_process_names",
        "count_deleted_process_names",
        "count_process_name_change",
        "forget_process_name_counts",
    ):
        op.execute(f"DROP FUNCTION {function}()")
    op.drop_table("process_name_counts")
