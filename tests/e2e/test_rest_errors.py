"""REST errors through Envoy: every rejected request gets a google.rpc.Status as JSON
and changes nothing.

Status codes per the API docs; google.rpc codes and messages per the comments of
protos/htk/processes/v1/process_service.proto.
"""

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.domain.tokens import generate_token
from tests.e2e.test_rest_contract import (
    PROCESSES,
    Json,
    create_body,
    create_process,
    get_process,
    list_processes,
    post_update,
    update,
)
from tests.support.orgs import Org
from tests.support.stack import Stack
from tests.support.tokens import created_token, revoke_token

INVALID_ARGUMENT = 3
NOT_FOUND = 5
PERMISSION_DENIED = 7
FAILED_PRECONDITION = 9
UNAUTHENTICATED = 16
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


def assert_error(response: httpx.Response, http_status: int, code: int) -> Json:
    """Checks the common error shape and returns the body."""
    assert response.status_code == http_status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "grpc-status" not in response.headers
    assert "grpc-message" not in response.headers
    body = response.json()
    assert isinstance(body, dict)
    assert body.keys() == {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    assert isinstance(body["details"], list), body
    return body


def assert_invalid_field(response: httpx.Response, field: str) -> None:
    """An INVALID_ARGUMENT from the server: the message and a BadRequest name the field."""
    body = assert_error(response, 400, INVALID_ARGUMENT)
    assert field in body["message"], body
    assert [detail["@type"] for detail in body["details"]] == [BAD_REQUEST_TYPE], body
    assert body["details"][0]["field_violations"][0]["field"] == field, body


def assert_rejected_by_transcoder(response: httpx.Response, field: str | None) -> None:
    """An INVALID_ARGUMENT from Envoy, which cannot parse the request: the message
    names the field where there is one."""
    body = assert_error(response, 400, INVALID_ARGUMENT)
    if field is not None:
        assert field in body["message"], body


@pytest.fixture(scope="module")
def stranger(stack: Stack) -> Org:
    """Another organization, whose processes `tenant` must not reach."""
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    return Org(org_id=org_id, writer=stack.token(org_id), reader=stack.token(org_id, scopes=""))


@pytest.fixture
def process_id(rest: httpx.Client, tenant: Org) -> str:
    """A running process: `build` running, `test` completed, `review` and `deploy` pending."""
    process_id: str = create_process(rest, tenant)["process_id"]
    update(rest, tenant, process_id, {"type": "step_completed", "step": "test"})
    update(rest, tenant, process_id, {"type": "step_started", "step": "build"})
    return process_id


def snapshot(rest: httpx.Client, org: Org, process_id: str) -> tuple[Json, Json]:
    """Everything a reader can see: the process, and the organization's list."""
    return get_process(rest, org, process_id), list_processes(rest, org, limit=200)


# --- 401, 403 -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def revoked_token(rest: httpx.Client, stack: Stack, tenant: Org) -> str:
    """A token of `tenant` that worked until it was revoked."""
    token_id, token = created_token(stack.env, tenant.org_id, name="gone")
    assert rest.get(PROCESSES, headers=tenant.auth(token)).status_code == 200
    revoke_token(stack.env, token_id)
    return token


def bad_credentials(name: str, revoked: str) -> dict[str, str]:
    return {
        "missing": {},
        "basic-scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "token-without-scheme": {"Authorization": generate_token()},
        "malformed-token": {"Authorization": "Bearer htk_abc"},
        "never-issued-token": {"Authorization": f"Bearer {generate_token()}"},
        "revoked-token": {"Authorization": f"Bearer {revoked}"},
    }[name]


Call = Callable[[httpx.Client, dict[str, str], str], httpx.Response]
ENDPOINTS: dict[str, Call] = {
    "list": lambda rest, headers, _: rest.get(PROCESSES, headers=headers),
    "get": lambda rest, headers, pid: rest.get(f"{PROCESSES}/{pid}", headers=headers),
    "create": lambda rest, headers, _: rest.post(PROCESSES, headers=headers, json=create_body()),
    "update": lambda rest, headers, pid: rest.post(
        f"{PROCESSES}/{pid}/update", headers=headers, content=b'{"type":"completed"}'
    ),
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "credentials",
    [
        "missing",
        "basic-scheme",
        "token-without-scheme",
        "malformed-token",
        "never-issued-token",
        "revoked-token",
    ],
)
def test_bad_credentials_are_unauthenticated(
    rest: httpx.Client,
    tenant: Org,
    process_id: str,
    revoked_token: str,
    endpoint: str,
    credentials: str,
) -> None:
    before = snapshot(rest, tenant, process_id)

    response = ENDPOINTS[endpoint](rest, bad_credentials(credentials, revoked_token), process_id)

    assert_error(response, 401, UNAUTHENTICATED)
    assert snapshot(rest, tenant, process_id) == before


@pytest.mark.parametrize("endpoint", ["create", "update"])
def test_a_read_only_token_may_not_write(
    rest: httpx.Client, tenant: Org, process_id: str, endpoint: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    response = ENDPOINTS[endpoint](rest, tenant.auth(tenant.reader), process_id)

    body = assert_error(response, 403, PERMISSION_DENIED)
    assert "processes:write" in body["message"]
    assert snapshot(rest, tenant, process_id) == before


# --- 404 ----------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["get", "update"])
@pytest.mark.parametrize("missing_id", [str(uuid.uuid4()), "not-a-uuid"], ids=["uuid", "no-uuid"])
def test_an_unknown_process_is_not_found(
    rest: httpx.Client, tenant: Org, endpoint: str, missing_id: str
) -> None:
    response = ENDPOINTS[endpoint](rest, tenant.auth(), missing_id)

    body = assert_error(response, 404, NOT_FOUND)
    assert body["details"] == []


@pytest.mark.parametrize("endpoint", ["get", "update"])
def test_another_organizations_process_is_indistinguishable_from_a_missing_one(
    rest: httpx.Client, tenant: Org, stranger: Org, endpoint: str
) -> None:
    theirs = create_process(rest, stranger)["process_id"]
    missing = str(uuid.uuid4())
    before = get_process(rest, stranger, theirs)

    foreign = assert_error(ENDPOINTS[endpoint](rest, tenant.auth(), theirs), 404, NOT_FOUND)
    absent = assert_error(ENDPOINTS[endpoint](rest, tenant.auth(), missing), 404, NOT_FOUND)

    assert foreign["message"].replace(theirs, "<id>") == absent["message"].replace(missing, "<id>")
    assert foreign["details"] == absent["details"]
    assert get_process(rest, stranger, theirs) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/nothing"),
        ("GET", "/api/v2/processes"),
        ("POST", "/api/v1/processes/{id}/bogus"),
        ("GET", "/api/v1/processes/{id}/update/more"),
    ],
)
def test_an_unknown_path_is_not_found(
    rest: httpx.Client, tenant: Org, process_id: str, method: str, path: str
) -> None:
    response = rest.request(method, path.format(id=process_id), headers=tenant.auth())

    assert assert_error(response, 404, NOT_FOUND)["details"] == []


