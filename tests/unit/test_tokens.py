"""Unit tests for server.domain.tokens: token format and checksum, digest, scopes."""

import hashlib
import string
import uuid

import pytest

from server.domain.errors import InvalidArgument, PermissionDenied
from server.domain.tokens import (
    MAX_TOKEN_NAME_LENGTH,
    PREFIX,
    TOKEN_LENGTH,
    WRITE_SCOPES,
    Caller,
    Scope,
    digest,
    generate_token,
    is_well_formed,
    name_key,
    parse_scopes,
    token_name,
)

# A token as generate_token() once produced it: "htk_" + 30-char body + 6-char checksum.
# Hard-coded so that a change to the checksum scheme, which would turn every
# token already handed out into a "malformed" one, fails here.
VALID = "htk_gVpulkjNoIsdgMs3n8pBTHXvM4TFSt0l0tux"
BODY_AND_CHECKSUM = range(len(PREFIX), TOKEN_LENGTH)
ALPHABET = string.digits + string.ascii_letters


def replace_at(token: str, index: int, char: str) -> str:
    return token[:index] + char + token[index + 1 :]


def test_fixture_token_is_well_formed() -> None:
    assert len(VALID) == TOKEN_LENGTH == 40
    assert is_well_formed(VALID)


def test_generated_tokens_are_well_formed_and_distinct() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert token.startswith("htk_")
        assert len(token) == TOKEN_LENGTH
        assert set(token[len(PREFIX) :]) <= set(ALPHABET)
        assert is_well_formed(token)


@pytest.mark.parametrize("index", BODY_AND_CHECKSUM)
def test_any_single_character_change_breaks_the_checksum(index: int) -> None:
    accepted = [
        replace_at(VALID, index, char)
        for char in ALPHABET
        if char != VALID[index] and is_well_formed(replace_at(VALID, index, char))
    ]
    assert accepted == []


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param(PREFIX, id="prefix only"),
        pytest.param(VALID[:-1], id="one char short"),
        pytest.param(VALID + "0", id="one char long"),
        pytest.param(VALID[len(PREFIX) :] + "0000", id="no prefix, right length"),
        pytest.param("htx_" + VALID[len(PREFIX) :], id="wrong prefix"),
        pytest.param("HTK_" + VALID[len(PREFIX) :], id="upper-case prefix"),
        pytest.param(f" {VALID[:-1]}", id="leading space"),
        pytest.param(replace_at(VALID, 10, "-"), id="body char outside base62"),
        pytest.param(replace_at(VALID, 10, "é"), id="non-ASCII body char"),
    ],
)
def test_malformed_token_is_rejected(token: str) -> None:
    assert is_well_formed(token) is False


@pytest.mark.parametrize("char", ["é", "€"])
def test_non_ascii_checksum_is_rejected_not_raised(char: str) -> None:
    assert is_well_formed(replace_at(VALID, TOKEN_LENGTH - 1, char)) is False


def test_digest_is_the_sha256_of_the_token() -> None:
    assert digest(VALID) == hashlib.sha256(VALID.encode()).digest()
    assert len(digest(VALID)) == 32
    assert digest(VALID) == digest("".join(list(VALID)))  # stable across calls and objects


def test_different_tokens_have_different_digests() -> None:
    assert digest(VALID) != digest(replace_at(VALID, 4, "h"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("processes:write, tasks:create", {Scope.PROCESSES_WRITE, Scope.TASKS_CREATE}),
        ("tasks:create,processes:write", {Scope.PROCESSES_WRITE, Scope.TASKS_CREATE}),
        ("processes:write", {Scope.PROCESSES_WRITE}),
        ("tasks:complete", {Scope.TASKS_COMPLETE}),
        ("  tasks:create , tasks:create,", {Scope.TASKS_CREATE}),
        ("", set()),
        (" , ,", set()),
    ],
)
def test_parse_scopes(text: str, expected: set[Scope]) -> None:
    assert parse_scopes(text) == frozenset(expected)


