"""Hostile input end to end: every class of malformed input gets a clear 4xx
(INVALID_ARGUMENT or the like over gRPC) naming the problem, changes nothing,
and never leaks a Python name; whatever is accepted can be read back.

One section per class of issue 9, REST through Envoy and native gRPC (through
Envoy and to the server directly) where the class applies.
"""

import base64
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from server.domain.processes import MAX_DATA_BYTES, MAX_DATA_DEPTH, MAX_PROCESS_BYTES
from server.edge.constants import JSON_BODY_HEADER, QUERY_HEADER
from tests.e2e.test_grpc import (
    Stub,
    assert_invalid_argument,
    create,
    get,
    rpc_error,
    struct,
)
from tests.e2e.test_rest_contract import (
    PROCESSES,
    Json,
    create_process,
    get_process,
    ok,
    post_update,
)
from tests.e2e.test_rest_errors import (
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    assert_error,
    assert_invalid_field,
    assert_rejected_by_transcoder,
    snapshot,
)
from tests.support.orgs import Org
from tests.support.stack import Stack

UNIMPLEMENTED = 12
# What no message may contain: Python's class reprs, tracebacks, exception names.
PYTHON_NAMES = re.compile(
    r"<class '|Traceback \(most recent|"
    r"\b(?:Decode|JSONDecode|Key|Value|Type|Attribute|Index|Recursion|Unicode\w*|Assertion)Error\b"
)


@pytest.fixture
def process_id(rest: httpx.Client, tenant: Org) -> str:
    """A running process with `build` running and `test`, `review`, `deploy` pending."""
    process_id: str = create_process(rest, tenant)["process_id"]
    ok(post_update(rest, tenant, process_id, {"type": "step_started", "step": "build"}))
    return process_id


@pytest.fixture(scope="module", params=["envoy", "server"])
def stub(request: pytest.FixtureRequest, stack: Stack) -> Iterator[Stub]:
    """A stub through Envoy, and one to the server's direct port."""
    target = stack.envoy_target if request.param == "envoy" else stack.server_target
    with grpc.insecure_channel(target) as channel:
        yield Stub(channel)


def raw_grpc(stack: Stack, target: str, method: str, payload: bytes, org: Org) -> grpc.Call:
    """Sends `payload` as the request message of ProcessService.`method`; it must fail."""
    address = stack.envoy_target if target == "envoy" else stack.server_target
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            f"/htk.processes.v1.ProcessService/{method}",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, metadata=org.metadata(), timeout=30)
    error: grpc.Call = caught.value  # type: ignore[assignment]
    assert not PYTHON_NAMES.search(error.details() or ""), error.details()
    return error


def raw_http(stack: Stack, request: bytes) -> tuple[int, bytes]:
    """Sends bytes as they are (no client normalizes them); returns the status and body."""
    with socket.create_connection(("127.0.0.1", int(stack.env["HTK_HTTP_PORT"])), 30) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def assert_clean(response: httpx.Response) -> None:
    assert not PYTHON_NAMES.search(response.text), response.text


# --- 1. lenient JSON ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"type": "completed", "summary": "a\x01b"}', id="raw-control-character"),
        pytest.param(b'{"type": "completed", "summary": "a\nb"}', id="raw-newline"),
        pytest.param(b'{"type": "completed",}', id="trailing-comma"),
        pytest.param(b"{'type': 'completed'}", id="single-quotes"),
        pytest.param(b'{type: "completed"}', id="unquoted-key"),
        pytest.param(b'{"type": "completed"} // done', id="comment"),
        pytest.param(b'{"type": "progress", "step": "build", "percent": NaN}', id="NaN"),
        pytest.param(b'\xef\xbb\xbf{"type": "completed"}', id="byte-order-mark"),
        pytest.param(b'{"type": "completed", "summary": "\xff"}', id="not-UTF-8"),
        pytest.param('{"type": "completed"}'.encode("utf-16"), id="UTF-16"),
        pytest.param(b'{"type": "completed"}{"type": "failed"}', id="two-documents"),
    ],
)
def test_a_body_that_is_not_json_is_refused(
    rest: httpx.Client, tenant: Org, process_id: str, content: bytes
) -> None:
    before = snapshot(rest, tenant, process_id)

    response = post_update(rest, tenant, process_id, content)

    assert_invalid_field(response, "percent" if b"NaN" in content else "body")
    assert_clean(response)
    assert snapshot(rest, tenant, process_id) == before


