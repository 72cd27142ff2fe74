"""Strict reading of REST input (server/edge/rest_input.py), the REST
bindings it follows (server/transport/http_rules.py), and those bindings as
Envoy's Lua filter matches them (server/edge/lua.py)."""

import base64
from typing import Any

import pytest
from google.protobuf import json_format, message_factory

from htk.processes.v1 import process_service_pb2 as pb
from server.domain.errors import InvalidArgument
from server.domain.processes import MAX_DATA_DEPTH
from server.edge.constants import INTERNAL_HEADER_PREFIX, JSON_BODY_HEADER, QUERY_HEADER
from server.edge.lua import path_pattern, route_table
from server.edge.paths import RE2, template_pattern
from server.edge.rest_input import TRANSCODED_HEADER, rest_request
from server.transport.http_rules import HttpBinding

SERVICE = pb.DESCRIPTOR.services_by_name["ProcessService"]
# How gRPC names a caller on a Unix socket, as Envoy is to the workers.
ENVOY = "unix:"


def read(
    method: str, query: str = "", body: bytes | None = None, peer: str = ENVOY
) -> dict[str, Any]:
    """The request a REST call makes (path fields as the transcoder sets them), as JSON."""
    descriptor = SERVICE.methods_by_name[method]
    request = message_factory.GetMessageClass(descriptor.input_type)()
    if "process_id" in descriptor.input_type.fields_by_name:
        request.process_id = "P"  # type: ignore[attr-defined]
    metadata = [(QUERY_HEADER, query)]
    if body is not None:
        metadata.append((JSON_BODY_HEADER, base64.b64encode(body).decode()))
    read = rest_request(descriptor, request, metadata, peer)
    return json_format.MessageToDict(read, preserving_proto_field_name=True)


def refused(method: str, query: str = "", body: bytes | None = None, peer: str = ENVOY) -> str:
    """The field the call is refused over."""
    with pytest.raises(InvalidArgument) as refusal:
        read(method, query, body, peer)
    assert refusal.value.problem
    return refusal.value.field


def data_nested(levels: int) -> bytes:
    """A body whose `data` holds `levels` levels of objects, itself included."""
    return b'{"data":' + b'{"a":' * (levels - 1) + b"{}" + b"}" * levels


# --- accepted ----------------------------------------------------------------------------


def test_a_native_grpc_call_is_left_as_it_came() -> None:
    request = pb.ListProcessesRequest(limit=3)
    assert rest_request(SERVICE.methods_by_name["ListProcesses"], request, [], "ipv4:x") is request


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        (
            "status=running&search=deploy+v2&sort=oldest",
            {"status": "running", "search": "deploy v2", "sort": "oldest"},
        ),
        ("limit=10&offset=0", {"limit": 10, "offset": 0}),
        ("search=%C3%A9t%C3%A9&pageToken=abc", {"search": "été", "page_token": "abc"}),
        ("search=&limit=5&", {"limit": 5}),
        ("%73earch=x", {"search": "x"}),
    ],
)
def test_query_parameters_fill_their_fields(query: str, expected: dict[str, Any]) -> None:
    assert read("ListProcesses", query) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"type": "progress", "step": "b", "percent": 50}', {"percent": 50}),
        (b'{"type": "progress", "step": "b", "percent": 5e1}', {"percent": 50}),
        (b'{"type": "progress", "step": "b", "percent": 50.0}', {"percent": 50}),
        (
            b'{"type": "step_completed", "data": {"a": [null, 1, {"b": null}], "c": "\\u00e9"}}',
            {"data": {"a": [None, 1.0, {"b": None}], "c": "é"}},
        ),
        (data_nested(MAX_DATA_DEPTH), {}),
    ],
)
def test_a_json_body_fills_the_request(body: bytes, expected: dict[str, Any]) -> None:
    read_request = read("UpdateProcess", body=body)
    assert read_request["process_id"] == "P"
    assert read_request.items() >= expected.items()