@pytest.mark.parametrize(
    "text", ["processes:read", "processes:write,admin", "PROCESSES:WRITE", "processes: write"]
)
def test_parse_scopes_rejects_unknown_scope(text: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        parse_scopes(text)
    assert excinfo.value.field == "scopes"


def test_write_scopes_are_the_documented_pair() -> None:
    assert frozenset({Scope.PROCESSES_WRITE, Scope.TASKS_CREATE}) == WRITE_SCOPES
    assert {scope.value for scope in WRITE_SCOPES} == {"processes:write", "tasks:create"}


@pytest.mark.parametrize(
    ("scopes", "needed"),
    [
        pytest.param({Scope.PROCESSES_WRITE}, WRITE_SCOPES, id="processes:write"),
        pytest.param({Scope.TASKS_CREATE}, WRITE_SCOPES, id="tasks:create"),
        pytest.param({Scope.PROCESSES_WRITE, Scope.TASKS_CREATE}, WRITE_SCOPES, id="both"),
        pytest.param(set(), frozenset(), id="nothing needed, no scopes"),
        pytest.param({Scope.TASKS_CREATE}, frozenset(), id="nothing needed"),
    ],
)
def test_require_any_passes_with_an_overlapping_scope(
    scopes: set[Scope], needed: frozenset[Scope]
) -> None:
    Caller("acme", frozenset(scopes), "deployer", uuid.uuid4()).require_any(needed)


@pytest.mark.parametrize(
    ("scopes", "needed", "message"),
    [
        (
            set(),
            WRITE_SCOPES,
            "this call needs a token with the scope processes:write or tasks:create",
        ),
        (
            {Scope.TASKS_CREATE},
            frozenset({Scope.PROCESSES_WRITE}),
            "this call needs a token with the scope processes:write",
        ),
        pytest.param(
            set(WRITE_SCOPES),
            frozenset({Scope.TASKS_COMPLETE}),
            "this call needs a token with the scope tasks:complete",
            id="a pipeline's scopes do not complete tasks",
        ),
    ],
)
def test_require_any_denies_without_overlap(
    scopes: set[Scope], needed: frozenset[Scope], message: str
) -> None:
    with pytest.raises(PermissionDenied) as excinfo:
        Caller("acme", frozenset(scopes), "deployer", uuid.uuid4()).require_any(needed)
    assert str(excinfo.value) == message


def test_a_token_name_is_kept_trimmed() -> None:
    assert token_name("  deploy bot ") == "deploy bot"
    assert token_name("x" * MAX_TOKEN_NAME_LENGTH) == "x" * MAX_TOKEN_NAME_LENGTH


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be blank"),
        (" \t ", "must not be blank"),
        ("x" * (MAX_TOKEN_NAME_LENGTH + 1), f"at most {MAX_TOKEN_NAME_LENGTH} characters"),
        ("alice\nbob", "control characters"),
        ("alice\x00", "control characters"),
        ("al\u200bice", "control characters"),  # a zero-width space
        ("\u0430lice", "mixes the scripts CYRILLIC, LATIN"),  # a Cyrillic a
        ("p\u0430yp\u0430l", "mixes the scripts CYRILLIC, LATIN"),
        ("\u03bfscar", "mixes the scripts GREEK, LATIN"),  # a Greek omicron
    ],
)
def test_a_token_name_that_names_no_one_is_refused(name: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as refused:
        token_name(name)
    assert refused.value.field == "name"


@pytest.mark.parametrize(
    "twin",
    [
        "Alice",
        "ALICE",
        "\uff41\uff4c\uff49\uff43\uff45",
        " alice ",
    ],
)
def test_names_that_differ_in_case_or_width_have_one_key(twin: str) -> None:
    assert name_key(token_name(twin)) == name_key(token_name("alice"))


def test_a_name_is_kept_in_its_normal_form_so_that_it_shows_as_it_compares() -> None:
    assert token_name("\uff41lice") == "alice"  # a fullwidth a
    assert token_name("e\u0301mile") == "\u00e9mile"


@pytest.mark.parametrize(
    "name",
    ["Ren\u00e9", "\u0410\u043b\u0438\u0441\u0430", "\u5c71\u7530 \u305f\u308d\u3046", "ci-bot 2"],
)
def test_names_in_one_script_are_taken(name: str) -> None:
    assert token_name(name) == name
