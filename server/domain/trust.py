"""Trust policies, and the checks a CI job's OIDC token (a JWT) must pass
before it is traded for a short-lived htk token.

The checks are those PyPI's trusted publishing and the cloud providers make
of the same tokens: a signature by a key the issuer publishes, with that
key's algorithm (a token cannot pick `none`, nor HS256 keyed with the public
key), then `iss`, `aud`, the times and the policy's subject and claims.
Each refusal says which check failed, for the pipeline's author, and never
repeats the token.
"""

import base64
import binascii
import ipaddress
import json
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import import_key

from server.domain import declared
from server.domain.checks import parse_id
from server.domain.errors import InvalidArgument, ResourceExhausted, Unauthenticated
from server.domain.processes import validate_org_id
from server.domain.tokens import Scope, parse_scopes

# Clocks of the CI and of htk may disagree by this much.
MAX_CLOCK_SKEW = timedelta(seconds=60)
MIN_TOKEN_TTL_SECONDS = declared.CREATE_TRUST_POLICY_REQUEST_TOKEN_TTL_SECONDS_MINIMUM
MAX_TOKEN_TTL_SECONDS = declared.CREATE_TRUST_POLICY_REQUEST_TOKEN_TTL_SECONDS_MAXIMUM
DEFAULT_TOKEN_TTL_SECONDS = 900
MAX_SUBJECT_TOKEN_LENGTH = declared.EXCHANGE_TOKEN_REQUEST_SUBJECT_TOKEN_MAX_LENGTH
# Longer claim values than this are not worth comparing, nor showing.
MAX_CLAIM_VALUE_LENGTH = 255
# An exchange checks every policy of the token's issuer, one after another.
MAX_POLICIES_PER_ORGANIZATION = 50
# The signing algorithms of public keys, by what a JWK without `alg` is.
# Symmetric ones (HS*) are never taken: the issuer's key is public.
_ALGORITHMS_OF_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "Ed25519": "EdDSA"}
_ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True)
class TrustPolicy:
    """Which CI jobs may get a token of `org_id`, and what that token may do."""

    policy_id: uuid.UUID
    org_id: str
    name: str
    issuer: str
    audience: str
    # Ends in `*`: a prefix of the token's `sub`.
    subject: str
    claims: Mapping[str, str]
    scopes: frozenset[Scope]
    token_ttl_seconds: int
    created_at: datetime


@dataclass(frozen=True)
class NewPolicy:
    """A policy's fields as checked on creation."""

    name: str
    issuer: str
    audience: str
    subject: str
    claims: Mapping[str, str]
    scopes: frozenset[Scope]
    token_ttl_seconds: int


def new_policy(
    *,
    name: str,
    issuer: str,
    audience: str,
    subject: str,
    claims: Mapping[str, str],
    scopes: Sequence[str],
    token_ttl_seconds: int | None,
) -> NewPolicy:
    """Checks a policy's fields, naming the first one that is wrong."""
    name = unicodedata.normalize("NFKC", name).strip()
    if not name:
        raise InvalidArgument("name", "must not be blank: the tokens it issues are named after it")
    _printable("name", name, declared.CREATE_TRUST_POLICY_REQUEST_NAME_MAX_LENGTH)
    if len(issuer) > declared.CREATE_TRUST_POLICY_REQUEST_ISSUER_MAX_LENGTH:
        raise InvalidArgument(
            "issuer",
            f"must be at most {declared.CREATE_TRUST_POLICY_REQUEST_ISSUER_MAX_LENGTH} characters",
        )
    _printable("audience", audience, declared.CREATE_TRUST_POLICY_REQUEST_AUDIENCE_MAX_LENGTH)
    _printable("subject", subject, declared.CREATE_TRUST_POLICY_REQUEST_SUBJECT_MAX_LENGTH)
    if "*" in subject[:-1]:
        raise InvalidArgument("subject", "may hold `*` only at its end (a prefix match)")
    if subject == "*":
        raise InvalidArgument(
            "subject", "a lone `*` would trust every job of the issuer, others' too"
        )
    if len(claims) > declared.CREATE_TRUST_POLICY_REQUEST_CLAIMS_MAX_ITEMS:
        raise InvalidArgument(
            "claims", f"at most {declared.CREATE_TRUST_POLICY_REQUEST_CLAIMS_MAX_ITEMS}"
        )
    for claim, value in claims.items():
        _printable("claims", claim, MAX_CLAIM_VALUE_LENGTH)
        _printable(f"claims.{claim}", value, MAX_CLAIM_VALUE_LENGTH)
    if len(scopes) > declared.CREATE_TRUST_POLICY_REQUEST_SCOPES_MAX_ITEMS:
        raise InvalidArgument(
            "scopes", f"at most {declared.CREATE_TRUST_POLICY_REQUEST_SCOPES_MAX_ITEMS}"
        )
    # Each item one scope: parse_scopes reads a comma-separated list, which
    # would pass over an empty item and split one holding a comma.
    if any(not scope.strip() or "," in scope for scope in scopes):
        raise InvalidArgument("scopes", "each item must name one scope, e.g. processes:write")
    ttl = DEFAULT_TOKEN_TTL_SECONDS if token_ttl_seconds is None else token_ttl_seconds
    if not MIN_TOKEN_TTL_SECONDS <= ttl <= MAX_TOKEN_TTL_SECONDS:
        raise InvalidArgument(
            "token_ttl_seconds",
            f"must be {MIN_TOKEN_TTL_SECONDS} to {MAX_TOKEN_TTL_SECONDS} seconds",
        )
    return NewPolicy(
        name=name,
        issuer=issuer_url(issuer),
        audience=audience,
        subject=subject,
        claims=dict(claims),
        scopes=parse_scopes(",".join(scopes)),
        token_ttl_seconds=ttl,
    )