def test_a_lone_surrogate_escape_is_refused(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    response = post_update(rest, tenant, process_id, b'{"type": "failed", "error": "\\ud800"}')

    assert_invalid_field(response, "error")
    assert snapshot(rest, tenant, process_id) == before


# --- 2. invalid UTF-8 -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ("/api/v1/processes/%FF", "process_id"),
        ("/api/v1/processes/%C0%AF", "process_id"),  # an overlong '/'
        ("/api/v1/processes?search=%FF", "search"),
        ("/api/v1/processes?status=%ED%A0%80", "status"),  # an encoded surrogate
        ("/api/v1/processes?%FF=1", "%FF"),
    ],
)
def test_percent_encoded_bytes_that_are_not_utf8_are_refused(
    stack: Stack, tenant: Org, target: str, field: str
) -> None:
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    request += f"Authorization: Bearer {tenant.writer}\r\n\r\n"

    status, body = raw_http(stack, request.encode())

    assert status == 400, body
    assert f'"message":"{field}: not valid UTF-8' in body.decode(), body
    assert not PYTHON_NAMES.search(body.decode()), body


def test_an_invalid_path_without_a_token_is_refused_without_internals(stack: Stack) -> None:
    request = b"GET /api/v1/processes/%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    status, body = raw_http(stack, request)

    assert status in (400, 401), body
    assert not PYTHON_NAMES.search(body.decode()), body


def test_an_update_path_that_is_not_utf8_is_refused(rest: httpx.Client, tenant: Org) -> None:
    response = rest.post(
        "/api/v1/processes/%FF%FE/update", headers=tenant.auth(), json={"type": "completed"}
    )

    assert_invalid_field(response, "process_id")


@pytest.mark.parametrize("target", ["envoy", "server"])
@pytest.mark.parametrize(
    ("method", "payload", "field"),
    [
        ("GetProcess", b"\n\x01\xff", "process_id"),
        ("ListProcesses", b"\x1a\x02\xc3\x28", "search"),
        ("CreateProcess", b"\x12\x02n\xff", "name"),
        ("CreateProcess", b"\x1a\x05\n\x03\xe2\x82\x28", "step_defs[0].key"),
        ("UpdateProcess", b"\x2a\x07\n\x05\n\x01\xff\x12\x00", "data"),
        ("UpdateProcess", b"\x12\x0acompleted", "type"),  # truncated
        ("GetProcess", b"\xff\xff\xff", "request"),
    ],
)
def test_a_payload_that_is_no_valid_message_is_an_invalid_argument(
    stack: Stack, tenant: Org, target: str, method: str, payload: bytes, field: str
) -> None:
    error = raw_grpc(stack, target, method, payload, tenant)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (error.details() or "").startswith(f"{field}: "), error.details()


# --- 3. nesting around every parser's limit --------------------------------------------


def nested_data(levels: int, container: str = "object") -> Any:
    """`data` of `levels` levels of objects (or an object of arrays), itself included."""
    value: Any = "deep"
    for _ in range(levels - 1):
        value = {"a": value} if container == "object" else [value]
    return {"a": value}


@pytest.mark.parametrize("container", ["object", "array"])
def test_data_at_the_depth_limit_is_stored_and_served(
    rest: httpx.Client, stub: Stub, tenant: Org, process_id: str, container: str
) -> None:
    data = nested_data(MAX_DATA_DEPTH, container)
    body = {"type": "step_completed", "step": "build", "data": data}

    ok(post_update(rest, tenant, process_id, body))

    assert get_process(rest, tenant, process_id)["timeline"][0]["data"] == data
    assert get(stub, tenant, process_id).timeline[0].data == struct(data)


# Just past the limit; past Python protobuf's decoder (about 33 levels of
# objects); past Python's JSON parser (about 1000).
DEPTHS_PAST_THE_LIMIT = [MAX_DATA_DEPTH + 1, 34, 40, 100]


@pytest.mark.parametrize("container", ["object", "array"])
@pytest.mark.parametrize("levels", DEPTHS_PAST_THE_LIMIT)
def test_data_past_the_depth_limit_is_refused_over_rest(
    rest: httpx.Client, tenant: Org, process_id: str, levels: int, container: str
) -> None:
    before = snapshot(rest, tenant, process_id)
    body = {"type": "step_completed", "step": "build", "data": nested_data(levels, container)}

    assert_invalid_field(post_update(rest, tenant, process_id, body), "data")
    assert snapshot(rest, tenant, process_id) == before


