"""Strict reading of what a REST client sent: the query string and the JSON body.

Envoy's transcoder is lenient with both: it takes JSON that is not JSON
(trailing commas, raw control characters, single quotes), reads `"yes"` as
true and an object as a one-element list, drops nulls from lists, and lets
the last of repeated keys or parameters win. So Envoy's Lua filter
(server/edge/rest_filter.lua) hands the server the raw query string and body
in internal headers, and the transcoder binds only the path. Here they are read
against the request message's descriptor: anything but exactly one value of
the right type per field is INVALID_ARGUMENT naming the field.
"""

import base64
import binascii
import json
import math
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any, cast

from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from server.domain.errors import InvalidArgument
from server.domain.processes import DATA_TOO_DEEP, MAX_DATA_DEPTH
from server.edge.constants import (
    ANONYMOUS_HEADER,
    INTERNAL_HEADER_PREFIX,
    JSON_BODY_HEADER,
    QUERY_HEADER,
    trusted_peer,
)
from server.transport.http_rules import HttpBinding, http_binding
from server.transport.interceptors import Context
from server.transport.methods import Method

# More levels than any request message needs besides its Structs, which have
# their own limit: a bound on the recursion that reads a body.
_MAX_MESSAGE_DEPTH = 32
# Past about 309 digits an integer is beyond any double; refusing longer ones
# also spares Python's conversion limit (4300 digits).
_MAX_INTEGER_DIGITS = 400

FD = descriptor.FieldDescriptor
_INTEGER_RANGES = {
    **dict.fromkeys((FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32), (-(2**31), 2**31 - 1)),
    **dict.fromkeys((FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64), (-(2**63), 2**63 - 1)),
    **dict.fromkeys((FD.TYPE_UINT32, FD.TYPE_FIXED32), (0, 2**32 - 1)),
    **dict.fromkeys((FD.TYPE_UINT64, FD.TYPE_FIXED64), (0, 2**64 - 1)),
}
# proto3 JSON writes 64-bit integers as strings, so they may come as strings.
_QUOTABLE_INTEGERS = {
    FD.TYPE_INT64,
    FD.TYPE_SINT64,
    FD.TYPE_SFIXED64,
    FD.TYPE_UINT64,
    FD.TYPE_FIXED64,
}
_WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
# Well-known types that proto3 JSON writes as a string (json_format checks the format).
_STRING_TYPES = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_PERCENT_ENCODED = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*")
_SURROGATE = re.compile("[\ud800-\udfff]")
# Set by Envoy's transcoder on each REST call, and dropped by Envoy from what
# a client sends (a caller not through Envoy is not trusted with it).
TRANSCODED_HEADER = "x-envoy-original-path"
_NO_BODY = "a {method} request takes no body; send parameters in the query string"


def read_rest_input(method: Method, request: Any, context: Context) -> Any:
    """The servicers' request reader (server/transport/interceptors.py): a
    REST call's request with its query string and JSON body read into it,
    strictly; a gRPC call's request as it came."""
    return rest_request(
        method.descriptor, request, context.invocation_metadata() or (), context.peer()
    )


def rest_request(
    method: descriptor.MethodDescriptor,
    request: Message,
    metadata: Iterable[tuple[str, str | bytes]],
    peer: str,
) -> Message:
    """The request with a REST call's query parameters and JSON body read into
    it; a native gRPC call's request as it came."""
    # The mark of a call without a token is the rate limit's alone; only a
    # method that takes no token (`no_token`) is called with it.
    internal: dict[str, str | bytes] = {}
    transcoded = False
    for name, value in metadata:
        if name.startswith(INTERNAL_HEADER_PREFIX) and name != ANONYMOUS_HEADER:
            internal[name] = value
        elif name == TRANSCODED_HEADER:
            transcoded = True
    if not internal:
        if transcoded and trusted_peer(peer):
            _refuse_a_bound_body(method, request)
        return request
    for name, value in internal.items():
        if not trusted_peer(peer) or name not in (QUERY_HEADER, JSON_BODY_HEADER):
            raise InvalidArgument(name, "belongs to Envoy's REST gateway; send the message alone")
        if not isinstance(value, str):
            raise InvalidArgument(name, "must be text")
    binding = http_binding(method)
    if binding is None:
        raise InvalidArgument(JSON_BODY_HEADER, f"{method.name} has no REST binding")
    _read_query(binding, request, str(internal.get(QUERY_HEADER, "")))
    if (body := internal.get(JSON_BODY_HEADER)) is not None:
        _read_body(binding, request, str(body))
    return request