def test_a_creation_body_with_camel_case_names() -> None:
    body = (
        b'{"namespace": "d", "name": "n", "stepDefs": [{"key": "a", "label": "A", "human": true}]}'
    )
    assert read("CreateProcess", body=body) == {
        "namespace": "d",
        "name": "n",
        "step_defs": [{"key": "a", "label": "A", "human": True}],
    }


# --- refused: the query string -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "query", "field"),
    [
        pytest.param("ListProcesses", "limit=1&limit=2", "limit", id="repeated"),
        pytest.param("ListProcesses", "search=a&search=b", "search", id="repeated-string"),
        pytest.param(
            "ListProcesses", "pageToken=a&page_token=b", "page_token", id="repeated-alias"
        ),
        pytest.param("ListProcesses", "search=%FF", "search", id="not-UTF-8"),
        pytest.param("ListProcesses", "search=%ED%A0%80", "search", id="surrogate-UTF-8"),
        pytest.param("ListProcesses", "%FF=1", "%FF", id="name-not-UTF-8"),
        pytest.param("ListProcesses", "search=a%2", "search", id="bad-percent-escape"),
        pytest.param("ListProcesses", "search=a%zz", "search", id="bad-percent-hex"),
        pytest.param("ListProcesses", "limit", "limit", id="no-value"),
        pytest.param("ListProcesses", "=x", "query", id="no-name"),
        pytest.param("ListProcesses", "limit=2&=0.0", "query", id="no-name-after-another"),
        pytest.param("ListProcesses", "bogus=1", "bogus", id="unknown"),
        pytest.param("ListProcesses", "limit=abc", "limit", id="not-a-number"),
        pytest.param("ListProcesses", "limit=1.5", "limit", id="not-whole"),
        pytest.param("ListProcesses", "limit=+5", "limit", id="plus-sign"),
        pytest.param("ListProcesses", "limit=99999999999", "limit", id="past-int32"),
        pytest.param("ListProcesses", "limit=" + "9" * 5000, "limit", id="5000-digits"),
        pytest.param("GetProcess", "process_id=B", "process_id", id="repeats-the-path"),
        pytest.param("GetProcess", "processId=B", "processId", id="repeats-the-path-camel"),
        pytest.param("GetProcess", "search=x", "search", id="not-of-the-method"),
        pytest.param("UpdateProcess", "type=completed", "type", id="query-on-a-body-method"),
    ],
)
def test_a_malformed_query_is_refused_naming_the_parameter(
    method: str, query: str, field: str
) -> None:
    assert refused(method, query) == field