# --- 400 on UpdateProcess -----------------------------------------------------------

INVALID_UPDATES: list[Any] = [
    pytest.param({"type": "deploy", "step": "build"}, "type", id="unknown-type"),
    pytest.param({"step": "build"}, "type", id="missing-type"),
    pytest.param({"type": "step_started"}, "step", id="step_started-without-step"),
    pytest.param({"type": "step_completed"}, "step", id="step_completed-without-step"),
    pytest.param({"type": "step_failed", "error": "x"}, "step", id="step_failed-without-step"),
    pytest.param({"type": "progress", "percent": 5}, "step", id="progress-without-step"),
    pytest.param({"type": "step_failed", "step": "build"}, "error", id="step_failed-no-error"),
    pytest.param({"type": "failed"}, "error", id="failed-without-error"),
    pytest.param({"type": "progress", "step": "build"}, "message", id="progress-without-both"),
    pytest.param({"type": "progress", "step": "build", "percent": -1}, "percent", id="pct-1"),
    pytest.param({"type": "progress", "step": "build", "percent": 101}, "percent", id="pct101"),
    pytest.param(
        {"type": "step_started", "step": "review", "percent": 5}, "percent", id="percent-start"
    ),
    pytest.param(
        {"type": "step_completed", "step": "build", "error": "x"}, "error", id="error-completed"
    ),
    pytest.param({"type": "progress", "step": "build", "data": {}}, "data", id="data-progress"),
    pytest.param(
        {"type": "step_failed", "step": "build", "error": "x", "detail": "y"},
        "detail",
        id="detail-step_failed",
    ),
    pytest.param({"type": "completed", "step": "build"}, "step", id="step-with-completed"),
    pytest.param({"type": "failed", "error": "x", "summary": "y"}, "summary", id="summary-failed"),
    pytest.param({"type": "step_started", "step": "nope"}, "step", id="unknown-step"),
    pytest.param({"type": "progress", "step": "build", "percnt": 5}, "percnt", id="unknown-field"),
    pytest.param(
        {"type": "step_started", "step": "review", "detail": "d" * 10_001}, "detail", id="detail"
    ),
    pytest.param(
        {"type": "step_completed", "step": "build", "data": {"log": "x" * 70_000}},
        "data",
        id="data-over-64KiB",
    ),
    pytest.param({"type": "failed", "error": "a\u0000b"}, "error", id="NUL-in-text"),
    pytest.param(
        {"type": "step_completed", "step": "build", "data": {"log": "a\u0000"}}, "data", id="NUL"
    ),
]


