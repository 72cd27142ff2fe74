"""The database schema as typed SQLAlchemy models.

Migrations under `migrations/versions/` create and evolve these tables; the
models here describe the schema that the newest migration leaves behind.
"""

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: TIMESTAMP(timezone=True),
        dict[str, Any]: JSONB,
    }


class Organization(Base):
    __tablename__ = "organizations"

    org_id: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime]


class ApiToken(Base):
    __tablename__ = "api_tokens"

    token_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.org_id"))
    name: Mapped[str] = mapped_column(Text)
    # SHA-256 of the token; the token itself is never stored.
    digest: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ProcessRow(Base):
    __tablename__ = "processes"

    process_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.org_id"))
    namespace: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    # Copied from the steps so that a list page reads this table alone:
    # current_step is rewritten with every update, the others never change.
    current_step: Mapped[str | None] = mapped_column(Text)
    step_count: Mapped[int] = mapped_column(Integer)
    task_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    summary: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    update_count: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        # Each List filter and both sort orders (scanned backwards for
        # `oldest`) walk one of these; process_id breaks ties in started_at.
        Index("processes_by_org", "org_id", "started_at", "process_id"),
        Index("processes_by_status", "org_id", "status", "started_at", "process_id"),
        Index("processes_by_namespace", "org_id", "namespace", "started_at", "process_id"),
        Index(
            "processes_by_namespace_status",
            "org_id",
            "namespace",
            "status",
            "started_at",
            "process_id",
        ),
        # Case-insensitive substring search on the name (ILIKE '%term%').
        Index(
            "processes_name_trigram",
            "name",
            postgresql_using="gin",
            postgresql_ops={"name": "gin_trgm_ops"},
        ),
    )


class StepRow(Base):
    __tablename__ = "steps"

    process_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("processes.process_id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text)
    human: Mapped[bool]
    task_id: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    status: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    detail: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    progress_message: Mapped[str | None] = mapped_column(Text)
    progress_percent: Mapped[int | None] = mapped_column(Integer)
    started_seq: Mapped[int | None] = mapped_column(Integer)
    changed_seq: Mapped[int | None] = mapped_column(Integer)
    timeout_seconds: Mapped[int | None] = mapped_column(Integer)
    completed_by: Mapped[str | None] = mapped_column(Text)
    deadline_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("process_id", "key"),
        # The timeout scanner's walk over the steps due, oldest deadline
        # first; only the few steps with a deadline are in it.
        Index(
            "steps_by_deadline",
            "deadline_at",
            postgresql_where=text("deadline_at IS NOT NULL"),
        ),
    )


class TaskRow(Base):
    """The task of a human step, with what lists show of its process and step.

    A table of its own rather than columns on `steps`: tasks are listed
    across processes by organization, namespace and status, which steps do
    not carry, and a task changes a handful of times while its step may take
    many progress updates, which should not rewrite task indexes.
    """

    __tablename__ = "tasks"

    # The step's task_id: a task exists exactly as long as its step does.
    task_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("steps.task_id", ondelete="CASCADE"), primary_key=True
    )
    process_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    org_id: Mapped[str] = mapped_column(Text)
    namespace: Mapped[str] = mapped_column(Text)
    process_name: Mapped[str] = mapped_column(Text)
    step: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    completed_by: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # Each ListTasks filter walks one of these, newest first; task_id
        # breaks ties in created_at (a process's tasks share it).
        Index("tasks_by_org", "org_id", "created_at", "task_id"),
        Index("tasks_by_status", "org_id", "status", "created_at", "task_id"),
        Index("tasks_by_namespace", "org_id", "namespace", "created_at", "task_id"),
        Index(
            "tasks_by_namespace_status", "org_id", "namespace", "status", "created_at", "task_id"
        ),
        # A process has at most 100 tasks: its own filters need nothing more.
        Index("tasks_by_process", "process_id", "created_at", "task_id"),
    )


class ProcessEvent(Base):
    """The append-only log of accepted updates, one row per update."""

    __tablename__ = "process_events"

    process_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("processes.process_id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    step: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]
    recorded_at: Mapped[datetime]


class Counts:
    """How many rows of a listed table an organization has per namespace and
    status.

    Triggers on the listed table keep these in step with every insert, status
    change, delete and truncate, in the same transaction, so a List's exact
    `total` reads a few rows instead of counting a million.
    """

    org_id: Mapped[str] = mapped_column(Text, primary_key=True)
    namespace: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class ProcessCount(Counts, Base):
    """Counts of `processes` (triggers of migrations 0002 and 0003)."""

    __tablename__ = "process_counts"


class TaskCount(Counts, Base):
    """Counts of `tasks` (triggers of migration 0004)."""

    __tablename__ = "task_counts"


class IdempotencyKeyRow(Base):
    """A write's Idempotency-Key, with the response its first request got."""

    __tablename__ = "idempotency_keys"

    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.org_id"), primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    # Tells a retry (same request) from a reuse of the key (another request).
    request_fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    # NULL only inside the transaction that claimed the key and does the work.
    response: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]

    __table_args__ = (Index("idempotency_keys_by_age", "created_at"),)
