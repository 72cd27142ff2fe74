"""every change to an API token notified, so that servers drop what they cached of it

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A trigger, not the service's own writes: a revocation by `htk token revoke`,
# an operator's UPDATE or DELETE, or a TRUNCATE all reach every server. The
# payload is the token's id and whether it is still active (never the token
# or its digest): `[token_id, active]`, or `[null, false]` for every token.
# The channel is server.storage.tokens.CHANNEL, written out here since
# a migration must keep meaning what it meant when it ran.
_NOTIFY_CHANGES = """
CREATE FUNCTION notify_token_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  active boolean := false;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('htk_token_changes', json_build_array(NULL, false)::text);
    RETURN NULL;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    active := NEW.revoked_at IS NULL;
  END IF;
  PERFORM pg_notify('htk_token_changes', json_build_array(OLD.token_id, active)::text);
  RETURN NULL;
END $$;

CREATE TRIGGER api_tokens_notified_on_update AFTER UPDATE ON api_tokens
  FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW)
  EXECUTE FUNCTION notify_token_change();
CREATE TRIGGER api_tokens_notified_on_delete AFTER DELETE ON api_tokens
  FOR EACH ROW EXECUTE FUNCTION notify_token_change();
CREATE TRIGGER api_tokens_notified_on_truncate AFTER TRUNCATE ON api_tokens
  FOR EACH STATEMENT EXECUTE FUNCTION notify_token_change();
"""


def upgrade() -> None:
    op.execute(_NOTIFY_CHANGES)


def downgrade() -> None:
    for trigger in ("update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER api_tokens_notified_on_{trigger} ON api_tokens")
    op.execute("DROP FUNCTION notify_token_change()")
