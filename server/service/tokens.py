"""API tokens: authenticating callers, and the `htk token` commands."""

import hmac
import uuid
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain import tokens
from server.domain.errors import AlreadyExists, Unauthenticated
from server.domain.token_cache import CallerCache
from server.domain.tokens import Caller, Scope
from server.metrics import TOKEN_CACHE_HIT, TOKEN_CACHE_MISS, TOKEN_CACHE_REFUSED
from server.service.writes import Clock
from server.storage import tokens as token_rows
from server.storage.database import Database
from server.storage.notifications import Subscription
from server.storage.tokens import Issued, TokenChange, TokenInfo

# Why a token that worked is refused now that it has expired.
EXPIRED = "invalid token: expired"


class TokenService:
    """The `htk token` commands, and authenticating callers: through `cache`
    if given (kept current by `token_changes`), else with a lookup each time."""

    def __init__(self, database: Database, clock: Clock, cache: CallerCache | None = None) -> None:
        self._database = database
        self._clock = clock
        self._cache = cache

    def remembered(self, token: str) -> Caller | None:
        """The caller of a token the cache holds, found without checking the
        token's shape (the cache holds only tokens that passed it); None: ask
        `authenticate`. The cache keeps tokens by their SHA-256, as the
        database does, so that no raw token outlives its call in memory."""
        if self._cache is None:
            return None
        caller = self._cache.get(tokens.digest(token))
        if caller is None:
            return None
        # An expiry is a change no one is told of: checked at each call, by
        # the service's clock, which `authenticate` uses too.
        self._refuse_if_expired(caller)
        TOKEN_CACHE_HIT.inc()
        return caller

    async def authenticate(self, token: str) -> Caller | None:
        """The caller a well-formed token stands for, or None if it is unknown
        or revoked; raises Unauthenticated saying so if it expired.
        `remembered` has answered first for a token the cache holds."""
        presented = tokens.digest(token)
        if self._cache is not None:
            if self._cache.is_unknown(presented):
                TOKEN_CACHE_REFUSED.inc()
                return None
            TOKEN_CACHE_MISS.inc()
        generation = self._cache.generation if self._cache is not None else 0
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            row = await token_rows.find_unrevoked(connection, presented)
        # The index finds the row by the token's SHA-256, whose bytes a caller
        # cannot steer towards a real token's; the final say is a constant-time
        # comparison all the same, so no byte-wise early exit decides access.
        if row is None or not hmac.compare_digest(row.digest, presented):
            if self._cache is not None:
                self._cache.put_unknown(presented, generation)
            return None
        caller = Caller(
            org_id=row.org_id,
            token_name=row.name,
            scopes=frozenset(Scope(name) for name in row.scopes),
            token_id=row.token_id,
            expires_at=row.expires_at,
        )
        # Kept even once expired, so that its next calls are told so without a
        # query; its revocation removes it as any other's does.
        if self._cache is not None:
            self._cache.put(presented, caller, generation)
        self._refuse_if_expired(caller)
        return caller

    def _refuse_if_expired(self, caller: Caller) -> None:
        # Said as such, not as "unknown": the pipeline's author then knows to
        # exchange again, or to raise the policy's TTL.
        if caller.expires_at is not None and caller.expires_at <= self._clock():
            raise Unauthenticated(EXPIRED)

    async def create(
        self, org_id: str, name: str, scopes: frozenset[Scope]
    ) -> tuple[uuid.UUID, str]:
        """Creates a token (and its organization, if new); returns its id and the token."""
        name = tokens.token_name(name)
        token = tokens.generate_token()
        token_id = uuid.uuid4()
        async with self._database.transaction() as connection:
            created = await insert(connection, token_id, token, org_id, name, scopes, self._clock())
        if not created:
            raise AlreadyExists(
                f"name: an active token of {org_id} is already named {name!r} (names compare"
                " ignoring case and width); pick another name, or revoke that token first"
            )
        return token_id, token

    async def list(self, org_id: str) -> list[TokenInfo]:
        async with self._database.transaction() as connection:
            return await token_rows.list_tokens(connection, org_id)

    async def revoke(self, token_id: uuid.UUID) -> bool:
        """Revokes the token; False if no token has that id."""
        async with self._database.transaction() as connection:
            return await token_rows.revoke(connection, token_id, self._clock())


async def insert(
    connection: AsyncConnection,
    token_id: uuid.UUID,
    token: str,
    org_id: str,
    name: str,
    scopes: frozenset[Scope],
    now: datetime,
    issued: Issued | None = None,
) -> bool:
    """Stores a new token by its digest (see `token_rows.insert_token`)."""
    return await token_rows.insert_token(
        connection,
        token_id=token_id,
        org_id=org_id,
        name=name,
        name_key=tokens.name_key(name),
        digest=tokens.digest(token),
        scopes=sorted(scope.value for scope in scopes),
        now=now,
        issued=issued,
    )


def token_changes(
    cache: CallerCache,
    *,
    revoked: Callable[[uuid.UUID | None], None],
    check_tokens: Callable[[], None],
) -> Subscription[TokenChange]:
    """Keeps `cache` current with what the listening connection hears of
    tokens, calls `revoked` with each token that is no longer active (None:
    every token), and `check_tokens` whenever a change may have gone unheard
    (listening again, or a notification not understood)."""

    def heard(change: TokenChange) -> None:
        if change.token_id is None:
            cache.forget_all()
        else:
            cache.forget(change.token_id)
        if not change.active:
            revoked(change.token_id)

    def listening() -> None:
        cache.trust()
        check_tokens()

    def missed() -> None:
        cache.forget_all()
        check_tokens()

    return Subscription(
        channel=token_rows.CHANNEL,
        decode=TokenChange.decode,
        heard=heard,
        listening=listening,
        deaf=cache.distrust,
        missed=missed,
    )