def _refuse_a_bound_body(method: descriptor.MethodDescriptor, request: Message) -> None:
    """A REST GET that skipped Envoy's first Lua filter (server/edge/envoy.yaml)
    reaches the transcoder with any body HTTP/2 sent without a length, and
    the transcoder binds it (refusing fields over the path's itself): a
    method whose rule takes no body must carry no other field."""
    binding = http_binding(method)
    if binding is None or binding.body:
        return
    if any(field.name not in binding.path_fields for field, _ in request.ListFields()):
        raise InvalidArgument("body", _NO_BODY.format(method=binding.method))


# --- the query string ------------------------------------------------------------------------


def _read_query(binding: HttpBinding, request: Message, query: str) -> None:
    given: dict[str, str] = {}
    for parameter in query.split("&"):
        if not parameter:
            continue
        raw_name, equals, raw_value = parameter.partition("=")
        if not raw_name:
            raise InvalidArgument("query", f"a parameter has no name: {parameter!r}")
        name = _unescaped(raw_name, raw_name)
        field = _field_named(_descriptor(request), name)
        if field is None:
            raise InvalidArgument(name, "unknown query parameter")
        if binding.body == "*":
            raise InvalidArgument(
                name, "query parameters are not accepted here; send the fields in the JSON body"
            )
        if field.name in binding.path_fields:
            raise InvalidArgument(name, "is part of the path; do not repeat it in the query")
        if field.name == binding.body or field.message_type is not None:
            raise InvalidArgument(name, "cannot be given as a query parameter")
        if not equals:
            raise InvalidArgument(name, "has no value; write name=value")
        if field.name in given and not field.is_repeated:
            also = "" if given[field.name] == name else f" (also as {given[field.name]!r})"
            raise InvalidArgument(name, f"is given more than once{also}")
        given[field.name] = name
        value = _query_value(field, _unescaped(raw_value, name), name)
        if field.is_repeated:
            getattr(request, field.name).append(value)
        else:
            setattr(request, field.name, value)


def _unescaped(text: str, where: str) -> str:
    """Percent-decoded, `+` read as a space (as HTML forms send it), strictly UTF-8."""
    if not _PERCENT_ENCODED.fullmatch(text):
        raise InvalidArgument(where, "malformed percent-encoding: '%' must start '%XX'")
    try:
        return urllib.parse.unquote_to_bytes(text.replace("+", " ")).decode()
    except UnicodeDecodeError:
        raise InvalidArgument(where, "not valid UTF-8 once percent-decoded") from None


def _query_value(field: descriptor.FieldDescriptor, text: str, where: str) -> Any:
    if field.type == FD.TYPE_STRING:
        return text
    if field.type == FD.TYPE_BOOL:
        if text not in ("true", "false"):
            raise InvalidArgument(where, f"must be true or false, got {text!r}")
        return text == "true"
    if field.type in _INTEGER_RANGES:
        if not _WHOLE_NUMBER.fullmatch(text) or len(text) > _MAX_INTEGER_DIGITS:
            raise InvalidArgument(where, f"must be a whole number, got {text!r}")
        return _in_range(field, int(text), where)
    if field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        if not _JSON_NUMBER.fullmatch(text) or not math.isfinite(number := float(text)):
            raise InvalidArgument(where, f"must be a finite number, got {text!r}")
        return number
    if field.type == FD.TYPE_ENUM:
        return _enum_number(field, text, where)
    raise InvalidArgument(where, "cannot be given as a query parameter")


# --- the JSON body ---------------------------------------------------------------------------


