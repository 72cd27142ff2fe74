"""Unit tests for server.domain.sign_in: the sealed state, and who an ID
token's claims make a person."""

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from server.domain.errors import InvalidArgument, Unauthenticated
from server.domain.sign_in import SIGN_IN_SECONDS, Provider, group_scopes
from server.domain.tokens import Scope

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
PAGE = "https://htk.example.com/"
PROVIDER = Provider(
    issuer="https://login.example.com",
    client_id="htk",
    client_secret="secret",
    org_claim="org",
    groups_claim="groups",
    scopes_of_groups=group_scopes(
        "release-managers=tasks:complete,ops=processes:write+tasks:create"
    ),
    token_hours=8,
)


def started() -> dict[str, str]:
    url = PROVIDER.start("https://login.example.com/authorize", PAGE, NOW)
    return dict(parse_qsl(urlsplit(url).query))


def test_group_scopes_read_groups_and_their_scopes() -> None:
    assert group_scopes("") == {}
    assert group_scopes("a=tasks:complete, a=processes:write") == {
        "a": frozenset({Scope.TASKS_COMPLETE, Scope.PROCESSES_WRITE})
    }
    for bad in ("a", "=tasks:complete", "a=root"):
        with pytest.raises(ValueError):
            group_scopes(bad)


def test_the_state_carries_the_sign_in_sealed() -> None:
    query = started()
    assert query["client_id"] == "htk" and query["code_challenge_method"] == "S256"
    pending = PROVIDER.open_state(query["state"], PAGE, NOW + timedelta(seconds=1))
    assert pending.nonce == query["nonce"]
    assert pending.verifier not in query["state"]  # sealed, not merely encoded
    other = Provider(**{**PROVIDER.__dict__, "client_secret": "another"})
    with pytest.raises(Unauthenticated, match=r"^state:"):
        other.open_state(query["state"], PAGE, NOW)
    with pytest.raises(Unauthenticated, match=r"^state:"):
        PROVIDER.open_state(query["state"][:-2], PAGE, NOW)
    with pytest.raises(Unauthenticated, match=r"^state: the sign-in was started for another"):
        PROVIDER.open_state(query["state"], "https://evil.example.com/", NOW)
    with pytest.raises(Unauthenticated, match=r"^state: the sign-in took too long"):
        PROVIDER.open_state(query["state"], PAGE, NOW + timedelta(seconds=SIGN_IN_SECONDS))


def test_a_redirect_must_be_a_page_url() -> None:
    for bad in ("javascript:alert(1)", "https://htk.example.com/#x", "/relative"):
        with pytest.raises(InvalidArgument, match=r"^redirect_uri:"):
            PROVIDER.start("https://login.example.com/authorize", bad, NOW)


def claims(**overrides: Any) -> dict[str, Any]:
    values = {
        "sub": "u1",
        "aud": "htk",
        "nonce": "n",
        "name": "Alice",
        "email": "alice@example.com",
        "org": "acme",
        "groups": ["release-managers", "ops", "others"],
        **overrides,
    }
    return {name: value for name, value in values.items() if value is not None}


def test_the_claims_make_the_person() -> None:
    person = PROVIDER.person(claims(), "n")
    assert (person.org_id, person.name, person.subject) == ("acme", "Alice", "u1")
    assert person.scopes == {Scope.TASKS_COMPLETE, Scope.PROCESSES_WRITE, Scope.TASKS_CREATE}
    assert PROVIDER.person(claims(name=None, groups=None), "n").name == "alice@example.com"
    assert PROVIDER.person(claims(groups=None), "n").scopes == frozenset()
    assert PROVIDER.person(claims(aud=["other", "htk"]), "n").org_id == "acme"


@pytest.mark.parametrize(
    ("changed", "check"),
    [
        ({"nonce": "other"}, "nonce"),
        ({"aud": "other"}, "aud"),
        ({"org": None}, "org"),
        ({"org": "Not An Org"}, "org"),
        ({"name": None, "email": None}, "name"),
        ({"sub": None}, "sub"),
    ],
)
def test_claims_that_name_no_one_are_refused(changed: dict[str, Any], check: str) -> None:
    with pytest.raises(Unauthenticated, match=f"^{check}:"):
        PROVIDER.person(claims(**changed), "n")
