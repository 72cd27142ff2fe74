"""The issuers' keys the exchange checks tokens with: fetched by discovery
from a real issuer on 127.0.0.1, cached, fetched again for a key not yet
known at most once per `refetch_seconds`, and refused when the issuer's
documents cannot be trusted or reached."""

import socket

import pytest

from server.domain.errors import Unauthenticated, Unavailable
from server.service.issuer_keys import IssuerKeys
from tests.support.oidc_issuer import running_issuer


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keys(clock: Clock, cache_seconds: float = 600) -> IssuerKeys:
    return IssuerKeys(cache_seconds=cache_seconds, timeout_seconds=5, now=clock)


async def test_keys_are_cached_and_fetched_again_for_an_unknown_key_at_most_once_a_second() -> None:
    clock = Clock()
    issuer_keys = keys(clock)
    with running_issuer() as issuer:
        first = issuer.signing_key.kid
        assert (await issuer_keys.key(issuer.url, first))["kid"] == first
        assert (await issuer_keys.key(issuer.url, None))["kid"] == first  # its only key
        assert issuer.jwks_fetches == 1
        issuer.rotate(keep_old=True)
        rotated = issuer.signing_key.kid
        # Fetched a moment ago: a made-up key id does not make htk ask again.
        with pytest.raises(Unauthenticated, match=r"^kid:"):
            await issuer_keys.key(issuer.url, rotated)
        assert issuer.jwks_fetches == 1
        clock.now += 1.0
        assert (await issuer_keys.key(issuer.url, rotated))["kid"] == rotated
        assert issuer.jwks_fetches == 2
        with pytest.raises(Unauthenticated, match=r"^kid:"):
            await issuer_keys.key(issuer.url, None)  # several keys now: which?


async def test_keys_are_fetched_again_once_the_cache_expires() -> None:
    clock = Clock()
    issuer_keys = keys(clock, cache_seconds=60)
    with running_issuer() as issuer:
        kid = issuer.signing_key.kid
        await issuer_keys.key(issuer.url, kid)
        clock.now += 59
        await issuer_keys.key(issuer.url, kid)
        assert issuer.jwks_fetches == 1
        clock.now += 1
        await issuer_keys.key(issuer.url, kid)
        assert issuer.jwks_fetches == 2


@pytest.mark.parametrize(
    ("discovery", "problem"),
    [
        ({"issuer": "https://elsewhere.example.com"}, "names another issuer"),
        ({"jwks_uri": "http://ci.example.com/jwks"}, "jwks_uri is not https"),
        ({"jwks_uri": None}, "names no jwks_uri"),
    ],
)
async def test_an_issuer_whose_documents_cannot_be_trusted_is_unavailable(
    discovery: dict[str, object], problem: str
) -> None:
    with running_issuer() as issuer:
        issuer.discovery = discovery
        with pytest.raises(Unavailable, match=problem):
            await keys(Clock()).key(issuer.url, issuer.signing_key.kid)


async def test_a_jwks_nested_deeper_than_the_parser_goes_is_unavailable() -> None:
    with running_issuer() as issuer:
        issuer.raw_jwks = b"[" * 100_000 + b"]" * 100_000
        with pytest.raises(Unavailable, match="is not a JSON object"):
            await keys(Clock()).key(issuer.url, issuer.signing_key.kid)


async def test_an_issuer_that_cannot_be_reached_is_unavailable() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        with pytest.raises(Unavailable, match="could not fetch the issuer's signing keys"):
            await keys(Clock()).key(url, "kid")
