"""who did what: token names unique among active tokens, and token ids on processes, steps and tasks

Revision ID: 0007
Revises: 0006
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _name_key(name: str) -> str:
    # server.domain.tokens.name_key, written out here since a migration must
    # keep meaning what it meant when it ran.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def upgrade() -> None:
    # Who created a process and who started a step may not decide its tasks;
    # who decided is recorded by id too, since a name may later be reused.
    # No foreign keys: a token's row may be deleted while history stays.
    op.add_column("processes", sa.Column("created_by_token_id", sa.Uuid(), nullable=True))
    op.add_column("steps", sa.Column("completed_by_token_id", sa.Uuid(), nullable=True))
    op.add_column("steps", sa.Column("started_by_token_id", sa.Uuid(), nullable=True))
    op.add_column("tasks", sa.Column("completed_by_token_id", sa.Uuid(), nullable=True))

    op.add_column("api_tokens", sa.Column("name_key", sa.Text(), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT token_id, org_id, name, revoked_at FROM api_tokens ORDER BY created_at")
    ).all()
    taken: set[tuple[str, str]] = set()
    for token_id, org_id, name, revoked_at in rows:
        key = _name_key(name)
        if revoked_at is None and (org_id, key) in taken:
            # Active tokens that already share a name keep working; the
            # later ones get their id in their name, so that names are unique.
            name = f"{name} ({str(token_id)[:8]})"
            key = _name_key(name)
        if revoked_at is None:
            taken.add((org_id, key))
        connection.execute(
            sa.text("UPDATE api_tokens SET name = :name, name_key = :key WHERE token_id = :id"),
            {"name": name, "key": key, "id": token_id},
        )
    op.alter_column("api_tokens", "name_key", nullable=False)
    op.create_index(
        "api_tokens_active_name",
        "api_tokens",
        ["org_id", "name_key"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("api_tokens_active_name", table_name="api_tokens")
    op.drop_column("api_tokens", "name_key")
    op.drop_column("tasks", "completed_by_token_id")
    op.drop_column("steps", "started_by_token_id")
    op.drop_column("steps", "completed_by_token_id")
    op.drop_column("processes", "created_by_token_id")