def test_a_body_nested_past_the_json_parser_is_refused(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    content = b'{"type": "step_completed", "step": "build", "data": {"a": '
    content += b"[" * 100_000 + b"]" * 100_000 + b"}}"

    assert_invalid_field(post_update(rest, tenant, process_id, content), "body")


@pytest.mark.parametrize("levels", [MAX_DATA_DEPTH + 1, 34, 60])
def test_data_past_the_depth_limit_is_refused_over_grpc(
    stub: Stub, tenant: Org, levels: int
) -> None:
    process = create(stub, tenant)
    request = pb.UpdateProcessRequest(
        process_id=process.process_id, type="step_completed", step="build"
    )
    request.data.update(nested_data(levels))

    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: stub.UpdateProcess(request, metadata=tenant.metadata()),
    )

    assert (error.details() or "").startswith("data: must nest at most"), error.details()
    assert get(stub, tenant, process.process_id) == process


# --- 4. oversize processes ------------------------------------------------------------

BIG_STEPS = [{"key": f"s{index}", "label": f"Step {index}"} for index in range(12)]
# The worst cases of each encoding: `<` takes 6 bytes in Envoy's JSON, a
# one-digit number 11 bytes in protobuf.
FILLERS: dict[str, Callable[[int], Json]] = {
    "escaped-text": lambda size: {"log": "<" * (size - 10)},
    "small-numbers": lambda size: {"n": [0] * ((size - 8) // 2)},
}


@pytest.mark.parametrize("filler", FILLERS)
def test_a_process_filled_to_its_budget_is_served_whole(
    rest: httpx.Client, stub: Stub, tenant: Org, filler: str
) -> None:
    process_id = create_process(rest, tenant, steps=BIG_STEPS)["process_id"]
    accepted = 0
    for step in BIG_STEPS:
        body = {
            "type": "step_completed",
            "step": step["key"],
            "data": FILLERS[filler](MAX_DATA_BYTES),
        }
        response = post_update(rest, tenant, process_id, body)
        if response.status_code != 200:
            assert_error(response, 400, FAILED_PRECONDITION)
            assert response.json()["message"].startswith("data: the process would hold")
            assert str(MAX_PROCESS_BYTES) in response.json()["message"]
            break
        accepted += 1
    else:
        pytest.fail("the budget never stopped the process from growing")
    assert accepted >= MAX_PROCESS_BYTES // MAX_DATA_BYTES - 1

    served = get_process(rest, tenant, process_id)
    read = get(stub, tenant, process_id)  # a default client: 4 MiB at most

    completed = [entry for entry in served["timeline"] if entry["status"] == "completed"]
    assert len(completed) == accepted
    assert sum(entry.status == "completed" for entry in read.timeline) == accepted


def test_a_full_process_can_still_finish(rest: httpx.Client, tenant: Org) -> None:
    process_id = create_process(rest, tenant, steps=BIG_STEPS)["process_id"]
    for step in BIG_STEPS:
        body = {"type": "step_completed", "step": step["key"], "data": {"log": "x" * 65_000}}
        if post_update(rest, tenant, process_id, body).status_code != 200:
            break

    ok(post_update(rest, tenant, process_id, {"type": "completed"}))

    assert get_process(rest, tenant, process_id)["status"] == "completed"


# --- 5. nothing silently dropped or reinterpreted --------------------------------------


@pytest.mark.parametrize(
    ("content", "field"),
    [
        pytest.param(b'{"type": "step_started", "type": "completed"}', "type", id="repeated-key"),
        pytest.param(
            b'{"type": "step_completed", "step": "build", "data": {"a": 1, "a": 2}}',
            "data.a",
            id="repeated-key-in-data",
        ),
        pytest.param(b'{"type": "completed", "processId": "x"}', "processId", id="path-field"),
        pytest.param(b'{"type": "completed", "summary": null}', "summary", id="null"),
        pytest.param(b'{"type": "completed", "summary": 5}', "summary", id="number-for-text"),
        pytest.param(
            b'{"type": "progress", "step": "build", "percent": "50"}', "percent", id="text-number"
        ),
        pytest.param(
            b'{"type": "progress", "step": "build", "percent": true}', "percent", id="bool-number"
        ),
    ],
)
def test_an_update_of_the_wrong_shape_is_refused(
    rest: httpx.Client, tenant: Org, process_id: str, content: bytes, field: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    assert_invalid_field(post_update(rest, tenant, process_id, content), field)
    assert snapshot(rest, tenant, process_id) == before


@pytest.mark.parametrize(
    ("step_defs", "field"),
    [
        pytest.param('{"key": "a", "label": "A"}', "step_defs", id="object-for-array"),
        pytest.param('[null, {"key": "a", "label": "A"}]', "step_defs[0]", id="null-in-array"),
        pytest.param(
            '[{"key": "a", "label": "A", "human": "yes"}]', "step_defs[0].human", id="yes"
        ),
        pytest.param(
            '[{"key": "a", "label": "A", "human": "false"}]', "step_defs[0].human", id="no"
        ),
        pytest.param('[{"key": "a", "label": "A", "human": 1}]', "step_defs[0].human", id="1"),
        pytest.param('[[{"key": "a", "label": "A"}]]', "step_defs[0]", id="nested-array"),
    ],
)
def test_a_creation_of_the_wrong_shape_is_refused(
    rest: httpx.Client, tenant: Org, step_defs: str, field: str
) -> None:
    before = rest.get(PROCESSES, headers=tenant.auth(), params={"limit": 200}).json()
    content = f'{{"namespace": "d", "name": "n", "step_defs": {step_defs}}}'.encode()

    assert_invalid_field(rest.post(PROCESSES, headers=tenant.auth(), content=content), field)
    assert rest.get(PROCESSES, headers=tenant.auth(), params={"limit": 200}).json() == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=1&limit=2", "limit"),
        ("search=a&search=b", "search"),
        ("page_token=a&pageToken=b", "pageToken"),
        ("limit", "limit"),
        ("search=a%2", "search"),
    ],
)
def test_a_repeated_or_valueless_query_parameter_is_refused(
    rest: httpx.Client, tenant: Org, query: str, field: str
) -> None:
    assert_invalid_field(rest.get(f"{PROCESSES}?{query}", headers=tenant.auth()), field)


def test_a_query_parameter_repeating_the_path_is_refused(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    other = create_process(rest, tenant)["process_id"]

    response = rest.get(f"{PROCESSES}/{process_id}?process_id={other}", headers=tenant.auth())

    assert_invalid_field(response, "process_id")


@pytest.mark.parametrize("path", [PROCESSES, f"{PROCESSES}/{{id}}"])
def test_a_body_on_a_get_is_refused(
    rest: httpx.Client, tenant: Org, process_id: str, path: str
) -> None:
    response = rest.request(
        "GET", path.format(id=process_id), headers=tenant.auth(), json={"status": "failed"}
    )

    assert_invalid_field(response, "body")


def _unannounced_body_get(stack: Stack, org: Org, path: str, body: str) -> httpx.Response:
    """A GET over HTTP/2 whose body no content-length announces (curl: httpx
    here speaks HTTP/1.1 alone), as Envoy's route for plain GETs takes it."""
    result = subprocess.run(
        [
            "curl", "-sS", "--http2-prior-knowledge", "-X", "GET",
            "-H", f"Authorization: {org.auth()['Authorization']}",
            "-H", "Content-Length:", "-H", "Content-Type: application/json",
            "--data-binary", body, "-w", "\n%{http_code} %{content_type}",
            f"{stack.http_url}{path}",
        ],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    content, _, written = result.stdout.rpartition("\n")
    status, _, content_type = written.partition(" ")
    return httpx.Response(
        int(status), headers={"content-type": content_type}, content=content.encode()
    )


def test_a_body_on_a_get_is_refused_when_no_length_announces_it(
    stack: Stack, rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    other = create_process(rest, tenant)["process_id"]

    listed = _unannounced_body_get(stack, tenant, PROCESSES, '{"status": "failed"}')
    got = _unannounced_body_get(
        stack, tenant, f"{PROCESSES}/{process_id}", f'{{"process_id": "{other}"}}'
    )

    assert_invalid_field(listed, "body")
    assert_rejected_by_transcoder(got, "process_id")


# --- 6. blank required text -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "step_failed", "step": "build", "error": ""}, "error"),
        ({"type": "failed", "error": "  "}, "error"),
        ({"type": "progress", "step": "build", "message": ""}, "message"),
        ({"type": "progress", "step": "build", "message": "\t", "percent": 5}, "message"),
    ],
)
def test_a_blank_required_text_is_refused(
    rest: httpx.Client, stub: Stub, tenant: Org, process_id: str, body: Json, field: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    assert_invalid_field(post_update(rest, tenant, process_id, body), field)
    request = pb.UpdateProcessRequest(process_id=process_id, **body)
    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: stub.UpdateProcess(request, metadata=tenant.metadata()),
    )
    assert_invalid_argument(error, field)
    assert snapshot(rest, tenant, process_id) == before


# --- 7. replies a client can act on ------------------------------------------------------


def test_a_grpc_content_type_on_a_rest_path_gets_a_grpc_error(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    response = rest.post(
        f"{PROCESSES}/{process_id}/update",
        headers=tenant.auth() | {"Content-Type": "application/grpc"},
        content=b'{"type": "completed"}',
    )

    assert response.headers["grpc-status"] == "3"
    assert "REST paths take JSON" in response.headers["grpc-message"]
    assert snapshot(rest, tenant, process_id) == before


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/processes/{id}", "GET"),
        ("PUT", "/api/v1/processes", "GET, POST"),
        ("PATCH", "/api/v1/processes/{id}", "GET"),
        ("GET", "/api/v1/processes/{id}/update", "POST"),
        ("PUT", "/api/v1/processes/{id}/update", "POST"),
        ("POST", "/api/v1/processes/{id}", "GET"),
        ("POST", "/api/v1/openapi.json", "GET"),
    ],
)
def test_a_method_a_path_does_not_take_is_405_with_allow(
    rest: httpx.Client, tenant: Org, process_id: str, method: str, path: str, allow: str
) -> None:
    before = snapshot(rest, tenant, process_id)

    response = rest.request(method, path.format(id=process_id), headers=tenant.auth())

    body = assert_error(response, 405, UNIMPLEMENTED)
    assert response.headers["allow"] == allow
    assert method in body["message"] and allow in body["message"]
    assert snapshot(rest, tenant, process_id) == before


def test_http_1_0_is_426_with_a_json_status(stack: Stack) -> None:
    status, body = raw_http(stack, b"GET /api/v1/processes HTTP/1.0\r\n\r\n")

    assert status == 426, body
    assert body.startswith(b'{"code":3,'), body


def test_headers_too_large_are_431_with_a_json_status(rest: httpx.Client, tenant: Org) -> None:
    response = rest.get(PROCESSES, headers=tenant.auth() | {"x-large": "x" * 100_000})

    assert_error(response, 431, INVALID_ARGUMENT)


# --- 8. limits measured as documented ---------------------------------------------------


def test_data_is_measured_in_utf8_bytes_not_json_escapes(
    rest: httpx.Client, tenant: Org, process_id: str
) -> None:
    # 2 bytes each in UTF-8, though 6 as the escape `\u00e9`.
    accented = {"log": "é" * ((MAX_DATA_BYTES - 20) // 2)}

    ok(
        post_update(
            rest, tenant, process_id, {"type": "step_completed", "step": "build", "data": accented}
        )
    )

    assert get_process(rest, tenant, process_id)["timeline"][0]["data"] == accented


def test_an_idempotency_key_with_a_space_is_refused_as_documented(
    rest: httpx.Client, tenant: Org
) -> None:
    response = rest.post(
        PROCESSES,
        headers=tenant.auth() | {"Idempotency-Key": "two words"},
        json={"namespace": "d", "name": "n", "step_defs": [{"key": "a", "label": "A"}]},
    )

    assert_invalid_field(response, "idempotency-key")
    assert "without spaces" in response.json()["message"]


# --- 9. Envoy's internal metadata --------------------------------------------------------


def test_internal_metadata_is_refused_on_the_direct_port(stack: Stack, tenant: Org) -> None:
    with grpc.insecure_channel(stack.server_target) as channel:
        error = rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda: Stub(channel).ListProcesses(
                pb.ListProcessesRequest(),
                metadata=(*tenant.metadata(), (JSON_BODY_HEADER, "not base64!")),
            ),
        )

    assert_invalid_argument(error, JSON_BODY_HEADER)


def test_internal_metadata_a_client_sends_through_envoy_is_dropped(
    rest: httpx.Client, grpc_stub: Stub, tenant: Org
) -> None:
    spoofed = {
        QUERY_HEADER: "limit=0",
        JSON_BODY_HEADER: base64.b64encode(b'{"status": "bogus"}').decode(),
    }

    listed = grpc_stub.ListProcesses(
        pb.ListProcessesRequest(limit=3), metadata=(*tenant.metadata(), *spoofed.items())
    )
    page = ok(rest.get(PROCESSES, headers=tenant.auth() | spoofed, params={"limit": 3}))

    assert listed.limit == page["limit"] == 3
