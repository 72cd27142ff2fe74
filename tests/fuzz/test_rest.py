"""Schemathesis against the live stack through Envoy, driven by docs/openapi.json.

Every response must be one the document promises: no 5xx, only the status codes
the operation documents, bodies matching their schemas, and every error a JSON
google.rpc.Status whose code agrees with the HTTP status. The API validates far
more than types (name lengths, step keys, state transitions), so a request that
merely matches the schema may well be a 400: schemathesis's
`positive_data_acceptance` check does not apply here.
"""

import json
import uuid
import zlib
from typing import Any

import hypothesis.strategies as st
from schemathesis import BaseSchema, Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi import checks as openapi_checks

from tests.e2e.test_hostile_input import PYTHON_NAMES
from tests.fuzz.conftest import EXAMPLES, fuzz_settings, load_schema
from tests.support.orgs import Org
from tests.support.stack import Stack

# Loaded at import, so that each operation is a test of its own; the stack's
# address is only known later and is passed to each call.
schema = load_schema()

# The gRPC codes each HTTP status may carry (Envoy's mapping with
# convert_grpc_status, and envoy.yaml's local_reply_config for its own replies).
GRPC_CODES_BY_HTTP_STATUS = {
    400: {3, 9, 11},  # INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
    401: {16},  # UNAUTHENTICATED
    403: {7},  # PERMISSION_DENIED
    404: {5},  # NOT_FOUND
    405: {12},  # UNIMPLEMENTED
    409: {6, 10},  # ALREADY_EXISTS, ABORTED
    413: {3},
    415: {3},
    426: {3},
    429: {8},  # RESOURCE_EXHAUSTED
    431: {3},
    503: {14},  # UNAVAILABLE
    504: {4},  # DEADLINE_EXCEEDED
}


def error_is_status(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """An error body is exactly a google.rpc.Status as JSON, its code matching the
    status, its message naming what is wrong without Python's internals."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == "application/json", f"error as {content_type!r}: {response.text!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict) and body.keys() == {"code", "message", "details"}, body
    assert isinstance(body["message"], str) and isinstance(body["details"], list), body
    allowed = GRPC_CODES_BY_HTTP_STATUS.get(response.status_code, set())
    assert body["code"] in allowed, f"gRPC code {body['code']} with HTTP {response.status_code}"
    message = body["message"]
    # A message names its field first; a field the caller made up may itself
    # begin with ":" (a query parameter named ":"), and then the details name it.
    fields = [
        violation["field"]
        for detail in body["details"]
        for violation in detail.get("field_violations", [])
    ]
    named = any(field and message.startswith(f"{field}: ") for field in fields)
    assert message.strip() and (named or not message.startswith(":")), (
        f"a message naming nothing: {message!r}"
    )
    assert not PYTHON_NAMES.search(message), f"Python's internals in {message!r}"
    return True


CHECKS = [
    not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
    error_is_status,
]
TOKENS = ("writer", "reader")


@fuzz_settings()
@schema.given(token=st.sampled_from(TOKENS))
@schema.parametrize()
def test_operation(case: Case[Any], token: str, stack: Stack, tenant: Org) -> None:
    """Each operation with generated input, as a writer or a read-only token."""
    headers = tenant.auth(getattr(tenant, token))
    case.call_and_validate(base_url=stack.http_url, headers=headers, checks=CHECKS)


@fuzz_settings(max_examples=max(10, EXAMPLES // 10))
@schema.given(
    authorization=st.one_of(
        st.none(),
        st.just("Bearer"),
        st.builds("Bearer htk_{}".format, st.text("abcdefghijklmnopqrstuvwxyz0123456789")),
        # HTTP clients refuse header values with surrounding whitespace.
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E)).filter(
            lambda value: value == value.strip()
        ),
    )
)
@schema.parametrize()
def test_operation_without_a_valid_token(
    case: Case[Any], authorization: str | None, stack: Stack
) -> None:
    """Without a valid token nothing succeeds: 401, or 400/413 where Envoy
    refuses the input before the server sees the token; except operations
    that declare they take no token."""
    headers = {} if authorization is None else {"Authorization": authorization}
    # Ours replace any Authorization schemathesis generated from the security scheme.
    if case.headers:
        case.headers.pop("Authorization", None)
    response = case.call(base_url=stack.http_url, headers=headers)
    if case.operation.definition.raw.get("security") == []:
        # It takes no token (its request is the proof, if any): what it
        # answers is test_operation's to check; it must only not break.
        assert response.status_code < 500, (response.status_code, response.text)
        return
    assert response.status_code in {400, 401, 413}, (response.status_code, response.text)
    case.validate_response(response, checks=CHECKS)


def _pick(options: tuple[str, ...], seed: Any) -> str:
    """A choice that follows the generated data, so a replay makes the same one."""
    digest = zlib.crc32(json.dumps(seed, sort_keys=True, default=str).encode())
    return options[digest % len(options)]


STEP_KEYS = ("build", "test", "review", "deploy")
# Starting a human step opens its task, so that chains reach the task operations.
HUMAN_STEP_KEYS = {"review"}
UPDATE_TYPES = ("step_started", "step_completed", "step_failed", "progress", "completed", "failed")


def test_stateful_chains(api_schema: BaseSchema, tenant: Org) -> None:
    """Create -> update -> get chains along the document's links.

    Random create bodies are almost never valid (namespaces, step keys), and
    random updates almost never name a real type and step, so the chains would
    stop at the first call. The machine therefore completes create bodies into
    valid ones and, for half of the updates, fills in a real type and step; the
    rest of each body stays as generated.

    Each chain sees only its own processes and tasks. Hypothesis replays a
    chain's calls and expects the same answers, which a chain meeting another's
    state would not get: an Idempotency-Key drawn again in a later chain would
    replay that chain's process (by then in another state), and a listing of
    the organization's tasks would offer other chains' tasks. So each chain
    prefixes its keys, and creates and lists in a namespace of its own.
    """

    class Chains(api_schema.as_state_machine()):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.namespace = f"fuzz-{uuid.uuid4().hex[:8]}"

        def before_call(self, case: Case[Any]) -> None:
            negative = case.meta is not None and case.meta.generation.mode.is_negative
            key = case.headers.get("Idempotency-Key") if case.headers else None
            if isinstance(key, str) and not negative:
                case.headers["Idempotency-Key"] = f"{self.namespace}-{key}"[:200]
            if case.operation.label == "GET /api/v1/tasks" and not negative:
                case.query = {**(case.query or {}), "namespace": self.namespace}
            body = case.body if isinstance(case.body, dict) else None
            if body is None or negative:
                return
            if case.operation.label == "POST /api/v1/processes":
                name = body.get("name")
                valid_name = isinstance(name, str) and 0 < len(name) <= 200 and "\0" not in name
                body["name"] = name if valid_name else "fuzzed process"
                body["namespace"] = self.namespace
                body["step_defs"] = [
                    {"key": key, "label": key.title(), "human": key in HUMAN_STEP_KEYS}
                    for key in STEP_KEYS
                ]
            elif case.operation.label.endswith("/update") and _pick(("keep", "fix"), body) == "fix":
                body["type"] = _pick(UPDATE_TYPES, body)
                body["step"] = _pick(STEP_KEYS, body)

        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"headers": tenant.auth()}

        def validate_response(
            self, response: Response, case: Case[Any], additional_checks: Any = None, **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    Chains.run(settings=fuzz_settings(max_examples=max(10, EXAMPLES // 5), stateful_step_count=8))
