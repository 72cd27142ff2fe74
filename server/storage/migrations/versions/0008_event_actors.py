"""who did what, by name: each event's actor and each process's creator

Revision ID: 0008
Revises: 0007
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# server.domain.tokens.SYSTEM_ACTOR and name_key, written out here since a
# migration must keep meaning what it meant when it ran.
_SYSTEM_ACTOR = "htk"


def _name_key(name: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def upgrade() -> None:
    # Names, not only token ids: a token's row may be deleted, and its name
    # given to another once it is revoked, while history must still read as
    # it happened.
    op.add_column("process_events", sa.Column("actor", sa.Text(), nullable=True))
    op.add_column("processes", sa.Column("created_by", sa.Text(), nullable=True))
    connection = op.get_bind()
    connection.execute(
        sa.text(
            "UPDATE processes AS p SET created_by = t.name FROM api_tokens AS t"
            " WHERE t.token_id = p.created_by_token_id"
        )
    )
    # What the old events themselves tell: who decided a task, and that htk
    # timed a step out. Who sent an update was never recorded: it stays NULL.
    connection.execute(
        sa.text(
            "UPDATE process_events SET actor = payload->>'completed_by'"
            " WHERE type = 'task_completed'"
        )
    )
    connection.execute(
        sa.text("UPDATE process_events SET actor = :htk WHERE type = 'step_timed_out'"),
        {"htk": _SYSTEM_ACTOR},
    )
    # htk's name is now its own: an active token that has it is renamed as
    # 0007 renamed duplicates, so that an actor `htk` is always htk.
    for token_id, name in connection.execute(
        sa.text("SELECT token_id, name FROM api_tokens WHERE revoked_at IS NULL")
    ).all():
        if _name_key(name) == _name_key(_SYSTEM_ACTOR):
            renamed = f"{name} ({str(token_id)[:8]})"
            connection.execute(
                sa.text("UPDATE api_tokens SET name = :name, name_key = :key WHERE token_id = :id"),
                {"name": renamed, "key": _name_key(renamed), "id": token_id},
            )


def downgrade() -> None:
    op.drop_column("processes", "created_by")
    op.drop_column("process_events", "actor")
