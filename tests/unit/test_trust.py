"""Unit tests for server.domain.trust: policies' fields, and each check a CI
token must pass, with keys made here (no network)."""

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from server.domain.errors import InvalidArgument, NotFound, ResourceExhausted, Unauthenticated
from server.domain.tokens import Scope
from server.domain.trust import (
    MAX_CLOCK_SKEW,
    MAX_POLICIES_PER_ORGANIZATION,
    TrustPolicy,
    algorithm_of,
    check_room_for_policy,
    check_times,
    exchanged_token_name,
    issuer_url,
    matching_policy,
    new_policy,
    parse_policy_id,
    read_jwt,
    subject_matches,
    verify_signature,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ISSUER = "https://token.actions.githubusercontent.com"


def a_policy(**fields: Any) -> TrustPolicy:
    values: dict[str, Any] = {
        "policy_id": uuid.uuid4(),
        "org_id": "acme",
        "name": "app main",
        "issuer": ISSUER,
        "audience": "htk",
        "subject": "repo:acme/app:*",
        "claims": {"repository_owner": "acme"},
        "scopes": frozenset({Scope.PROCESSES_WRITE}),
        "token_ttl_seconds": 900,
        "created_at": NOW,
    }
    values.update(fields)
    return TrustPolicy(**values)


CLAIMS = {
    "iss": ISSUER,
    "aud": "htk",
    "sub": "repo:acme/app:ref:refs/heads/main",
    "repository_owner": "acme",
}


def refused(check: str) -> Any:
    return pytest.raises(Unauthenticated, match=f"^{check}:")


def test_a_subject_matches_exactly_or_by_its_prefix() -> None:
    assert subject_matches("repo:acme/app:*", "repo:acme/app:ref:refs/heads/main")
    assert subject_matches("repo:acme/app", "repo:acme/app")
    assert not subject_matches("repo:acme/app", "repo:acme/app:x")
    assert not subject_matches("repo:acme/app:*", "repo:acme/apple")


def test_the_matching_policy_is_found_by_audience_subject_and_claims() -> None:
    policy = a_policy()
    assert matching_policy([policy], CLAIMS) is policy
    assert matching_policy([policy], {**CLAIMS, "aud": ["other", "htk"]}) is policy
    with refused("aud"):
        matching_policy([policy], {**CLAIMS, "aud": "other"})
    with refused("sub"):
        matching_policy([policy], {**CLAIMS, "sub": "repo:evil/app:ref:refs/heads/main"})
    with refused("claims"):
        matching_policy([policy], {**CLAIMS, "repository_owner": "evil"})
    with refused("claims"):
        matching_policy(
            [policy], {key: v for key, v in CLAIMS.items() if key != "repository_owner"}
        )
    with refused("sub"):
        matching_policy([policy], {key: v for key, v in CLAIMS.items() if key != "sub"})


def test_the_oldest_policy_of_one_organization_wins_and_two_organizations_are_refused() -> None:
    older = a_policy(created_at=NOW - timedelta(days=1), name="older")
    newer = a_policy(name="newer")
    assert matching_policy([newer, older], CLAIMS) is older
    with refused("aud"):
        matching_policy([older, a_policy(org_id="other")], CLAIMS)


@pytest.mark.parametrize(
    ("claims", "check"),
    [
        ({"iat": NOW, "exp": NOW - MAX_CLOCK_SKEW - timedelta(seconds=1)}, "exp"),
        (
            {"iat": NOW + MAX_CLOCK_SKEW + timedelta(seconds=1), "exp": NOW + timedelta(hours=1)},
            "iat",
        ),
        (
            {
                "iat": NOW,
                "nbf": NOW + MAX_CLOCK_SKEW + timedelta(seconds=1),
                "exp": NOW + timedelta(hours=1),
            },
            "nbf",
        ),
        ({"iat": NOW}, "exp"),
        ({"exp": NOW + timedelta(hours=1)}, "iat"),
    ],
)
def test_times_are_checked_with_at_most_a_minute_of_skew(
    claims: dict[str, datetime], check: str
) -> None:
    with refused(check):
        check_times({name: moment.timestamp() for name, moment in claims.items()}, NOW)


def test_times_within_the_skew_pass() -> None:
    skewed = MAX_CLOCK_SKEW - timedelta(seconds=1)
    check_times(
        {
            "iat": (NOW + skewed).timestamp(),
            "nbf": (NOW + skewed).timestamp(),
            "exp": (NOW - skewed).timestamp(),
        },
        NOW,
    )


def test_a_time_that_is_not_a_number_is_refused() -> None:
    with refused("exp"):
        check_times({"iat": NOW.timestamp(), "exp": "tomorrow"}, NOW)
    with refused("exp"):
        check_times({"iat": NOW.timestamp(), "exp": True}, NOW)


def _part(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def test_only_a_signed_compact_jwt_is_read() -> None:
    with refused("alg"):
        read_jwt(f"{_part({'alg': 'none'})}.{_part(CLAIMS)}.")
    with refused("alg"):
        read_jwt(f"{_part({'alg': 'NONE'})}.{_part(CLAIMS)}.")
    with refused("subject_token"):
        read_jwt("a.b")
    with refused("subject_token"):
        read_jwt(f"{_part([1])}.{_part(CLAIMS)}.x")
    with refused("subject_token"):
        read_jwt("!!.??.x")
    nested = base64.urlsafe_b64encode(b"[" * 5000).decode()
    with refused("subject_token"):
        read_jwt(f"{nested}.{nested}.x")
    with pytest.raises(InvalidArgument, match=r"^subject_token:"):
        read_jwt("")
    with pytest.raises(InvalidArgument, match=r"^subject_token:"):
        read_jwt("a" * 20000)
    with refused("iss"):
        _ = read_jwt(f"{_part({'alg': 'RS256'})}.{_part({})}.x").issuer


def test_the_algorithm_is_the_keys_never_the_tokens() -> None:
    rsa = RSAKey.generate_key(2048, parameters={"kid": "r"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "e"})
    ed = OKPKey.generate_key("Ed25519", parameters={"kid": "d"})
    assert algorithm_of(rsa.as_dict(private=False)) == "RS256"
    assert algorithm_of({**rsa.as_dict(private=False), "alg": "PS256"}) == "PS256"
    assert algorithm_of(ec.as_dict(private=False)) == "ES256"
    assert algorithm_of(ed.as_dict(private=False)) == "EdDSA"
    with refused("alg"):
        algorithm_of({"kty": "oct", "k": "c2VjcmV0", "kid": "s"})
    with refused("alg"):
        algorithm_of({**rsa.as_dict(private=False), "alg": "HS256"})
    with refused("alg"):
        algorithm_of({**rsa.as_dict(private=False), "alg": ["RS256"]})

    token = jwt.encode({"alg": "ES256", "kid": "e"}, CLAIMS, ec)
    verify_signature(token, read_jwt(token), ec.as_dict(private=False))
    with refused("signature"):
        other = ECKey.generate_key("P-256", parameters={"kid": "e"})
        verify_signature(token, read_jwt(token), other.as_dict(private=False))
    with refused("alg"):
        verify_signature(token, read_jwt(token), rsa.as_dict(private=False))


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": " "}, "name"),
        ({"name": "a\tb"}, "name"),
        ({"issuer": "http://ci.example.com"}, "issuer"),
        ({"issuer": "https://ci.example.com?x=1"}, "issuer"),
        ({"issuer": "https://user:pw@ci.example.com"}, "issuer"),
        ({"issuer": "https://ci.example.com:99999"}, "issuer"),
        ({"issuer": "https://ci.example.com:abc"}, "issuer"),
        ({"audience": ""}, "audience"),
        ({"subject": "*"}, "subject"),
        ({"subject": "repo:*/app"}, "subject"),
        ({"claims": {"": "x"}}, "claims"),
        ({"claims": {f"c{n}": "x" for n in range(17)}}, "claims"),
        ({"scopes": ["root"]}, "scopes"),
        ({"scopes": [""]}, "scopes"),
        ({"scopes": ["processes:write,tasks:complete"]}, "scopes"),
        ({"token_ttl_seconds": 0}, "token_ttl_seconds"),
        ({"token_ttl_seconds": 3601}, "token_ttl_seconds"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(fields: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {
        "name": "app",
        "issuer": ISSUER,
        "audience": "htk",
        "subject": "repo:acme/app:*",
        "claims": {},
        "scopes": [],
        "token_ttl_seconds": None,
        **fields,
    }
    with pytest.raises(InvalidArgument) as error:
        new_policy(**values)
    assert error.value.field == field


def test_a_policy_takes_loopback_http_and_defaults_its_lifetime() -> None:
    created = new_policy(
        name=" app ",
        issuer="http://127.0.0.1:8000",
        audience="htk",
        subject="repo:acme/app:*",
        claims={"repository_owner": "acme"},
        scopes=["processes:write"],
        token_ttl_seconds=None,
    )
    assert (created.name, created.token_ttl_seconds) == ("app", 900)
    assert created.scopes == {Scope.PROCESSES_WRITE}
    assert issuer_url("http://localhost/") == "http://localhost/"
    assert issuer_url("http://[::1]:9/") == "http://[::1]:9/"


def test_names_and_ids() -> None:
    assert exchanged_token_name(a_policy(), "repo:x") == "app main:repo:x"
    with refused("sub"):
        exchanged_token_name(a_policy(), "repo:\nx")
    with pytest.raises(NotFound):
        parse_policy_id("nope")


def test_an_organization_may_add_policies_up_to_the_most_it_may_have() -> None:
    check_room_for_policy(MAX_POLICIES_PER_ORGANIZATION - 1)
    with pytest.raises(ResourceExhausted, match=f"has {MAX_POLICIES_PER_ORGANIZATION} trust"):
        check_room_for_policy(MAX_POLICIES_PER_ORGANIZATION)