# --- refused: the JSON body --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # Not JSON, though Envoy's transcoder takes it.
        pytest.param(b'{"type": "a\x01b"}', "body", id="raw-control-character"),
        pytest.param(b'{"type": "a",}', "body", id="trailing-comma"),
        pytest.param(b"[1,]", "body", id="trailing-comma-in-array"),
        pytest.param(b"{'type': 'a'}", "body", id="single-quotes"),
        pytest.param(b'{type: "a"}', "body", id="unquoted-key"),
        pytest.param(b'{"type": "a"} // c', "body", id="comment"),
        pytest.param(b'{"percent": 010}', "body", id="leading-zero"),
        pytest.param(b'{"percent": 0x10}', "body", id="hex"),
        pytest.param(b'{"type": "a"}{"type": "b"}', "body", id="two-values"),
        pytest.param(b"\xef\xbb\xbf{}", "body", id="byte-order-mark"),
        pytest.param(b'{"type": "\xff"}', "body", id="not-UTF-8"),
        pytest.param('{"type": "é"}'.encode("utf-16"), "body", id="UTF-16"),
        pytest.param(b" ", "body", id="blank"),
        pytest.param(b"[" * 5000 + b"]" * 5000, "body", id="past-the-parser-recursion"),
        # JSON, but not of the message's shape.
        pytest.param(b"[]", "body", id="array"),
        pytest.param(b"null", "body", id="null"),
        pytest.param(b'"x"', "body", id="string"),
        pytest.param(b'{"type": "a", "type": "b"}', "type", id="repeated-key"),
        pytest.param(b'{"step": "a", "step": null}', "step", id="repeated-key-null"),
        pytest.param(b'{"type": "a", "tYpe": "b", "bogus": 1}', "tYpe", id="unknown-field"),
        # Found by schemathesis: the message began ": unknown field".
        pytest.param(b'{"": null}', '""', id="empty-key"),
        pytest.param(b'{"data": {"a": {"": 1, "": 2}}}', 'data.a.""', id="empty-key-in-data"),
        pytest.param(b'{"message": "a", "message": "a"}', "message", id="repeated-same-value"),
        pytest.param(b'{"processId": "Q"}', "processId", id="path-field-camel"),
        pytest.param(b'{"process_id": "Q"}', "process_id", id="path-field"),
        pytest.param(b'{"type": null}', "type", id="null-field"),
        pytest.param(b'{"type": 5}', "type", id="number-for-string"),
        pytest.param(b'{"type": ["a"]}', "type", id="array-for-string"),
        pytest.param(b'{"type": {"a": 1}}', "type", id="object-for-string"),
        pytest.param(b'{"type": "\\ud800"}', "type", id="lone-surrogate"),
        pytest.param(b'{"percent": "50"}', "percent", id="string-for-int"),
        pytest.param(b'{"percent": true}', "percent", id="bool-for-int"),
        pytest.param(b'{"percent": 50.5}', "percent", id="fraction"),
        pytest.param(b'{"percent": NaN}', "percent", id="NaN"),
        pytest.param(b'{"percent": 1e400}', "percent", id="past-double"),
        pytest.param(b'{"percent": 3000000000}', "percent", id="past-int32"),
        pytest.param(b'{"percent": ' + b"9" * 5000 + b"}", "percent", id="5000-digits"),
        pytest.param(b'{"data": null}', "data", id="null-data"),
        pytest.param(b'{"data": [1]}', "data", id="array-for-struct"),
        pytest.param(b'{"data": "x"}', "data", id="string-for-struct"),
        pytest.param(b'{"data": {"a": 1, "a": 2}}', "data.a", id="repeated-key-in-data"),
        pytest.param(b'{"data": {"x": [{"a": 1, "a": 2}]}}', "data.x[0].a", id="deep-repeat"),
        pytest.param(b'{"data": {"a": NaN}}', "data.a", id="NaN-in-data"),
        pytest.param(b'{"data": {"a": [-Infinity]}}', "data.a[0]", id="Infinity-in-data"),
        pytest.param(b'{"data": {"\\udfff": 1}}', "data.\udfff", id="lone-surrogate-key"),
        pytest.param(data_nested(MAX_DATA_DEPTH + 1), "data", id="data-too-deep"),
        pytest.param(
            b'{"data": {"a": ' + b"[" * MAX_DATA_DEPTH + b"]" * MAX_DATA_DEPTH + b"}}",
            "data",
            id="data-too-deep-in-arrays",
        ),
    ],
)
def test_a_malformed_update_body_is_refused_naming_the_field(body: bytes, field: str) -> None:
    assert refused("UpdateProcess", body=body) == field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b'{"step_defs": {"key": "a"}}', "step_defs", id="object-for-array"),
        pytest.param(b'{"step_defs": [null, {"key": "a"}]}', "step_defs[0]", id="null-in-array"),
        pytest.param(b'{"step_defs": [[{"key": "a"}]]}', "step_defs[0]", id="array-in-array"),
        pytest.param(b'{"step_defs": ["a"]}', "step_defs[0]", id="string-for-object"),
        pytest.param(
            b'{"step_defs": [{"key": "a", "human": "yes"}]}', "step_defs[0].human", id="yes"
        ),
        pytest.param(
            b'{"step_defs": [{"key": "a", "human": "false"}]}', "step_defs[0].human", id="false"
        ),
        pytest.param(b'{"step_defs": [{"key": "a", "human": 1}]}', "step_defs[0].human", id="1"),
        pytest.param(
            b'{"step_defs": [{"key": "a"}, {"key": "b", "colour": 1}]}',
            "step_defs[1].colour",
            id="unknown-nested",
        ),
        pytest.param(
            b'{"step_defs": [{"key": "a", "key": "b"}]}', "step_defs[0].key", id="repeated-nested"
        ),
        pytest.param(
            b'{"name": "n", "stepDefs": [], "step_defs": []}', "step_defs", id="both-names"
        ),
    ],
)
def test_a_malformed_creation_body_is_refused_naming_the_field(body: bytes, field: str) -> None:
    assert refused("CreateProcess", body=body) == field


