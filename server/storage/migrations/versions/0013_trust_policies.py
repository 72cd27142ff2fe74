"""trust policies, and tokens that expire and tell which policy or sign-in issued them

Revision ID: 0013
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trust_policies",
        sa.Column("policy_id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("audience", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("claims", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("token_ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.org_id"], name="trust_policies_org_id_fkey"
        ),
        sa.PrimaryKeyConstraint("policy_id", name="trust_policies_pkey"),
    )
    op.create_index("trust_policies_issuer_idx", "trust_policies", ["issuer"])
    # Added NULL: the tokens made before never expire and came from no policy.
    op.add_column(
        "api_tokens", sa.Column("expires_at", postgresql.TIMESTAMP(timezone=True), nullable=True)
    )
    op.add_column("api_tokens", sa.Column("policy_id", sa.Uuid(), nullable=True))
    op.add_column("api_tokens", sa.Column("subject", sa.Text(), nullable=True))
    op.create_index(
        "api_tokens_by_policy",
        "api_tokens",
        ["policy_id"],
        postgresql_where=sa.text("policy_id IS NOT NULL"),
    )
    # Every run of a job gets a token of the same name (`<policy>:<sub>`),
    # and every sign-in of a person one of theirs: the names of tokens
    # issued for an identity are left out of the uniqueness of names.
    op.drop_index("api_tokens_active_name", table_name="api_tokens")
    op.create_index(
        "api_tokens_active_name",
        "api_tokens",
        ["org_id", "name_key"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL AND subject IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("api_tokens_active_name", table_name="api_tokens")
    # Tokens issued for an identity would break the old uniqueness of names.
    op.execute("DELETE FROM api_tokens WHERE subject IS NOT NULL")
    op.create_index(
        "api_tokens_active_name",
        "api_tokens",
        ["org_id", "name_key"],
        unique=True,
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.drop_index("api_tokens_by_policy", table_name="api_tokens")
    for column in ("subject", "policy_id", "expires_at"):
        op.drop_column("api_tokens", column)
    op.drop_index("trust_policies_issuer_idx", table_name="trust_policies")
    op.drop_table("trust_policies")
