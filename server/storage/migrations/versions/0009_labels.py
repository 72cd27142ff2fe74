"""labels and a link on processes, an index for the label filter, counts per label set

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The counterparts of process_name_counts' triggers (0006) with the whole
# label set in the key instead of the name, so that a label filter's exact
# total sums one row per distinct label set, namespace and status rather than
# counting processes. Processes without labels are not counted here: a label
# filter never matches them. Written out again for the reason 0004 gives;
# rows are upserted in key order (no deadlocks) and deleted at zero.
_COUNT_TRIGGERS = """
CREATE FUNCTION count_inserted_process_labels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO process_label_counts AS counts (org_id, namespace, status, labels, count)
  SELECT org_id, namespace, status, labels, count(*) FROM inserted
  WHERE labels <> '{}'
  GROUP BY org_id, namespace, status, labels
  ORDER BY org_id, namespace, status, labels
  ON CONFLICT (org_id, namespace, status, labels)
  DO UPDATE SET count = counts.count + excluded.count;
  RETURN NULL;
END $$;

CREATE FUNCTION count_deleted_process_labels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  WITH deleted_counts AS (
    SELECT org_id, namespace, status, labels, count(*) AS count
    FROM deleted WHERE labels <> '{}' GROUP BY org_id, namespace, status, labels
  )
  UPDATE process_label_counts AS counts SET count = counts.count - deleted_counts.count
  FROM deleted_counts
  WHERE (counts.org_id, counts.namespace, counts.status, counts.labels)
      = (deleted_counts.org_id, deleted_counts.namespace, deleted_counts.status,
         deleted_counts.labels);
  DELETE FROM process_label_counts AS counts
  USING (SELECT DISTINCT org_id, namespace, status, labels FROM deleted
         WHERE labels <> '{}') AS emptied
  WHERE (counts.org_id, counts.namespace, counts.status, counts.labels)
      = (emptied.org_id, emptied.namespace, emptied.status, emptied.labels)
    AND counts.count = 0;
  RETURN NULL;
END $$;

CREATE FUNCTION count_process_label_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO process_label_counts AS counts (org_id, namespace, status, labels, count)
  SELECT NEW.org_id, change.namespace, change.status, change.labels, change.delta
  FROM (VALUES (OLD.namespace, OLD.status, OLD.labels, -1),
               (NEW.namespace, NEW.status, NEW.labels, 1))
    AS change (namespace, status, labels, delta)
  WHERE change.labels <> '{}'
  ORDER BY change.namespace, change.status, change.labels
  ON CONFLICT (org_id, namespace, status, labels)
  DO UPDATE SET count = counts.count + excluded.count;
  -- The old row is locked already, by the upsert above.
  DELETE FROM process_label_counts
  WHERE (org_id, namespace, status, labels)
      = (OLD.org_id, OLD.namespace, OLD.status, OLD.labels)
    AND count = 0;
  RETURN NULL;
END $$;

CREATE FUNCTION forget_process_label_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE process_label_counts;
  RETURN NULL;
END $$;

CREATE TRIGGER processes_labels_counted_on_insert AFTER INSERT ON processes
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
  EXECUTE FUNCTION count_inserted_process_labels();
CREATE TRIGGER processes_labels_counted_on_delete AFTER DELETE ON processes
  REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT
  EXECUTE FUNCTION count_deleted_process_labels();
-- Row-level, and only for a change of key of a labelled process: most
-- updates change none, and a process's labels never change.
CREATE TRIGGER processes_labels_counted_on_change AFTER UPDATE OF labels, namespace, status
  ON processes FOR EACH ROW
  WHEN ((OLD.namespace, OLD.status, OLD.labels) IS DISTINCT FROM
        (NEW.namespace, NEW.status, NEW.labels)
        AND (OLD.labels <> '{}' OR NEW.labels <> '{}'))
  EXECUTE FUNCTION count_process_label_change();
CREATE TRIGGER processes_labels_counted_on_truncate AFTER TRUNCATE ON processes
  FOR EACH STATEMENT EXECUTE FUNCTION forget_process_label_counts();
"""


def upgrade() -> None:
    # A default, not a backfill: existing processes have no labels, and
    # PostgreSQL adds a column with a constant default without rewriting rows.
    op.add_column(
        "processes",
        sa.Column(
            "labels",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("processes", sa.Column("url", sa.Text(), nullable=True))
    op.create_table(
        "process_label_counts",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("labels", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "namespace", "status", "labels"),
    )
    op.execute(_COUNT_TRIGGERS)
    # `labels @> '{"env": "prod", "team": "payments"}'` finds the processes
    # that carry both labels from the index alone, however many match one.
    op.create_index(
        "processes_labels",
        "processes",
        ["labels"],
        postgresql_using="gin",
        postgresql_ops={"labels": "jsonb_path_ops"},
    )
    op.create_index(
        "process_label_counts_labels",
        "process_label_counts",
        ["labels"],
        postgresql_using="gin",
        postgresql_ops={"labels": "jsonb_path_ops"},
    )


def downgrade() -> None:
    for trigger in ("on_insert", "on_delete", "on_change", "on_truncate"):
        op.execute(f"DROP TRIGGER processes_labels_counted_{trigger} ON processes")
    for function in (
        "count_inserted_process_labels",
        "count_deleted_process_labels",
        "count_process_label_change",
        "forget_process_label_counts",
    ):
        op.execute(f"DROP FUNCTION {function}()")
    op.drop_table("process_label_counts")
    op.drop_index("processes_labels", table_name="processes")
    op.drop_column("processes", "url")
    op.drop_column("processes", "labels")
