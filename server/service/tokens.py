"""API tokens: authenticating callers, and the `htk token` commands."""

import hmac
import uuid

from server.domain import tokens
from server.domain.tokens import Caller, Scope
from server.service.writes import Clock
from server.storage import tokens as token_rows
from server.storage.database import Database
from server.storage.tokens import TokenInfo


class TokenService:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._database = database
        self._clock = clock

    async def authenticate(self, token: str) -> Caller | None:
        """The caller a well-formed token stands for, or None if it is unknown or revoked."""
        presented = tokens.digest(token)
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            row = await token_rows.find_active(connection, presented)
        # The index finds the row by the token's SHA-256, whose bytes a caller
        # cannot steer towards a real token's; the final say is a constant-time
        # comparison all the same, so no byte-wise early exit decides access.
        if row is None or not hmac.compare_digest(row.digest, presented):
            return None
        return Caller(
            org_id=row.org_id,
            token_name=row.name,
            scopes=frozenset(Scope(name) for name in row.scopes),
        )

    async def create(
        self, org_id: str, name: str, scopes: frozenset[Scope]
    ) -> tuple[uuid.UUID, str]:
        """Creates a token (and its organization, if new); returns its id and the token."""
        token = tokens.generate_token()
        token_id = uuid.uuid4()
        async with self._database.transaction() as connection:
            await token_rows.insert_token(
                connection,
                token_id=token_id,
                org_id=org_id,
                name=name,
                digest=tokens.digest(token),
                scopes=sorted(scope.value for scope in scopes),
                now=self._clock(),
            )
        return token_id, token

    async def list(self, org_id: str) -> list[TokenInfo]:
        async with self._database.transaction() as connection:
            return await token_rows.list_tokens(connection, org_id)

    async def revoke(self, token_id: uuid.UUID) -> bool:
        """Revokes the token; False if no token has that id."""
        async with self._database.transaction() as connection:
            return await token_rows.revoke(connection, token_id, self._clock())
