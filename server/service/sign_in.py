"""Signing people in with the identity provider, and out (see server/domain/sign_in.py)."""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from server.domain import tokens, trust
from server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    Unauthenticated,
    Unavailable,
)
from server.domain.sign_in import Person, Provider, check_finish
from server.service.issuer_keys import IssuerKeys
from server.service.tokens import insert
from server.service.writes import Clock
from server.storage import tokens as token_rows
from server.storage.database import Database
from server.storage.tokens import Issued


@dataclass(frozen=True)
class SignedIn:
    token: str
    expires_at: datetime
    person: Person


class SignInService:
    """Sign-ins with `provider` (None: none configured), its keys from `keys`."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        keys: IssuerKeys,
        provider: Provider | None,
        timeout_seconds: float,
    ) -> None:
        self._database = database
        self._clock = clock
        self._keys = keys
        self._provider = provider
        self._timeout_seconds = timeout_seconds

    def provider_name(self) -> str | None:
        """The provider's host name; None without one."""
        return urlsplit(self._provider.issuer).hostname if self._provider else None

    def _configured(self) -> Provider:
        if self._provider is None:
            raise FailedPrecondition("no identity provider is configured here (HTK_OIDC_ISSUER)")
        return self._provider

    async def start(self, redirect_uri: str) -> str:
        provider = self._configured()
        endpoint = await self._endpoint(provider, "authorization_endpoint")
        return provider.start(endpoint, redirect_uri, self._clock())

    async def finish(self, code: str, state: str, redirect_uri: str) -> SignedIn:
        provider = self._configured()
        check_finish(code, state, redirect_uri)
        pending = provider.open_state(state, redirect_uri, self._clock())
        id_token = await self._id_token(provider, code, redirect_uri, pending.verifier)
        jwt = trust.read_jwt(id_token)
        if jwt.issuer != provider.issuer:
            raise Unauthenticated("iss: the ID token comes from another issuer")
        trust.verify_signature(id_token, jwt, await self._keys.key(provider.issuer, jwt.key_id))
        now = self._clock()
        trust.check_times(jwt.claims, now)
        person = provider.person(jwt.claims, pending.nonce)
        token = tokens.generate_token()
        expires_at = now + timedelta(hours=provider.token_hours)
        async with self._database.transaction() as connection:
            await insert(
                connection,
                uuid.uuid4(),
                token,
                person.org_id,
                tokens.token_name(person.name),
                person.scopes,
                now,
                Issued(expires_at=expires_at, policy_id=None, subject=person.subject),
            )
        return SignedIn(token=token, expires_at=expires_at, person=person)

    async def sign_out(self, token: str) -> None:
        """Revokes `token`: holding it is the right to end it."""
        if not tokens.is_well_formed(token):
            raise InvalidArgument("token", "must be an htk token (htk_...)")
        async with self._database.transaction() as connection:
            if not await token_rows.revoke_active(connection, tokens.digest(token), self._clock()):
                raise Unauthenticated("invalid token: unknown or revoked")

    async def _endpoint(self, provider: Provider, name: str) -> str:
        endpoint = (await self._keys.configuration(provider.issuer)).get(name)
        if not isinstance(endpoint, str):
            raise Unavailable(f"the identity provider's configuration names no {name}")
        trust.issuer_url(endpoint)  # https, or http on loopback
        return endpoint

    async def _id_token(
        self, provider: Provider, code: str, redirect_uri: str, verifier: str
    ) -> str:
        """The ID token the provider gives for `code` (server to provider,
        with the client secret and the PKCE verifier)."""
        endpoint = await self._endpoint(provider, "token_endpoint")
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout_seconds, follow_redirects=False
            ) as client:
                response = await client.post(
                    endpoint,
                    auth=(provider.client_id, provider.client_secret),
                    data={
                        "grant_type": "authorization_code",
                        "code": code,
                        "redirect_uri": redirect_uri,
                        "code_verifier": verifier,
                    },
                    headers={"accept": "application/json"},
                )
        except httpx.HTTPError as error:
            raise Unavailable(
                f"could not reach the identity provider ({type(error).__name__}); retry"
            ) from None
        answer: Any = _json(response)
        if response.status_code != 200:
            problem = answer.get("error", response.status_code) if isinstance(answer, dict) else ""
            raise Unauthenticated(f"code: the identity provider refused it ({str(problem)[:80]})")
        id_token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(id_token, str):
            raise Unauthenticated("code: the identity provider sent no ID token")
        return id_token


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
