"""Unit tests for page tokens (server.domain.processes) and idempotency keys
(server.domain.idempotency): plain Python, no I/O."""

import base64
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from server.domain.errors import AlreadyExists, InvalidArgument
from server.domain.idempotency import (
    IdempotencyKey,
    RememberedRequest,
    idempotency_key,
    replay,
)
from server.domain.paging import MAX_PAGE_TOKEN_LENGTH
from server.domain.processes import (
    ListQuery,
    PagePosition,
    ProcessStatus,
    ProcessSummary,
    SortOrder,
    list_query,
    page_token,
)

ORG = "acme"
# Microseconds on purpose: the position must survive the round trip exactly,
# or the next page would repeat or skip processes started in the same millisecond.
STARTED_AT = datetime(2026, 2, 24, 12, 30, 15, 123456, tzinfo=UTC)
PROCESS_ID = uuid.UUID("0b7e6f1c-3d2a-4c5b-9e8f-7a6b5c4d3e2f")
FILTERS: dict[str, Any] = {
    "status": "running",
    "namespace": "deployments",
    "search": "deploy",
    "sort": "oldest",
}


def summary(
    started_at: datetime = STARTED_AT, process_id: uuid.UUID = PROCESS_ID
) -> ProcessSummary:
    """The last process of a page, as the store hands it to page_token."""
    return ProcessSummary(
        process_id=process_id,
        namespace="acme.deployments",
        name="Deploy v2.1.0",
        status=ProcessStatus.RUNNING,
        current_step=None,
        started_at=started_at,
        step_count=3,
        task_ids=[],
        created_by="ci-pipeline",
    )


def token_for(**filters: Any) -> str:
    return page_token(list_query(ORG, **filters), summary())


