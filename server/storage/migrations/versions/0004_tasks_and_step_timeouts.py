"""tasks of human steps with counts kept by triggers; step timeouts and completed_by

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The counterparts of process_counts' triggers (0002, 0003), for tasks. Written
# out again rather than shared: a migration must keep meaning what it meant
# when it ran, and a trigger that builds its SQL at run time would cost every
# write a parse. A task's organization and namespace never change.
_COUNT_TRIGGERS = """
CREATE FUNCTION count_inserted_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_counts AS counts (org_id, namespace, status, count)
  SELECT org_id, namespace, status, count(*) FROM inserted
  GROUP BY org_id, namespace, status ORDER BY org_id, namespace, status
  ON CONFLICT (org_id, namespace, status) DO UPDATE SET count = counts.count + excluded.count;
  RETURN NULL;
END $$;

CREATE FUNCTION count_deleted_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE task_counts AS counts SET count = counts.count - deleted_counts.count
  FROM (SELECT org_id, namespace, status, count(*) AS count FROM deleted
        GROUP BY org_id, namespace, status) AS deleted_counts
  WHERE (counts.org_id, counts.namespace, counts.status)
      = (deleted_counts.org_id, deleted_counts.namespace, deleted_counts.status);
  RETURN NULL;
END $$;

CREATE FUNCTION count_task_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO task_counts AS counts (org_id, namespace, status, count)
  SELECT NEW.org_id, NEW.namespace, change.status, change.delta
  FROM (VALUES (OLD.status, -1), (NEW.status, 1)) AS change (status, delta)
  ORDER BY change.status
  ON CONFLICT (org_id, namespace, status) DO UPDATE SET count = counts.count + excluded.count;
  RETURN NULL;
END $$;

CREATE FUNCTION forget_task_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE task_counts;
  RETURN NULL;
END $$;

CREATE TRIGGER tasks_counted_on_insert AFTER INSERT ON tasks
  REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
  EXECUTE FUNCTION count_inserted_tasks();
CREATE TRIGGER tasks_counted_on_delete AFTER DELETE ON tasks
  REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT
  EXECUTE FUNCTION count_deleted_tasks();
CREATE TRIGGER tasks_counted_on_status_change AFTER UPDATE OF status ON tasks
  FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION count_task_status_change();
CREATE TRIGGER tasks_counted_on_truncate AFTER TRUNCATE ON tasks
  FOR EACH STATEMENT EXECUTE FUNCTION forget_task_counts();
"""

# Every human step had a task id but no task until now. Its status follows
# from the step, as server.domain.processes moves it: nothing could complete
# a task yet, so each step that ended, or whose process did, cancelled its
# task. A step started explicitly (not just ended) opened its task; an
# implicit start shares the sequence number of the update that ended it.
_EXISTING_TASKS = """
INSERT INTO tasks (task_id, process_id, org_id, namespace, process_name, step, label,
                   status, created_at, opened_at)
SELECT steps.task_id, steps.process_id, processes.org_id, processes.namespace,
       processes.name, steps.key, steps.label,
       CASE WHEN processes.status <> 'running' THEN 'cancelled'
            WHEN steps.status = 'pending' THEN 'pending'
            WHEN steps.status = 'running' THEN 'open'
            ELSE 'cancelled' END,
       processes.started_at,
       CASE WHEN steps.status = 'running' OR steps.started_seq < steps.changed_seq
            THEN steps.started_at END
FROM steps JOIN processes USING (process_id)
WHERE steps.task_id IS NOT NULL
"""


def upgrade() -> None:
    op.add_column("steps", sa.Column("timeout_seconds", sa.Integer(), nullable=True))
    op.add_column("steps", sa.Column("completed_by", sa.Text(), nullable=True))
    op.add_column(
        "steps",
        sa.Column("deadline_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
    )
    op.create_index(
        "steps_by_deadline",
        "steps",
        ["deadline_at"],
        postgresql_where=sa.text("deadline_at IS NOT NULL"),
    )
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("process_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("process_name", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("opened_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("completed_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("completed_by", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["steps.task_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("task_id"),
    )
    op.create_index("tasks_by_org", "tasks", ["org_id", "created_at", "task_id"])
    op.create_index("tasks_by_status", "tasks", ["org_id", "status", "created_at", "task_id"])
    op.create_index("tasks_by_namespace", "tasks", ["org_id", "namespace", "created_at", "task_id"])
    op.create_index(
        "tasks_by_namespace_status",
        "tasks",
        ["org_id", "namespace", "status", "created_at", "task_id"],
    )
    op.create_index("tasks_by_process", "tasks", ["process_id", "created_at", "task_id"])
    op.create_table(
        "task_counts",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "namespace", "status"),
    )
    # The triggers first, so that they count the existing tasks too.
    op.execute(_COUNT_TRIGGERS)
    op.execute(_EXISTING_TASKS)


def downgrade() -> None:
    op.drop_table("task_counts")
    op.drop_table("tasks")
    for function in (
        "count_inserted_tasks",
        "count_deleted_tasks",
        "count_task_status_change",
        "forget_task_counts",
    ):
        op.execute(f"DROP FUNCTION {function}()")
    op.drop_index("steps_by_deadline", table_name="steps")
    for column in ("deadline_at", "completed_by", "timeout_seconds"):
        op.drop_column("steps", column)