def test_a_body_on_a_get_is_refused() -> None:
    assert refused("ListProcesses", body=b'{"status": "running"}') == "body"


def test_a_body_the_transcoder_bound_on_a_get_is_refused() -> None:
    """A GET Envoy's Lua filter skipped brings no internal header: a field
    beyond the path's can only have come from a body."""
    transcoded = [(TRANSCODED_HEADER, "/api/v1/processes/p1")]
    method = SERVICE.methods_by_name["GetProcess"]
    plain = pb.GetProcessRequest(process_id="p1")
    assert rest_request(method, plain, transcoded, ENVOY) is plain
    listing = SERVICE.methods_by_name["ListProcesses"]
    with pytest.raises(InvalidArgument) as refusal:
        rest_request(listing, pb.ListProcessesRequest(limit=5), transcoded, ENVOY)
    assert refusal.value.field == "body"
    # A native gRPC call sets what it likes; one from elsewhere cannot pose as REST.
    for metadata, peer in (([], ENVOY), (transcoded, "ipv4:127.0.0.1:5000")):
        request = pb.ListProcessesRequest(limit=5)
        assert rest_request(listing, request, metadata, peer) is request


@pytest.mark.parametrize(
    "metadata",
    [[(QUERY_HEADER, "")], [(JSON_BODY_HEADER, "e30=")], [(INTERNAL_HEADER_PREFIX + "other", "1")]],
    ids=["query", "body", "other"],
)
def test_internal_metadata_from_a_grpc_client_is_refused(metadata: list[tuple[str, str]]) -> None:
    method = SERVICE.methods_by_name["ListProcesses"]
    with pytest.raises(InvalidArgument) as refusal:
        rest_request(method, pb.ListProcessesRequest(), metadata, "ipv4:127.0.0.1:5000")
    assert refusal.value.field == metadata[0][0]


def test_a_body_that_is_not_base64_is_refused() -> None:
    method = SERVICE.methods_by_name["UpdateProcess"]
    with pytest.raises(InvalidArgument) as refusal:
        rest_request(method, pb.UpdateProcessRequest(), [(JSON_BODY_HEADER, "!!")], ENVOY)
    assert refusal.value.field == JSON_BODY_HEADER


# --- bindings ----------------------------------------------------------------------------


def test_bindings_name_their_path_fields_and_body() -> None:
    update = HttpBinding("POST", "/api/v1/processes/{process_id}/update", "*")
    assert (update.path_fields, path_pattern(update.template)) == (
        frozenset({"process_id"}),
        "^/api/v1/processes/[^/]+/update$",
    )
    nested_template = HttpBinding("GET", "/v1/{name=shelves/*/books/**}:get.x", "")
    assert nested_template.path_fields == frozenset({"name"})
    assert path_pattern(nested_template.template) == "^/v1/shelves/[^/]+/books/.+:get%.x$"
    # As Envoy's routes match `:path`, query string included: no wildcard takes a `?`.
    assert template_pattern(nested_template.template, RE2) == (
        r"/v1/shelves/[^/?]+/books/[^?]+:get\.x"
    )


def test_the_lua_route_table_lists_each_path_with_its_methods() -> None:
    assert route_table([SERVICE], {}) == (
        '{{"^/api/v1/processes$", "GET, POST"}, {"^/api/v1/processes/[^/]+$", "GET"},'
        ' {"^/api/v1/processes/[^/]+/update$", "POST"},'
        ' {"^/api/v1/processes/[^/]+/cancel$", "POST"},'
        ' {"^/api/v1/processes/[^/]+/events$", "GET"},'
        ' {"^/api/v1/processes/[^/]+/watch$", "GET"},'
        ' {"^/api/v1/process%-events$", "GET"},'
        ' {"^/api/v1/caller$", "GET"}}'
    )