def encode(value: Any) -> str:
    """A token as page_token shapes one (URL-safe base64 of JSON, unpadded)."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def invalid(field: str, **params: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as excinfo:
        list_query(ORG, **params)
    assert excinfo.value.field == field, excinfo.value
    return excinfo.value


# --- page tokens: the round trip -----------------------------------------------------


def test_a_page_token_continues_after_the_last_process_of_its_page() -> None:
    first = list_query(ORG, limit=10, **FILTERS)
    token = page_token(first, summary())

    following = list_query(ORG, limit=10, page_token=token, **FILTERS)

    assert following.after == PagePosition(STARTED_AT, PROCESS_ID)
    # Everything else is the first page's query, unchanged.
    assert following == replace(first, after=PagePosition(STARTED_AT, PROCESS_ID))
    assert following == ListQuery(
        org_id=ORG,
        status=ProcessStatus.RUNNING,
        namespace="acme.deployments",
        search="deploy",
        sort=SortOrder.OLDEST,
        limit=10,
        offset=0,
        after=PagePosition(STARTED_AT, PROCESS_ID),
    )


def test_a_page_token_is_url_safe_and_within_the_accepted_length() -> None:
    # The longest filters there are: a 200-character search and namespace.
    token = token_for(search="x" * 200, namespace="n" * 100, status="completed")
    assert len(token) <= MAX_PAGE_TOKEN_LENGTH
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    # Yet the filters are fingerprinted, not copied into the token.
    query = list_query(ORG, search="x" * 200, namespace="n" * 100, status="completed")
    assert list_query(ORG, page_token=token, **_params(query)).after == PagePosition(
        STARTED_AT, PROCESS_ID
    )


def _params(query: ListQuery) -> dict[str, Any]:
    return {
        "status": query.status.value if query.status else "",
        "namespace": query.namespace or "",
        "search": query.search or "",
        "sort": query.sort.value,
    }


def test_a_page_token_keeps_a_non_utc_offset_exactly() -> None:
    started_at = datetime(2026, 2, 24, 14, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    token = page_token(list_query(ORG), summary(started_at=started_at))
    after = list_query(ORG, page_token=token).after
    assert after == PagePosition(started_at, PROCESS_ID)
    assert after is not None and after.started_at.utcoffset() == timedelta(hours=2)


def test_a_padded_token_is_accepted_too() -> None:
    token = token_for()
    padded = token + "=" * (-len(token) % 4)
    assert list_query(ORG, page_token=padded).after == PagePosition(STARTED_AT, PROCESS_ID)


@pytest.mark.parametrize("limit", [1, 7, 200, None])
def test_the_limit_may_change_between_pages(limit: int | None) -> None:
    token = page_token(list_query(ORG, limit=50, **FILTERS), summary())
    query = list_query(ORG, limit=limit, page_token=token, **FILTERS)
    assert query.limit == (50 if limit is None else limit)
    assert query.after == PagePosition(STARTED_AT, PROCESS_ID)


@pytest.mark.parametrize("offset", [None, 0])
def test_an_absent_or_zero_offset_goes_with_a_page_token(offset: int | None) -> None:
    query = list_query(ORG, offset=offset, page_token=token_for())
    assert (query.offset, query.after) == (0, PagePosition(STARTED_AT, PROCESS_ID))


def test_without_a_page_token_there_is_no_position() -> None:
    assert list_query(ORG, page_token="").after is None


def test_sort_given_as_the_default_is_the_same_listing() -> None:
    # "newest" spelled out and left out are one sort order, so one token serves both.
    token = token_for()
    assert list_query(ORG, sort="newest", page_token=token).after is not None
    assert list_query(ORG, page_token=token_for(sort="newest")).after is not None


def test_a_bare_and_a_qualified_namespace_are_the_same_filter() -> None:
    token = token_for(namespace="deployments")
    query = list_query(ORG, namespace="acme.deployments", page_token=token)
    assert query.after == PagePosition(STARTED_AT, PROCESS_ID)


# --- page tokens: refused ------------------------------------------------------------


@pytest.mark.parametrize(
    "changed",
    [
        {"status": "completed"},
        {"status": ""},
        {"namespace": "releases"},
        {"namespace": ""},
        {"search": "Deploy"},  # search ignores case, but it is another request
        {"search": "deploy v2"},
        {"search": ""},
        {"sort": "newest"},
    ],
    ids=repr,
)
def test_a_token_for_other_filters_or_sort_is_refused(changed: dict[str, str]) -> None:
    token = token_for(**FILTERS)
    error = invalid("page_token", page_token=token, **(FILTERS | changed))
    assert error.problem == "was issued for other filters or sort order; keep them unchanged"


def test_a_token_of_an_unfiltered_listing_is_refused_once_a_filter_is_added() -> None:
    token = token_for()
    for added in ({"status": "running"}, {"namespace": "x"}, {"search": "y"}, {"sort": "oldest"}):
        error = invalid("page_token", page_token=token, **added)
        assert "other filters or sort order" in error.problem


def test_a_page_token_with_a_non_zero_offset_is_refused_on_offset() -> None:
    error = invalid("offset", offset=1, page_token=token_for())
    assert error.problem == "cannot be combined with page_token; leave it out"
    assert str(error) == "offset: cannot be combined with page_token; leave it out"


MALFORMED = "malformed; pass a next_page_token unchanged"
GOOD_POSITION = [STARTED_AT.isoformat(), str(PROCESS_ID)]


def _fingerprint() -> str:
    return list_query(ORG).filters_fingerprint()


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("x" * (MAX_PAGE_TOKEN_LENGTH + 1), id="overlong"),
        pytest.param(token_for() + "A" * (MAX_PAGE_TOKEN_LENGTH + 1), id="valid-then-overlong"),
        pytest.param("!!!not base64!!!", id="not-base64"),
        pytest.param("a", id="one-character"),
        pytest.param("é" * 8, id="non-ascii"),
        pytest.param(base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(), id="not-utf8"),
        pytest.param(encode("abc")[:-3], id="truncated"),
        pytest.param(base64.urlsafe_b64encode(b"not json").decode(), id="garbage-base64"),
        pytest.param(encode(None), id="json-null"),
        pytest.param(encode(42), id="json-number"),
        pytest.param(encode("abc"), id="json-three-char-string"),
        pytest.param(encode({"a": 1, "b": 2, "c": 3}), id="json-object"),
        pytest.param(encode([]), id="empty-list"),
        pytest.param(encode([_fingerprint(), *GOOD_POSITION, "extra"]), id="four-items"),
        pytest.param(encode([_fingerprint(), GOOD_POSITION[0]]), id="two-items"),
        pytest.param(encode([_fingerprint(), "yesterday", str(PROCESS_ID)]), id="bad-timestamp"),
        pytest.param(encode([_fingerprint(), 1771936215, str(PROCESS_ID)]), id="numeric-time"),
        pytest.param(encode([_fingerprint(), [], str(PROCESS_ID)]), id="list-timestamp"),
        pytest.param(encode([_fingerprint(), GOOD_POSITION[0], "not-a-uuid"]), id="bad-uuid"),
        pytest.param(encode([_fingerprint(), GOOD_POSITION[0], 12345]), id="numeric-uuid"),
        pytest.param(encode([_fingerprint(), GOOD_POSITION[0], None]), id="null-uuid"),
        pytest.param(
            encode([_fingerprint(), "2026-02-24T12:30:15.123456", str(PROCESS_ID)]),
            id="naive-timestamp",
        ),
        pytest.param(
            encode([_fingerprint(), "2026-02-24 12:30:15", str(PROCESS_ID)]),
            id="naive-timestamp-with-space",
        ),
    ],
)
def test_a_malformed_page_token_is_refused(token: str) -> None:
    error = invalid("page_token", page_token=token)
    assert error.problem == MALFORMED
    assert str(error) == f"page_token: {MALFORMED}"


def test_a_token_of_the_maximum_length_is_read_not_refused_for_its_length() -> None:
    # Exactly MAX_PAGE_TOKEN_LENGTH characters: refused for what it says, not its size.
    token = encode([_fingerprint(), *GOOD_POSITION])
    token += "A" * (MAX_PAGE_TOKEN_LENGTH - len(token))
    assert len(token) == MAX_PAGE_TOKEN_LENGTH
    assert invalid("page_token", page_token=token).problem == MALFORMED


def test_a_hand_made_token_with_the_right_fingerprint_is_taken_at_its_word() -> None:
    # Tokens are not signed: a forged one can only pick where the caller's own listing starts.
    token = encode([_fingerprint(), "2030-01-01T00:00:00+00:00", str(PROCESS_ID)])
    assert list_query(ORG, page_token=token).after == PagePosition(
        datetime(2030, 1, 1, tzinfo=UTC), PROCESS_ID
    )


# --- idempotency keys: their shape ---------------------------------------------------

FINGERPRINT = b"\x01" * 32
OTHER_FINGERPRINT = b"\x02" * 32
RETENTION = timedelta(hours=24)
RESPONSE = b"\x0a\x24serialized response"


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "~" * 200,
        "order-42:retry/1",
        "550e8400-e29b-41d4-a716-446655440000",
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    ],
)
def test_a_printable_ascii_key_of_1_to_200_characters_is_accepted(key: str) -> None:
    assert idempotency_key(ORG, key, FINGERPRINT) == IdempotencyKey(ORG, key, FINGERPRINT)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="empty"),
        pytest.param("k" * 201, id="201-characters"),
        pytest.param("two words", id="space"),
        pytest.param(" leading", id="leading-space"),
        pytest.param("trailing ", id="trailing-space"),
        pytest.param("tab\there", id="tab"),
        pytest.param("line\nbreak", id="newline"),
        pytest.param("nul\x00", id="nul"),
        pytest.param("del\x7f", id="del"),
        pytest.param("café", id="latin-1"),
        pytest.param("ключ", id="cyrillic"),
        pytest.param("key\N{EM DASH}1", id="em-dash"),
        pytest.param("\N{PILE OF POO}", id="emoji"),
    ],
)
def test_a_malformed_key_is_refused_naming_the_header(key: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        idempotency_key(ORG, key, FINGERPRINT)
    assert excinfo.value.field == "idempotency-key"
    assert str(excinfo.value) == (
        "idempotency-key: must be 1-200 printable ASCII characters without spaces"
    )


# --- idempotency keys: replay --------------------------------------------------------


def remembered(
    fingerprint: bytes = FINGERPRINT, age: timedelta = timedelta(0)
) -> RememberedRequest:
    return RememberedRequest(request_fingerprint=fingerprint, response=RESPONSE, age=age)


def key(name: str = "order-42", fingerprint: bytes = FINGERPRINT) -> IdempotencyKey:
    return idempotency_key(ORG, name, fingerprint)


@pytest.mark.parametrize(
    "age",
    [timedelta(0), timedelta(hours=1), RETENTION - timedelta(microseconds=1)],
    ids=["new", "an-hour", "just-before-expiry"],
)
def test_a_retry_of_the_same_request_gets_the_stored_response(age: timedelta) -> None:
    assert replay(key(), remembered(age=age), RETENTION) == RESPONSE


def test_the_key_reused_for_another_request_is_a_conflict_naming_the_key() -> None:
    with pytest.raises(AlreadyExists) as excinfo:
        replay(key("order-42", OTHER_FINGERPRINT), remembered(), RETENTION)
    assert str(excinfo.value) == (
        "idempotency key 'order-42' was already used for a different request;"
        " use a new key for a new request"
    )


def test_a_conflict_is_reported_until_the_key_expires() -> None:
    almost = remembered(age=RETENTION - timedelta(microseconds=1))
    with pytest.raises(AlreadyExists, match="'order-42'"):
        replay(key("order-42", OTHER_FINGERPRINT), almost, RETENTION)


@pytest.mark.parametrize(
    "age", [RETENTION, RETENTION + timedelta(microseconds=1), timedelta(days=30)]
)
@pytest.mark.parametrize("fingerprint", [FINGERPRINT, OTHER_FINGERPRINT], ids=["same", "other"])
def test_an_expired_key_is_free_again(age: timedelta, fingerprint: bytes) -> None:
    # Expired: neither replayed nor a conflict, whatever request it guarded.
    assert replay(key(fingerprint=fingerprint), remembered(age=age), RETENTION) is None


def test_the_retention_is_the_callers_not_a_constant() -> None:
    two_days = timedelta(days=2)
    assert replay(key(), remembered(age=timedelta(hours=30)), two_days) == RESPONSE
    assert replay(key(), remembered(age=timedelta(hours=30)), RETENTION) is None
