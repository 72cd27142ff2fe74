"""Organizations and their API tokens' rows, and the notifications of their changes."""

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, and_, any_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage.tables import ApiToken, Organization

# Every change to a token's row is notified here by a trigger (migration 0005).
CHANNEL = "htk_token_changes"


@dataclass(frozen=True)
class TokenChange:
    """That a token's row changed: `token_id` (None: every token, all deleted),
    and whether the token is still active."""

    token_id: uuid.UUID | None
    active: bool

    @classmethod
    def decode(cls, payload: str) -> "TokenChange":
        token_id, active = json.loads(payload)
        return cls(None if token_id is None else uuid.UUID(str(token_id)), bool(active))


@dataclass(frozen=True)
class Issued:
    """What a token a trust policy issued records: when it expires, the
    policy, and the CI job's `sub`."""

    expires_at: datetime
    # None: a person's sign-in (the subject is the provider's `sub`).
    policy_id: uuid.UUID | None
    subject: str


@dataclass(frozen=True)
class TokenInfo:
    """What `htk token list` shows of a token (never the token or its digest)."""

    token_id: uuid.UUID
    name: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None


# A token can be used while its row exists, it is not revoked and, if it
# expires, not expired by the service's clock (`now`, not the database's, so
# that the caches that keep it until then agree).
_NOT_REVOKED = ApiToken.revoked_at.is_(None)
_ACTIVE = and_(
    _NOT_REVOKED,
    or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("now")),
)
# The tokens whose names tell people apart (see tables.ApiToken).
_NAMED_ALONE = and_(_NOT_REVOKED, ApiToken.subject.is_(None))
# Built once: every call runs it (see server/storage/processes.py).
_FIND_UNREVOKED = select(
    ApiToken.token_id,
    ApiToken.org_id,
    ApiToken.name,
    ApiToken.scopes,
    ApiToken.digest,
    ApiToken.expires_at,
).where(ApiToken.digest == bindparam("digest"), _NOT_REVOKED)
_ACTIVE_AMONG = select(ApiToken.token_id).where(
    ApiToken.token_id == any_(bindparam("token_ids")), _ACTIVE
)


async def find_unrevoked(
    connection: AsyncConnection, digest: bytes
) -> Row[uuid.UUID, str, str, list[str], bytes, datetime | None] | None:
    """The unrevoked token with this digest, expired or not (the caller
    tells an expired token's caller so): its token_id, org_id, name,
    scopes, digest and expiry."""
    return (await connection.execute(_FIND_UNREVOKED, {"digest": digest})).one_or_none()


async def active_among(
    connection: AsyncConnection, token_ids: Collection[uuid.UUID], now: datetime
) -> set[uuid.UUID]:
    """Which of these tokens are active at `now` (the others are revoked,
    expired or deleted)."""
    rows = await connection.execute(_ACTIVE_AMONG, {"token_ids": list(token_ids), "now": now})
    return set(rows.scalars())


async def insert_token(
    connection: AsyncConnection,
    *,
    token_id: uuid.UUID,
    org_id: str,
    name: str,
    name_key: str,
    digest: bytes,
    scopes: list[str],
    now: datetime,
    issued: "Issued | None" = None,
) -> bool:
    """Stores a token, and its organization if that is new; False (storing
    nothing) if an active token of the organization not issued by a policy
    has the same name_key (`issued`: the token is a policy's, and expires)."""
    await connection.execute(
        insert(Organization)
        .values(org_id=org_id, created_at=now)
        .on_conflict_do_nothing(index_elements=[Organization.org_id])
    )
    inserted = await connection.execute(
        insert(ApiToken)
        .values(
            token_id=token_id,
            org_id=org_id,
            name=name,
            name_key=name_key,
            digest=digest,
            scopes=scopes,
            created_at=now,
            revoked_at=None,
            expires_at=issued and issued.expires_at,
            policy_id=issued and issued.policy_id,
            subject=issued and issued.subject,
        )
        .on_conflict_do_nothing(
            index_elements=[ApiToken.org_id, ApiToken.name_key], index_where=_NAMED_ALONE
        )
        .returning(ApiToken.token_id)
    )
    return inserted.first() is not None


async def list_tokens(connection: AsyncConnection, org_id: str) -> list[TokenInfo]:
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
            expires_at=row.expires_at,
        )
        for row in rows
    ]


async def revoke_issued_by(connection: AsyncConnection, policy_id: uuid.UUID, now: datetime) -> int:
    """Revokes the active tokens a policy issued; how many."""
    result = await connection.execute(
        update(ApiToken)
        .where(ApiToken.policy_id == policy_id, _ACTIVE)
        .values(revoked_at=now)
        .returning(ApiToken.token_id),
        {"now": now},
    )
    return len(result.all())


async def revoke_active(connection: AsyncConnection, digest: bytes, now: datetime) -> bool:
    """Revokes the active token with this digest; False if there is none."""
    result = await connection.execute(
        update(ApiToken)
        .where(ApiToken.digest == digest, _ACTIVE)
        .values(revoked_at=now)
        .returning(ApiToken.token_id),
        {"now": now},
    )
    return result.first() is not None


async def revoke(connection: AsyncConnection, token_id: uuid.UUID, now: datetime) -> bool:
    """Marks the token revoked (keeping an earlier revocation's time); False if none has the id."""
    result = await connection.execute(
        update(ApiToken)
        .where(ApiToken.token_id == token_id)
        .values(revoked_at=func.coalesce(ApiToken.revoked_at, now))
        .returning(ApiToken.token_id)
    )
    return result.first() is not None