@pytest.mark.parametrize(("body", "field"), INVALID_UPDATES)
def test_an_invalid_update_is_rejected(
    rest: httpx.Client, tenant: Org, process_id: str, body: Json, field: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    assert_invalid_field(post_update(rest, tenant, process_id, body), field)
    assert snapshot(rest, tenant, process_id) == before


UNPARSEABLE_UPDATES: list[Any] = [
    pytest.param(b'{"type": "progress", "step": "build", "percent": 50.5}', "percent", id="50.5"),
    pytest.param(b'{"type": "progress", "step": "build", "percent": "abc"}', "percent", id="abc"),
    pytest.param(b'{"type": "step_completed", "step": "build", "data": 7}', "data", id="data-7"),
    pytest.param(b'{"type": "completed", ', None, id="truncated-json"),
    pytest.param(b"type=completed", None, id="not-json"),
    pytest.param(b'["completed"]', None, id="array"),
]


@pytest.mark.parametrize(("content", "field"), UNPARSEABLE_UPDATES)
def test_an_unparseable_update_is_rejected(
    rest: httpx.Client, tenant: Org, process_id: str, content: bytes, field: str | None
) -> None:
    before = snapshot(rest, tenant, process_id)

    assert_rejected_by_transcoder(post_update(rest, tenant, process_id, content), field)
    assert snapshot(rest, tenant, process_id) == before


def test_a_body_process_id_other_than_the_paths_is_rejected(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    other = create_process(rest, tenant)["process_id"]
    before = snapshot(rest, tenant, process_id), get_process(rest, tenant, other)

    body = {"process_id": other, "type": "completed"}
    assert_rejected_by_transcoder(post_update(rest, tenant, process_id, body), "process_id")

    assert (snapshot(rest, tenant, process_id), get_process(rest, tenant, other)) == before


def test_update_fields_in_the_query_string_are_rejected(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    response = rest.post(
        f"/api/v1/processes/{process_id}/update?type=completed", headers=tenant.auth(), json={}
    )

    body = assert_error(response, 400, INVALID_ARGUMENT)
    assert "query parameters" in body["message"]
    assert snapshot(rest, tenant, process_id) == before


@pytest.mark.parametrize("query", ["?=null", "?limit=2&=0.0"], ids=["alone", "after-another"])
def test_a_query_parameter_without_a_name_is_rejected(
    rest: httpx.Client, tenant: Org, query: str
) -> None:
    # Found by schemathesis: the transcoder silently ignored such a parameter.
    response = rest.get(f"/api/v1/processes{query}", headers=tenant.auth())

    assert_invalid_field(response, "query")
    assert "has no name" in response.json()["message"]


def test_a_header_that_grpc_cannot_carry_is_dropped(rest: httpx.Client, tenant: Org) -> None:
    # Found by schemathesis: `&*` is a valid HTTP header name but no gRPC
    # metadata key, and the server used to fail the whole call (500).
    response = rest.get("/api/v1/processes", headers=tenant.auth() | {"&*": "x"})

    assert response.status_code == 200, response.text


def test_a_rest_path_called_as_grpc_web_is_refused_and_changes_nothing(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    response = rest.post(
        f"/api/v1/processes/{process_id}/update",
        headers=tenant.auth() | {"Content-Type": "application/grpc-web"},
        content=b'{"type": "completed", "summry": "typo"}',
    )

    # Refused in gRPC-Web's own terms, with a message that says what to do.
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/grpc-web")
    assert response.headers["grpc-status"] == "3"  # INVALID_ARGUMENT
    assert response.headers["grpc-message"].startswith("REST paths take JSON")
    assert snapshot(rest, tenant, process_id) == before


def test_a_body_over_one_mebibyte_is_too_large(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    huge = {"type": "progress", "step": "build", "message": "x" * (1024 * 1024)}
    response = post_update(rest, tenant, process_id, huge)

    assert_error(response, 413, INVALID_ARGUMENT)
    assert snapshot(rest, tenant, process_id) == before


# One refusal of each kind through Envoy, for the REST error's shape; every
# state the machine refuses is tested in process (tests/service/test_refused_updates.py).


def test_a_step_change_not_allowed_in_its_state_is_a_failed_precondition(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    before = snapshot(rest, tenant, process_id)
    body = {"type": "step_started", "step": "test"}  # completed already

    response = post_update(rest, tenant, process_id, body)

    assert body["step"] in assert_error(response, 400, FAILED_PRECONDITION)["message"]
    assert snapshot(rest, tenant, process_id) == before


def test_a_finished_process_accepts_no_more_updates(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    update(rest, tenant, process_id, {"type": "failed", "error": "broken"})
    before = snapshot(rest, tenant, process_id)

    response = post_update(rest, tenant, process_id, {"type": "completed", "summary": "again"})

    assert_error(response, 400, FAILED_PRECONDITION)
    assert snapshot(rest, tenant, process_id) == before


# --- 400 on CreateProcess -----------------------------------------------------------


def steps(*keys: str) -> list[Json]:
    return [{"key": key, "label": key.title()} for key in keys]


INVALID_CREATIONS: list[Any] = [
    pytest.param({"namespace": "other-org.deployments"}, "namespace", id="foreign-namespace"),
    pytest.param({"namespace": ""}, "namespace", id="empty-namespace"),
    pytest.param({"namespace": "deploy ments"}, "namespace", id="bad-namespace"),
    pytest.param({"name": ""}, "name", id="empty-name"),
    pytest.param({"name": "   "}, "name", id="blank-name"),
    pytest.param({"name": "x" * 201}, "name", id="name-over-200"),
    pytest.param({"step_defs": []}, "step_defs", id="zero-steps"),
    pytest.param({"step_defs": steps(*(f"s{i}" for i in range(201)))}, "step_defs", id="201"),
    pytest.param({"step_defs": steps("build", "build")}, "step_defs[1].key", id="duplicate-key"),
    pytest.param({"step_defs": steps("build", "run tests")}, "step_defs[1].key", id="space-key"),
    pytest.param({"step_defs": steps("-build")}, "step_defs[0].key", id="leading-dash-key"),
    pytest.param({"step_defs": steps("")}, "step_defs[0].key", id="empty-key"),
    pytest.param(
        {"step_defs": [{"key": "build", "label": ""}]}, "step_defs[0].label", id="empty-label"
    ),
    pytest.param({"owner": "me"}, "owner", id="unknown-field"),
    pytest.param(
        {"step_defs": [{"key": "build", "label": "Build", "humn": True}]},
        "step_defs[0].humn",
        id="unknown-step-field",
    ),
]


@pytest.mark.parametrize(("fields", "field"), INVALID_CREATIONS)
def test_an_invalid_creation_is_rejected(
    rest: httpx.Client, tenant: Org, fields: Json, field: str
) -> None:
    before = list_processes(rest, tenant, limit=200)

    response = rest.post(PROCESSES, headers=tenant.auth(), json=create_body() | fields)

    assert_invalid_field(response, field)
    assert list_processes(rest, tenant, limit=200) == before


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"namespace": "deployments", "name": ', None),
        (b'{"namespace": "deployments", "name": "x", "step_defs": {"key": 1}}', "step_defs"),
    ],
    ids=["truncated-json", "step_defs-not-a-list"],
)
def test_an_unparseable_creation_is_rejected(
    rest: httpx.Client, tenant: Org, content: bytes, field: str | None
) -> None:
    before = list_processes(rest, tenant, limit=200)

    response = rest.post(PROCESSES, headers=tenant.auth(), content=content)

    assert_rejected_by_transcoder(response, field)
    assert list_processes(rest, tenant, limit=200) == before


# --- 400 on ListProcesses -----------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("offset=-1", "offset"),
        ("status=pending", "status"),
        ("sort=name", "sort"),
    ],
)
def test_an_invalid_list_parameter_is_rejected(
    rest: httpx.Client, tenant: Org, query: str, field: str
) -> None:
    assert_invalid_field(rest.get(f"{PROCESSES}?{query}", headers=tenant.auth()), field)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("bogus=1", "bogus"),
        ("limit=abc", "limit"),
        ("limit=1.5", "limit"),
        ("offset=abc", "offset"),
    ],
)
def test_an_unparseable_list_parameter_is_rejected(
    rest: httpx.Client, tenant: Org, query: str, field: str
) -> None:
    response = rest.get(f"{PROCESSES}?{query}", headers=tenant.auth())

    assert_rejected_by_transcoder(response, field)
