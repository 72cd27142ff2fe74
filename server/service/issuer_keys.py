"""The signing keys OIDC issuers publish (their JWKS), fetched and cached.

Found the way OpenID Connect Discovery says: `<issuer>/.well-known/
openid-configuration` names the `jwks_uri`. Only issuers a trust policy names
are ever fetched (the exchange looks policies up first), so a token cannot
send htk to an address of its choosing. Keys are kept `cache_seconds`; a
token naming a key not among them fetches them again at once (the issuer
rotated its keys), but at most every `refetch_seconds`, so that made-up key
ids do not make htk hammer the issuer. Concurrent fetches of one issuer are
one fetch.
"""

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from server.domain.errors import InvalidArgument, Unauthenticated, Unavailable
from server.domain.trust import discovery_url, issuer_url

# Discovery documents and key sets are a few KiB; anything past this is not one.
MAX_DOCUMENT_BYTES = 256 * 1024


@dataclass(frozen=True)
class _KeySet:
    keys: Mapping[str, Mapping[str, Any]]  # by kid
    # The issuer's OpenID configuration they were found by (its endpoints).
    configuration: Mapping[str, Any]
    fetched_at: float


class IssuerKeys:
    """The published signing keys of issuers, by key id."""

    def __init__(
        self,
        *,
        cache_seconds: float,
        timeout_seconds: float,
        refetch_seconds: float = 1.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache_seconds = cache_seconds
        self._timeout_seconds = timeout_seconds
        self._refetch_seconds = refetch_seconds
        self._now = now
        self._key_sets: dict[str, _KeySet] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0

    async def key(self, issuer: str, key_id: str | None) -> Mapping[str, Any]:
        """The issuer's key `key_id` (None: its only key); refuses a key it
        does not publish."""
        key_set = self._key_sets.get(issuer)
        if key_set is None or not self._fresh(key_set) or not _has(key_set, key_id):
            key_set = await self._refreshed(issuer, key_set)
        if key_id is None:
            if len(key_set.keys) != 1:
                raise Unauthenticated(
                    "kid: the token names no key, and its issuer publishes several"
                )
            return next(iter(key_set.keys.values()))
        key = key_set.keys.get(key_id)
        if key is None:
            raise Unauthenticated(
                f"kid: the issuer publishes no signing key {key_id[:100]!r} (its keys were"
                " fetched just now)"
            )
        return key

    async def configuration(self, issuer: str) -> Mapping[str, Any]:
        """The issuer's OpenID configuration, fetched and kept with its keys."""
        key_set = self._key_sets.get(issuer)
        if key_set is None or not self._fresh(key_set):
            key_set = await self._refreshed(issuer, key_set)
        return key_set.configuration

    def _fresh(self, key_set: _KeySet) -> bool:
        return self._now() - key_set.fetched_at < self._cache_seconds

    async def _refreshed(self, issuer: str, seen: _KeySet | None) -> _KeySet:
        lock = self._locks.setdefault(issuer, asyncio.Lock())
        async with lock:
            current = self._key_sets.get(issuer)
            if current is not seen and current is not None:
                return current  # another call fetched them meanwhile
            if (
                current is not None
                and self._fresh(current)
                and self._now() - current.fetched_at < self._refetch_seconds
            ):
                return current
            keys, configuration = await self._fetch(issuer)
            key_set = _KeySet(keys, configuration, self._now())
            self._key_sets[issuer] = key_set
            return key_set

    async def _fetch(self, issuer: str) -> tuple[dict[str, Mapping[str, Any]], dict[str, Any]]:
        self.fetches += 1
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout_seconds, follow_redirects=False
            ) as client:
                configuration = await _document(client, discovery_url(issuer))
                if configuration.get("issuer") != issuer:
                    raise Unavailable(
                        "the issuer's OpenID configuration names another issuer; htk trusts neither"
                    )
                jwks_uri = configuration.get("jwks_uri")
                if not isinstance(jwks_uri, str):
                    raise Unavailable("the issuer's OpenID configuration names no jwks_uri")
                try:
                    issuer_url(jwks_uri)
                except InvalidArgument:
                    raise Unavailable(
                        "the issuer's jwks_uri is not https (nor http on loopback)"
                    ) from None
                jwks = await _document(client, jwks_uri)
        except httpx.HTTPError as error:
            raise Unavailable(
                f"could not fetch the issuer's signing keys ({type(error).__name__}); retry"
            ) from None
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise Unavailable("the issuer's JWKS has no `keys` list")
        signing: dict[str, Mapping[str, Any]] = {
            str(key.get("kid", "")): key
            for key in keys
            if isinstance(key, dict) and key.get("use", "sig") == "sig"
        }
        return signing, configuration


def _has(key_set: _KeySet, key_id: str | None) -> bool:
    return key_id is None or key_id in key_set.keys


async def _document(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """A JSON object from `url`, of at most MAX_DOCUMENT_BYTES."""
    async with client.stream("GET", url, headers={"accept": "application/json"}) as response:
        if response.status_code != 200:
            raise Unavailable(
                f"the issuer answered {response.status_code} for {url[:200]}; retry later"
            )
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise Unavailable(f"the issuer's document at {url[:200]} is too large")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # nested deeper than the parser goes
        document = None
    if not isinstance(document, dict):
        raise Unavailable(f"the issuer's document at {url[:200]} is not a JSON object")
    return document