def _printable(field: str, value: str, max_length: int) -> None:
    if not value.strip() or not value.isprintable() or len(value) > max_length:
        raise InvalidArgument(
            field, f"must be 1 to {max_length} printable characters, not all spaces"
        )


def check_room_for_policy(count: int) -> None:
    """Refuses a new policy to an organization that has `count` already, if that is the most."""
    if count >= MAX_POLICIES_PER_ORGANIZATION:
        raise ResourceExhausted(
            f"the organization has {count} trust policies, the most it may have"
            f" ({MAX_POLICIES_PER_ORGANIZATION}); delete one it no longer needs"
        )


def issuer_url(text: str) -> str:
    """An issuer's URL, which htk will fetch keys from: https, or http on a
    loopback address alone (a test's issuer), never elsewhere, where anyone
    on the path could swap the keys."""
    try:
        url = urlsplit(text)
        host = url.hostname or ""
        # Raises for a port that is no number or out of range: refused here,
        # not at each exchange (httpx's InvalidURL is no HTTPError: a 500).
        url.port  # noqa: B018
    except ValueError:
        raise InvalidArgument("issuer", "must be a URL") from None
    if url.query or url.fragment or url.username or url.password or not host:
        raise InvalidArgument("issuer", "must be a URL with a host and no query or credentials")
    if url.scheme == "https" or (url.scheme == "http" and _is_loopback(host)):
        return text
    raise InvalidArgument("issuer", "must be an https:// URL (http:// only on a loopback address)")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def discovery_url(issuer: str) -> str:
    """Where the issuer's OpenID configuration is (OpenID Connect Discovery)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True)
class UnverifiedJwt:
    """A JWT's header and claims, read before any check: only to find the
    policies and the key that will check it."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any] = field(repr=False)

    @property
    def issuer(self) -> str:
        issuer = self.claims.get("iss")
        if not isinstance(issuer, str) or not issuer:
            raise Unauthenticated("iss: the CI token names no issuer")
        return issuer

    @property
    def key_id(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def read_jwt(token: str) -> UnverifiedJwt:
    """The header and claims of a compact JWS; refuses anything else, and
    `alg: none` at once."""
    if not token:
        raise InvalidArgument("subject_token", "must be the CI job's OIDC token")
    if len(token) > MAX_SUBJECT_TOKEN_LENGTH:
        raise InvalidArgument(
            "subject_token", f"must be at most {MAX_SUBJECT_TOKEN_LENGTH} characters"
        )
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("subject_token: not a JWT (three base64url parts separated by dots)")
    header, claims = _json_part(parts[0], "header"), _json_part(parts[1], "payload")
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm.lower() == "none":
        raise Unauthenticated("alg: an unsigned token (`alg: none`) is never accepted")
    return UnverifiedJwt(header=header, claims=claims)


def _json_part(part: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    # RecursionError: arrays nested deeper than the parser goes, which a
    # caller without any token may send.
    except (binascii.Error, ValueError, RecursionError):
        raise Unauthenticated(f"subject_token: the JWT's {name} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise Unauthenticated(f"subject_token: the JWT's {name} is not a JSON object")
    return value


def algorithm_of(key: Mapping[str, Any]) -> str:
    """The algorithm a published key signs with: its `alg`, else what its
    type and curve imply. Never chosen by the token: a token saying HS256
    would otherwise be checked with the public key as an HMAC secret."""
    algorithm = key.get("alg")
    if algorithm is None:
        if key.get("kty") == "RSA":
            algorithm = "RS256"
        elif key.get("kty") in ("EC", "OKP"):
            algorithm = _ALGORITHMS_OF_CURVES.get(str(key.get("crv")))
    # A JWKS is the issuer's JSON: `alg` may be any value, a list too.
    if not isinstance(algorithm, str) or algorithm not in _ASYMMETRIC:
        raise Unauthenticated(
            f"alg: the issuer's key {key.get('kid')!r} is not a public signing key htk accepts"
        )
    return str(algorithm)


def verify_signature(token: str, jwt: UnverifiedJwt, key: Mapping[str, Any]) -> None:
    """Checks the signature with the issuer's `key`, by the key's algorithm."""
    algorithm = algorithm_of(key)
    if jwt.header.get("alg") != algorithm:
        raise Unauthenticated(
            f"alg: the token says {str(jwt.header.get('alg'))[:20]!r}, but the issuer's key"
            f" {key.get('kid')!r} signs with {algorithm}"
        )
    try:
        jws.deserialize_compact(token, import_key(dict(key)), algorithms=[algorithm])
    except (JoseError, ValueError, TypeError):
        raise Unauthenticated("signature: the issuer's key does not verify the token") from None


def check_times(claims: Mapping[str, Any], now: datetime) -> None:
    """`exp` must be ahead, `nbf` and `iat` behind, each with MAX_CLOCK_SKEW;
    `exp` and `iat` are required (a token without them never ages)."""
    expires = _time_claim(claims, "exp")
    if expires + MAX_CLOCK_SKEW <= now:
        raise Unauthenticated(f"exp: the CI token expired at {expires.isoformat()}")
    for name in ("nbf", "iat"):
        if name == "nbf" and "nbf" not in claims:
            continue
        moment = _time_claim(claims, name)
        if moment - MAX_CLOCK_SKEW > now:
            raise Unauthenticated(
                f"{name}: the CI token is not valid before {moment.isoformat()} (more than"
                f" {MAX_CLOCK_SKEW.seconds} s ahead of htk's clock)"
            )


def _time_claim(claims: Mapping[str, Any], name: str) -> datetime:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"{name}: the CI token needs `{name}`, in seconds since the epoch")
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise Unauthenticated(f"{name}: out of range") from None


def subject_matches(pattern: str, subject: str) -> bool:
    if pattern.endswith("*"):
        return subject.startswith(pattern[:-1])
    return subject == pattern


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    audience = claims.get("aud")
    if isinstance(audience, str):
        return [audience]
    if isinstance(audience, list):
        return [item for item in audience if isinstance(item, str)]
    return []


def matching_policy(policies: Sequence[TrustPolicy], claims: Mapping[str, Any]) -> TrustPolicy:
    """The policy (of the token's issuer) whose audience, subject and claims
    the verified `claims` match: the oldest if several of one organization
    do. Refuses, naming the check that failed for the closest policy, when
    none does, and when policies of several organizations do (which one the
    job acts for would be a guess: give them distinct audiences)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("sub: the CI token names no subject")
    audiences = _audiences(claims)
    with_audience = [policy for policy in policies if policy.audience in audiences]
    if not with_audience:
        raise Unauthenticated(
            f"aud: no trust policy of this issuer has the audience {_shown(audiences)}"
        )
    with_subject = [p for p in with_audience if subject_matches(p.subject, subject)]
    if not with_subject:
        raise Unauthenticated(
            f"sub: no trust policy of this issuer and audience trusts the subject {subject!r}"
        )
    matching = [p for p in with_subject if _claims_match(p.claims, claims)]
    if not matching:
        missing = next(
            name for name, value in with_subject[0].claims.items() if claims.get(name) != value
        )
        raise Unauthenticated(
            f"claims: {missing!r} does not have the value the trust policy"
            f" {with_subject[0].name!r} requires"
        )
    if len({policy.org_id for policy in matching}) > 1:
        raise Unauthenticated(
            "aud: trust policies of several organizations match this token; name yours in"
            " `organization`"
        )
    return min(matching, key=lambda policy: (policy.created_at, policy.policy_id))


def _claims_match(required: Mapping[str, str], claims: Mapping[str, Any]) -> bool:
    return all(claims.get(name) == value for name, value in required.items())


def _shown(audiences: list[str]) -> str:
    return ", ".join(repr(audience[:100]) for audience in audiences[:5]) or "(none)"


def exchanged_token_name(policy: TrustPolicy, subject: str) -> str:
    """The name of a token a policy issues: `<policy name>:<sub>`, who
    tasks and events record as having acted."""
    if not subject.isprintable():
        raise Unauthenticated("sub: holds control characters")
    return f"{policy.name}:{subject}"


def organization(text: str) -> str:
    """The organization an exchange names (ExchangeTokenRequest.organization)."""
    try:
        return validate_org_id(text)
    except InvalidArgument as error:
        raise InvalidArgument("organization", error.problem) from None


def parse_policy_id(text: str) -> uuid.UUID:
    return parse_id("trust policy", text)