def _read_body(binding: HttpBinding, request: Message, encoded: str) -> None:
    if not binding.body:
        raise InvalidArgument("body", _NO_BODY.format(method=binding.method))
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise InvalidArgument(JSON_BODY_HEADER, "must be base64") from None
    body = _parsed(raw)
    if binding.body != "*":
        body = {binding.body: body}
    _check_message(_descriptor(request), body, "", binding.path_fields, depth=0)
    try:
        json_format.ParseDict(body, request)
    except json_format.ParseError as error:  # formats left to it, e.g. a Timestamp's
        raise InvalidArgument("body", str(error)) from None


class _RepeatedKey(dict[str, Any]):
    """A JSON object in which `key` appears more than once (JSON parsers keep either)."""

    def __init__(self, pairs: list[tuple[str, Any]], key: str) -> None:
        super().__init__(pairs)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return _RepeatedKey(pairs, key)
        seen.add(key)
    raise AssertionError("a shorter dict without a repeated key")


def _integer(text: str) -> int | float:
    return int(text) if len(text) <= _MAX_INTEGER_DIGITS else math.inf


# Made once: json.loads would build a decoder for every body.
_JSON = json.JSONDecoder(object_pairs_hook=_object, parse_int=_integer)


def _parsed(raw: bytes) -> Any:
    """The body as JSON (RFC 8259): UTF-8, no byte order mark, nothing after the value."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as error:
        raise InvalidArgument("body", f"not valid UTF-8 (at byte {error.start})") from None
    if text.startswith("\ufeff"):
        raise InvalidArgument("body", "starts with a byte order mark; send UTF-8 without one")
    try:
        # NaN and Infinity, which are not JSON, come out as non-finite numbers
        # and are refused with the field they are in.
        return _JSON.decode(text)
    except json.JSONDecodeError as error:
        raise InvalidArgument(
            "body", f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except RecursionError:
        raise InvalidArgument("body", "nests too deeply to be read") from None


def _check_message(
    message: descriptor.Descriptor, value: Any, path: str, bound: frozenset[str], *, depth: int
) -> None:
    _check_object(value, path or "body", path)
    if depth > _MAX_MESSAGE_DEPTH:
        raise InvalidArgument(path, "nests too deeply")
    named: dict[str, str] = {}
    for key, item in value.items():
        where = _joined(path, key)
        field = _field_named(message, key)
        if field is None:
            raise InvalidArgument(where, "unknown field")
        if field.name in named:
            raise InvalidArgument(where, f"is given twice, also as {named[field.name]!r}")
        named[field.name] = key
        if field.name in bound:
            raise InvalidArgument(where, "is part of the path; leave it out of the body")
        _check_field(field, item, where, depth)


def _check_field(field: descriptor.FieldDescriptor, value: Any, where: str, depth: int) -> None:
    if value is None:
        raise InvalidArgument(where, "must not be null; leave the field out instead")
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        _check_object(value, where, where)
        key_field, value_field = field.message_type.fields
        for key, item in value.items():
            if key_field.type != FD.TYPE_STRING:
                _query_value(key_field, key, _joined(where, key))
            _check_field(value_field, item, _joined(where, key), depth + 1)
    elif field.is_repeated:
        if not isinstance(value, list):
            raise _wrong_type(where, "an array", value)
        for index, item in enumerate(value):
            if item is None:
                raise InvalidArgument(f"{where}[{index}]", "must not be null")
            _check_single(field, item, f"{where}[{index}]", depth + 1)
    else:
        _check_single(field, value, where, depth)


def _check_single(field: descriptor.FieldDescriptor, value: Any, where: str, depth: int) -> None:
    message = field.message_type
    if message is None:
        _check_scalar(field, value, where)
    elif message.full_name == "google.protobuf.Struct":
        _check_object(value, where, where)
        _check_free_json(value, where, where, MAX_DATA_DEPTH)
    elif message.full_name == "google.protobuf.ListValue":
        if not isinstance(value, list):
            raise _wrong_type(where, "an array", value)
        _check_free_json(value, where, where, MAX_DATA_DEPTH)
    elif message.full_name == "google.protobuf.Value":
        _check_free_json(value, where, where, MAX_DATA_DEPTH + 1)
    elif message.full_name in _WRAPPERS:
        _check_scalar(message.fields_by_name["value"], value, where)
    elif message.full_name in _STRING_TYPES:
        if not isinstance(value, str):
            raise _wrong_type(where, "a string", value)
    elif message.full_name.startswith("google.protobuf."):
        raise InvalidArgument(where, f"a {message.full_name} is not accepted in a JSON body")
    else:
        _check_message(message, value, where, frozenset(), depth=depth + 1)


def _check_free_json(value: Any, where: str, field: str, levels: int) -> None:
    """Any JSON inside a Struct: objects without repeated keys, finite
    numbers, Unicode text, at most `levels` levels of objects and arrays."""
    if isinstance(value, dict | list) and levels == 0:
        raise InvalidArgument(field, DATA_TOO_DEEP)
    if isinstance(value, dict):
        _check_object(value, where, where)
        for key, item in value.items():
            _check_text(key, _joined(where, key))
            _check_free_json(item, _joined(where, key), field, levels - 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_free_json(item, f"{where}[{index}]", field, levels - 1)
    elif isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _not_finite(where)


def _check_scalar(field: descriptor.FieldDescriptor, value: Any, where: str) -> None:
    if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        if not isinstance(value, str):
            raise _wrong_type(where, "a string", value)
        _check_text(value, where)
    elif field.type == FD.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _wrong_type(where, "true or false", value)
    elif field.type in _INTEGER_RANGES:
        if isinstance(value, str) and field.type in _QUOTABLE_INTEGERS:
            _query_value(field, value, where)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(where, "a whole number", value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _not_finite(where)
        elif isinstance(value, float) and not value.is_integer():
            raise InvalidArgument(where, f"must be a whole number, got {value!r}")
        else:
            _in_range(field, int(value), where)
    elif field.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(where, "a number", value)
        if isinstance(value, float) and not math.isfinite(value):
            raise _not_finite(where)
    elif field.type == FD.TYPE_ENUM:
        if not isinstance(value, str):
            raise _wrong_type(where, "a string", value)
        _enum_number(field, value, where)
    else:  # pragma: no cover - every scalar type is handled above
        raise AssertionError(field.type)


def _check_object(value: Any, where: str, path: str) -> None:
    """`value` (at `where`, whose keys are named after `path`) is a JSON object."""
    if not isinstance(value, dict):
        raise _wrong_type(where, "a JSON object", value)
    if isinstance(value, _RepeatedKey):
        raise InvalidArgument(_joined(path, value.key), "appears more than once in its object")


def _check_text(text: str, where: str) -> None:
    if _SURROGATE.search(text):
        raise InvalidArgument(where, "not valid Unicode (half a surrogate pair)")


# --- shared -------------------------------------------------------------------------------------


def _descriptor(message: Message) -> descriptor.Descriptor:
    return cast(descriptor.Descriptor, message.DESCRIPTOR)


def _field_named(message: descriptor.Descriptor, name: str) -> descriptor.FieldDescriptor | None:
    """A field by its proto name or its JSON (lowerCamel) name, as proto3 JSON accepts both."""
    return message.fields_by_name.get(name) or message.fields_by_camelcase_name.get(name)


def _in_range(field: descriptor.FieldDescriptor, number: int, where: str) -> int:
    low, high = _INTEGER_RANGES[field.type]
    if not low <= number <= high:
        raise InvalidArgument(where, f"must be between {low} and {high}, got {number}")
    return number


def _enum_number(field: descriptor.FieldDescriptor, name: str, where: str) -> int:
    enum = field.enum_type
    if enum is None or name not in enum.values_by_name:
        known = ", ".join(enum.values_by_name) if enum else ""
        raise InvalidArgument(where, f"unknown value {name!r}; expected one of: {known}")
    return int(enum.values_by_name[name].number)


def _joined(path: str, key: str) -> str:
    """The path of `key` in the object at `path`; an empty key shows as `""`."""
    key = key or '""'
    return f"{path}.{key}" if path else key


def _wrong_type(where: str, expected: str, value: Any) -> InvalidArgument:
    return InvalidArgument(where, f"must be {expected}, got {_json_kind(value)}")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _not_finite(where: str) -> InvalidArgument:
    return InvalidArgument(
        where, "must be a finite number (NaN, Infinity and numbers past 1.8e308 are not JSON)"
    )
