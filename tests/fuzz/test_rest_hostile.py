"""Hostile REST input through Envoy, generated class by class (issue 9): bytes
that are no UTF-8 in paths and queries, JSON that is not quite JSON, nesting
around every parser's limit, repeated keys, values of the wrong JSON type for
each field, repeated or valueless query parameters, processes filled past
their budget.

Each case plants exactly one fault, so the answer is known: 400 with a
google.rpc.Status naming the field (or the body), never a 5xx, never a
Python name; and whatever is accepted reads back over REST and gRPC.
"""

import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import hypothesis.strategies as st
import pytest
from hypothesis import assume, event, given

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.domain.processes import MAX_DATA_BYTES, MAX_DATA_DEPTH
from tests.e2e.test_hostile_input import PYTHON_NAMES
from tests.fuzz.conftest import EXAMPLES, fuzz_settings
from tests.fuzz.hostile_json import (
    DEEP,
    STEPS,
    create_bodies,
    data_objects,
    lenient_json,
    repeated_keys,
    update_bodies,
    with_nested,
    wrong_types,
)
from tests.support.orgs import Org
from tests.support.stack import Stack

PROCESSES = "/api/v1/processes"
INVALID_ARGUMENT, FAILED_PRECONDITION = 3, 9


@pytest.fixture(scope="module")
def rest(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def process_id(rest: httpx.Client, tenant: Org) -> str:
    """A running process whose steps are STEPS, for updates to aim at."""
    body = {
        "namespace": "fuzz",
        "name": "hostile",
        "step_defs": [{"key": k, "label": k} for k in STEPS],
    }
    response = rest.post(PROCESSES, headers=tenant.auth(), json=body)
    assert response.status_code == 200, response.text
    process_id: str = response.json()["process_id"]
    return process_id


def status_of(status: int, body: bytes) -> dict[str, Any]:
    """The google.rpc.Status of an error reply, checked to leak nothing."""
    assert 400 <= status < 500, (status, body)
    text = body.decode()
    assert not PYTHON_NAMES.search(text), text
    error = json.loads(text)
    assert error.keys() == {"code", "message", "details"}, error
    assert not error["message"].startswith(":"), error
    return dict(error)


def assert_refused(status: int, body: bytes, field: str, code: int = INVALID_ARGUMENT) -> None:
    """400 with `code`, the message naming `field`."""
    error = status_of(status, body)
    assert (status, error["code"]) == (400, code), error
    assert error["message"].startswith(f"{field}: "), (field, error)


def raw_get(stack: Stack, target: str, org: Org) -> tuple[int, bytes]:
    """A GET of `target` exactly as written (no client re-encodes it)."""
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    request += f"Authorization: Bearer {org.writer}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", int(stack.env["HTK_HTTP_PORT"])), 60) as sock:
        sock.sendall(request.encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


# --- bytes that are no UTF-8 in paths and queries -----------------------------------------


# Sequences no UTF-8 holds, whatever surrounds them: bytes never used, an
# overlong form, an encoded surrogate, past U+10FFFF, a lead byte cut short.
NEVER_UTF8 = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82("]
not_utf8 = st.builds(
    lambda before, bad, after: before + bad + after,
    st.binary(max_size=4),
    st.sampled_from(NEVER_UTF8),
    st.binary(max_size=4),
)
ascii_words = st.text("abcdefghij-_.~0123456789", max_size=6)
LIST_PARAMETERS = [field.name for field in pb.ListProcessesRequest.DESCRIPTOR.fields] + [
    field.json_name
    for field in pb.ListProcessesRequest.DESCRIPTOR.fields
    if field.json_name != field.name
]


@fuzz_settings()
@given(
    place=st.sampled_from(["get-path", "update-path", "query-value", "query-name"]),
    before=ascii_words,
    bad=not_utf8,
    after=ascii_words,
    parameter=st.sampled_from(LIST_PARAMETERS),
)
def test_bytes_that_are_not_utf8_in_paths_and_queries(
    rest: httpx.Client,
    stack: Stack,
    tenant: Org,
    place: str,
    before: str,
    bad: bytes,
    after: str,
    parameter: str,
) -> None:
    event(place)
    text = before + "".join(f"%{byte:02X}" for byte in bad) + after
    if place == "update-path":
        # A POST is the same path with a body; the path is judged first.
        response = rest.post(
            f"{PROCESSES}/{text}/update", headers=tenant.auth(), content=b'{"type": "completed"}'
        )
        assert_refused(response.status_code, response.content, "process_id")
        return
    target, field = {
        "get-path": (f"{PROCESSES}/{text}", "process_id"),
        "query-value": (f"{PROCESSES}?{parameter}={text}", parameter),
        "query-name": (f"{PROCESSES}?{text}=1", text),
    }[place]
    assert_refused(*raw_get(stack, target, tenant), field)


# --- JSON that is not quite JSON ------------------------------------------------------------


def _strict_json(content: bytes) -> bool:
    """Whether Python's strict parser takes `content` (the oracle for "not JSON")."""
    try:
        json.loads(content.decode(), parse_constant=lambda name: 1 / 0)
    except (ValueError, ZeroDivisionError):
        return False
    return True


def _target(creating: bool, process_id: str) -> str:
    return PROCESSES if creating else f"{PROCESSES}/{process_id}/update"


@fuzz_settings()
@given(data=st.data(), creating=st.booleans())
def test_lenient_json_bodies(
    rest: httpx.Client, tenant: Org, process_id: str, data: st.DataObject, creating: bool
) -> None:
    body = data.draw(create_bodies() if creating else update_bodies())
    content, field, fault = data.draw(lenient_json(body))
    if field == "body":
        assume(not _strict_json(content))
    event(fault)
    response = rest.post(_target(creating, process_id), headers=tenant.auth(), content=content)
    assert_refused(response.status_code, response.content, field)


# --- nesting around every parser's limit ------------------------------------------------------

# Ours (MAX_DATA_DEPTH); Python protobuf's decoder (about 33 levels of
# objects, 50 of arrays); C++ protobuf's 100; Python's JSON parser (about
# 1000); and far past them all.
LIMITS = [MAX_DATA_DEPTH, 33, 50, 100, 1000]
AROUND_LIMITS = sorted({limit + offset for limit in LIMITS for offset in (-1, 0, 1)})
depths = (
    st.sampled_from(AROUND_LIMITS)
    | st.integers(1, MAX_DATA_DEPTH)
    | st.integers(1, 1200)
    | st.just(50_000)
)
# Below this, Python's JSON parser surely reads the body (its recursion
# limit, 1000, less the frames of the server above it).
SURELY_PARSED = 800


@fuzz_settings()
@given(
    levels=depths,
    shape=st.lists(st.sampled_from("{["), min_size=1, max_size=3),
    inside=st.sampled_from(["data", "step", "root"]),
    step=st.sampled_from(STEPS),
)
def test_nesting_around_every_limit(
    rest: httpx.Client,
    tenant: Org,
    process_id: str,
    levels: int,
    shape: list[str],
    inside: str,
    step: str,
) -> None:
    event(f"{inside}, {'within' if levels <= MAX_DATA_DEPTH else 'past'} the limit")
    body: Any = {"type": "step_completed", "step": step}
    if inside == "root":
        body = [DEEP]  # nested JSON at the top of a body that is no object
    else:
        body[inside] = DEEP
    content = with_nested(body, levels, shape)
    response = rest.post(f"{PROCESSES}/{process_id}/update", headers=tenant.auth(), content=content)
    status, reply = response.status_code, response.content
    if inside == "data" and levels <= MAX_DATA_DEPTH:
        # Taken, unless the step is already done: the depth is fine.
        if status != 200:
            assert status_of(status, reply)["code"] == FAILED_PRECONDITION, reply
        return
    expected = {"data": "data", "step": "step", "root": "body"}[inside]
    if levels >= SURELY_PARSED and status_of(status, reply)["message"].startswith("body: "):
        expected = "body"
    assert_refused(status, reply, expected)


# --- repeated keys ---------------------------------------------------------------------------


@fuzz_settings()
@given(data=st.data(), creating=st.booleans())
def test_repeated_keys(
    rest: httpx.Client, tenant: Org, process_id: str, data: st.DataObject, creating: bool
) -> None:
    body = data.draw(create_bodies() if creating else update_bodies())
    if not creating and data.draw(st.booleans()):
        # Free-form JSON to repeat a key in (its type is judged after its shape).
        body["data"] = data.draw(data_objects)
    content, field = data.draw(repeated_keys(body))
    event("inside data" if field.startswith("data.") else "in the message")
    response = rest.post(_target(creating, process_id), headers=tenant.auth(), content=content)
    assert_refused(response.status_code, response.content, field)


# --- values of the wrong JSON type for each field ---------------------------------------------


@fuzz_settings()
@given(data=st.data(), creating=st.booleans())
def test_wrong_json_types_per_field(
    rest: httpx.Client, tenant: Org, process_id: str, data: st.DataObject, creating: bool
) -> None:
    body = data.draw(create_bodies() if creating else update_bodies())
    method = "CreateProcess" if creating else "UpdateProcess"
    content, field = data.draw(wrong_types(method, body))
    event(re.sub(r"\[\d+\]", "[]", field))
    response = rest.post(_target(creating, process_id), headers=tenant.auth(), content=content)
    assert_refused(response.status_code, response.content, field)


# --- repeated, valueless and path-repeating query parameters -----------------------------------

QUERY_VALUES: dict[str, st.SearchStrategy[str]] = {
    "status": st.sampled_from(["running", "completed", "failed"]),
    "namespace": st.just("fuzz"),
    "search": ascii_words,
    "sort": st.sampled_from(["newest", "oldest"]),
    "limit": st.integers(1, 200).map(str),
    "offset": st.integers(0, 10).map(str),
    "page_token": ascii_words,
}
ALIASES = {
    field.name: [field.name, field.json_name] for field in pb.ListProcessesRequest.DESCRIPTOR.fields
}


@fuzz_settings()
@given(data=st.data(), shape=st.sampled_from(["repeated", "valueless", "path-field"]))
def test_repeated_and_valueless_query_parameters(
    stack: Stack, tenant: Org, process_id: str, data: st.DataObject, shape: str
) -> None:
    event(shape)
    if shape == "path-field":
        name = data.draw(st.sampled_from(["process_id", "processId"]))
        value = data.draw(st.sampled_from([process_id, str(uuid.uuid4()), "", "x"]))
        assert_refused(*raw_get(stack, f"{PROCESSES}/{process_id}?{name}={value}", tenant), name)
        return
    fields = data.draw(st.lists(st.sampled_from(sorted(QUERY_VALUES)), min_size=1, unique=True))
    parameters = [
        f"{data.draw(st.sampled_from(ALIASES[field]))}={data.draw(QUERY_VALUES[field])}"
        for field in fields
    ]
    faulty = data.draw(st.sampled_from(fields))
    name = data.draw(st.sampled_from(ALIASES[faulty]))
    if shape == "repeated":
        parameters.append(f"{name}={data.draw(QUERY_VALUES[faulty])}")
    else:
        parameters = [p for p in parameters if p.split("=")[0] not in ALIASES[faulty]]
        parameters.insert(data.draw(st.integers(0, len(parameters))), name)
    assert_refused(*raw_get(stack, f"{PROCESSES}?{'&'.join(parameters)}", tenant), name)


# --- processes filled past their budget -------------------------------------------------------

# Data of about `size` bytes as compact JSON, in the shapes that cost most
# in each encoding: `<` (6 bytes in Envoy's JSON), one-digit numbers (11 in
# protobuf), `\x01` (6 bytes as JSON, counted so), two-byte characters.
FILLERS: dict[str, Callable[[int], dict[str, Any]]] = {
    "escaped": lambda size: {"t": "<" * max(0, size - 8)},
    "numbers": lambda size: {"n": [0] * max(0, (size - 8) // 2)},
    "control": lambda size: {"t": "\x01" * max(0, (size - 8) // 6)},
    "two-byte": lambda size: {"t": "é" * max(0, (size - 8) // 2)},
}
BIG_STEPS = 16


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[pb_grpc.ProcessServiceStub]:
    """A gRPC client with the default limits (4 MiB messages), through Envoy."""
    with grpc.insecure_channel(stack.envoy_target) as channel:
        yield pb_grpc.ProcessServiceStub(channel)


@fuzz_settings(max_examples=max(3, EXAMPLES // 10))
@given(
    fills=st.lists(
        st.tuples(
            st.sampled_from(sorted(FILLERS)),
            st.sampled_from([MAX_DATA_BYTES, MAX_DATA_BYTES * 3 // 4])
            | st.integers(MAX_DATA_BYTES // 2, MAX_DATA_BYTES)
            | st.integers(1, MAX_DATA_BYTES),
        ),
        min_size=10,
        max_size=BIG_STEPS,
    ),
    detail=st.sampled_from(["<", "\x01", "é", "x"]),
    detail_length=st.integers(0, 10_000),
)
def test_oversize_processes(
    rest: httpx.Client,
    stub: pb_grpc.ProcessServiceStub,
    tenant: Org,
    fills: list[tuple[str, int]],
    detail: str,
    detail_length: int,
) -> None:
    steps = [{"key": f"s{index}", "label": "step"} for index in range(BIG_STEPS)]
    created = rest.post(
        PROCESSES,
        headers=tenant.auth(),
        json={"namespace": "fuzz", "name": "oversize", "step_defs": steps},
    )
    process_id = created.json()["process_id"]
    accepted = 0
    for index, (filler, size) in enumerate(fills):
        body = {
            "type": "step_completed",
            "step": f"s{index}",
            "detail": detail * detail_length,
            "data": FILLERS[filler](size),
        }
        response = rest.post(f"{PROCESSES}/{process_id}/update", headers=tenant.auth(), json=body)
        if response.status_code == 200:
            accepted += 1
            continue
        error = status_of(response.status_code, response.content)
        assert error["code"] == FAILED_PRECONDITION, error
        assert "the process would hold" in error["message"], error
    event("budget reached" if accepted < len(fills) else "within the budget")
    served = rest.get(f"{PROCESSES}/{process_id}", headers=tenant.auth())
    assert served.status_code == 200, served.text
    read = stub.GetProcess(
        pb.GetProcessRequest(process_id=process_id), metadata=tenant.metadata(), timeout=60
    )
    completed = [entry for entry in served.json()["timeline"] if entry["status"] == "completed"]
    assert len(completed) == accepted
    assert sum(entry.status == "completed" for entry in read.timeline) == accepted
