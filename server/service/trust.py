"""Trust policies, and trading a CI job's OIDC token for a short-lived htk token."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain import tokens, trust
from server.domain.errors import NotFound, Unauthenticated
from server.domain.tokens import Scope
from server.domain.trust import NewPolicy, TrustPolicy
from server.service.issuer_keys import IssuerKeys
from server.service.tokens import insert
from server.service.writes import Clock
from server.storage import organizations
from server.storage import tokens as token_rows
from server.storage import trust as policy_rows
from server.storage.database import Database
from server.storage.tokens import Issued


@dataclass(frozen=True)
class Exchanged:
    """A token issued for a CI job, shown once."""

    token: str
    expires_at: datetime
    scopes: frozenset[Scope]
    name: str


class TrustService:
    def __init__(self, database: Database, clock: Clock, keys: IssuerKeys) -> None:
        self._database = database
        self._clock = clock
        self._keys = keys

    async def create(self, org_id: str, policy: NewPolicy) -> TrustPolicy:
        async with self._database.transaction() as connection:
            trust.check_room_for_policy(
                await organizations.count_locked(connection, org_id, "trust_policies")
            )
            return await policy_rows.insert_policy(connection, org_id, policy, self._clock())

    async def list(self, org_id: str) -> list[TrustPolicy]:
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            return await policy_rows.list_policies(connection, org_id)

    async def delete(self, org_id: str, policy_id: uuid.UUID) -> int:
        """Deletes the organization's policy and revokes, in the same
        transaction, the tokens it issued; returns how many were active. The
        revocations reach every worker as any revocation does."""
        async with self._database.transaction() as connection:
            if not await policy_rows.delete_policy(connection, org_id, policy_id):
                raise NotFound(f"no trust policy {policy_id} in organization {org_id}")
            return await token_rows.revoke_issued_by(connection, policy_id, self._clock())

    async def exchange(self, subject_token: str, org_id: str | None = None) -> Exchanged:
        """A token for the CI job whose OIDC token a policy (of `org_id`, if
        given) trusts; refuses (Unauthenticated, naming the check) any other."""
        jwt = trust.read_jwt(subject_token)
        issuer = jwt.issuer
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            policies = await policy_rows.policies_of_issuer(connection, issuer, org_id)
        if not policies:
            # Before any fetch: only the issuers policies name are ever asked.
            raise Unauthenticated(f"iss: no trust policy trusts the issuer {issuer[:200]!r}")
        trust.verify_signature(subject_token, jwt, await self._keys.key(issuer, jwt.key_id))
        now = self._clock()
        trust.check_times(jwt.claims, now)
        policy = trust.matching_policy(policies, jwt.claims)
        subject = str(jwt.claims["sub"])
        name = trust.exchanged_token_name(policy, subject)
        token = tokens.generate_token()
        expires_at = now + timedelta(seconds=policy.token_ttl_seconds)
        async with self._database.transaction() as connection:
            # Deleting the policy revokes its tokens in its transaction: one
            # issued by a transaction that saw the policy before it went
            # must be among them, so the row is held until this one commits.
            if not await policy_rows.hold(connection, policy.policy_id):
                raise Unauthenticated("the trust policy that matched was deleted just now")
            await insert(
                connection,
                uuid.uuid4(),
                token,
                policy.org_id,
                name,
                policy.scopes,
                now,
                Issued(expires_at=expires_at, policy_id=policy.policy_id, subject=subject),
            )
        return Exchanged(token=token, expires_at=expires_at, scopes=policy.scopes, name=name)
