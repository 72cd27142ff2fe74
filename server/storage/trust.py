"""Trust policies' rows."""

import uuid
from datetime import datetime

from sqlalchemy import Row, bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.tokens import Scope
from server.domain.trust import NewPolicy, TrustPolicy
from server.storage.tables import Organization, TrustPolicyRow

_COLUMNS = TrustPolicyRow.__table__.columns
# Built once: every exchange runs it.
_BY_ISSUER = select(*_COLUMNS).where(TrustPolicyRow.issuer == bindparam("issuer"))
_BY_ISSUER_OF_ORG = _BY_ISSUER.where(TrustPolicyRow.org_id == bindparam("org_id"))


def _policy(row: Row[object]) -> TrustPolicy:
    return TrustPolicy(
        policy_id=row.policy_id,
        org_id=row.org_id,
        name=row.name,
        issuer=row.issuer,
        audience=row.audience,
        subject=row.subject,
        claims=dict(row.claims),
        scopes=frozenset(Scope(scope) for scope in row.scopes),
        token_ttl_seconds=row.token_ttl_seconds,
        created_at=row.created_at,
    )


async def insert_policy(
    connection: AsyncConnection, org_id: str, policy: NewPolicy, now: datetime
) -> TrustPolicy:
    """Stores a policy, and its organization if that is new."""
    await connection.execute(
        insert(Organization)
        .values(org_id=org_id, created_at=now)
        .on_conflict_do_nothing(index_elements=[Organization.org_id])
    )
    row = (
        await connection.execute(
            insert(TrustPolicyRow)
            .values(
                policy_id=uuid.uuid4(),
                org_id=org_id,
                name=policy.name,
                issuer=policy.issuer,
                audience=policy.audience,
                subject=policy.subject,
                claims=dict(policy.claims),
                scopes=sorted(policy.scopes),
                token_ttl_seconds=policy.token_ttl_seconds,
                created_at=now,
            )
            .returning(*_COLUMNS)
        )
    ).one()
    return _policy(row)


async def list_policies(connection: AsyncConnection, org_id: str) -> list[TrustPolicy]:
    rows = await connection.execute(
        select(*_COLUMNS)
        .where(TrustPolicyRow.org_id == org_id)
        .order_by(TrustPolicyRow.created_at, TrustPolicyRow.policy_id)
    )
    return [_policy(row) for row in rows]


async def policies_of_issuer(
    connection: AsyncConnection, issuer: str, org_id: str | None
) -> list[TrustPolicy]:
    """The policies that trust `issuer`: `org_id`'s, or every organization's (None)."""
    if org_id is None:
        rows = await connection.execute(_BY_ISSUER, {"issuer": issuer})
    else:
        rows = await connection.execute(_BY_ISSUER_OF_ORG, {"issuer": issuer, "org_id": org_id})
    return [_policy(row) for row in rows]


async def delete_policy(connection: AsyncConnection, org_id: str, policy_id: uuid.UUID) -> bool:
    """Deletes the organization's policy; False if it has none with that id."""
    result = await connection.execute(
        delete(TrustPolicyRow)
        .where(TrustPolicyRow.policy_id == policy_id, TrustPolicyRow.org_id == org_id)
        .returning(TrustPolicyRow.policy_id)
    )
    return result.first() is not None


async def hold(connection: AsyncConnection, policy_id: uuid.UUID) -> bool:
    """Keeps the policy from being deleted until the transaction ends;
    False if it is gone already."""
    row = await connection.execute(
        select(TrustPolicyRow.policy_id)
        .where(TrustPolicyRow.policy_id == policy_id)
        .with_for_update(read=True, key_share=True)
    )
    return row.first() is not None
