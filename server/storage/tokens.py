"""Organizations and their API tokens."""

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert

from server.domain import tokens
from server.domain.processes import utc_now
from server.domain.tokens import Caller, Scope
from server.storage.database import Database
from server.storage.tables import ApiToken, Organization


@dataclass(frozen=True)
class TokenInfo:
    """What `htk token list` shows of a token (never the token or its digest)."""

    token_id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


# Built once: every call runs it (see server/storage/processes.py).
_FIND_TOKEN = select(ApiToken.org_id, ApiToken.scopes, ApiToken.name, ApiToken.digest).where(
    ApiToken.digest == bindparam("digest"), ApiToken.revoked_at.is_(None)
)


class TokenStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def authenticate(self, token: str) -> Caller | None:
        """The caller a well-formed token stands for, or None if it is unknown or revoked."""
        presented = tokens.digest(token)
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            row = (await connection.execute(_FIND_TOKEN, {"digest": presented})).one_or_none()
        # The index finds the row by the token's SHA-256, whose bytes a caller
        # cannot steer towards a real token's; the final say is a constant-time
        # comparison all the same, so no byte-wise early exit decides access.
        if row is None or not hmac.compare_digest(row.digest, presented):
            return None
        return Caller(
            org_id=row.org_id,
            scopes=frozenset(Scope(name) for name in row.scopes),
            token_name=row.name,
        )

    async def create(
        self, org_id: str, name: str, scopes: frozenset[Scope]
    ) -> tuple[uuid.UUID, str]:
        """Creates a token (and its organization, if new); returns its id and the token."""
        token = tokens.generate_token()
        token_id = uuid.uuid4()
        now = utc_now()
        async with self._database.transaction() as connection:
            await connection.execute(
                insert(Organization)
                .values(org_id=org_id, created_at=now)
                .on_conflict_do_nothing(index_elements=[Organization.org_id])
            )
            await connection.execute(
                insert(ApiToken).values(
                    token_id=token_id,
                    org_id=org_id,
                    name=name,
                    digest=tokens.digest(token),
                    scopes=sorted(scope.value for scope in scopes),
                    created_at=now,
                    revoked_at=None,
                )
            )
        return token_id, token

    async def list(self, org_id: str) -> list[TokenInfo]:
        async with self._database.transaction() as connection:
            rows = (
                await connection.execute(
                    select(*ApiToken.__table__.columns)
                    .where(ApiToken.org_id == org_id)
                    .order_by(ApiToken.created_at)
                )
            ).all()
            return [
                TokenInfo(
                    token_id=row.token_id,
                    name=row.name,
                    scopes=list(row.scopes),
                    created_at=row.created_at,
                    revoked_at=row.revoked_at,
                )
                for row in rows
            ]

    async def revoke(self, token_id: uuid.UUID) -> bool:
        """Revokes the token; False if no token has that id."""
        async with self._database.transaction() as connection:
            result = await connection.execute(
                update(ApiToken)
                .where(ApiToken.token_id == token_id)
                .values(revoked_at=func.coalesce(ApiToken.revoked_at, utc_now()))
                .returning(ApiToken.token_id)
            )
            return result.first() is not None
