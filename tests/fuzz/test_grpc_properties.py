"""Hypothesis over the native gRPC API, through Envoy and straight to the server.

Arbitrary request messages (any field values a client could encode) must get
an answer the RPC's comment allows, never UNKNOWN or INTERNAL; and any sequence
of well-formed updates keeps the process readable and consistent, a rejected
update changing nothing.
"""

import json
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, json_format, message_factory, struct_pb2
from google.protobuf.message import Message
from hypothesis import event, given
from hypothesis import strategies as st

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.edge.constants import INTERNAL_HEADER_PREFIX, JSON_BODY_HEADER, QUERY_HEADER
from tests.e2e.test_hostile_input import PYTHON_NAMES
from tests.fuzz.conftest import EXAMPLES, fuzz_settings
from tests.support.orgs import Org
from tests.support.stack import Stack

Code = grpc.StatusCode
FD = descriptor.FieldDescriptor
STEPS = ("build", "test", "deploy")
# What each RPC may answer a writer, per the comments in the proto. ALREADY_EXISTS
# is an Idempotency-Key reused for another request.
ALLOWED = {
    "ListProcesses": {Code.OK, Code.INVALID_ARGUMENT},
    "GetProcess": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND},
    "CreateProcess": {Code.OK, Code.INVALID_ARGUMENT, Code.ALREADY_EXISTS},
    "UpdateProcess": {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.FAILED_PRECONDITION,
        Code.NOT_FOUND,
        Code.ALREADY_EXISTS,
    },
    "ListProcessEvents": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND},
    "WatchProcess": {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND},
    "WatchProcesses": {Code.OK, Code.INVALID_ARGUMENT},
    "GetCaller": {Code.OK, Code.INVALID_ARGUMENT},
    "CancelProcess": {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.FAILED_PRECONDITION,
        Code.NOT_FOUND,
        Code.ALREADY_EXISTS,
    },
}
SERVICE = pb.DESCRIPTOR.services_by_name["ProcessService"]
METHODS = list(SERVICE.methods)

# --- strategies ----------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def structs() -> st.SearchStrategy[struct_pb2.Struct]:
    """Free-form JSON objects, NaN and infinities included (the API refuses them)."""

    def build(value: dict[str, Any]) -> struct_pb2.Struct:
        struct = struct_pb2.Struct()
        struct.update(value)
        return struct

    return st.dictionaries(st.text(max_size=8), json_values, max_size=4).map(build)


def texts() -> st.SearchStrategy[str]:
    """Strings a client might send: short or very long, NUL and any Unicode included;
    now and then a step key or a uuid-like value, so some requests get further."""
    return st.one_of(
        st.text(max_size=30),
        st.sampled_from(["", *STEPS, "running", "newest", "oldest", "progress", "completed"]),
        st.text(st.characters(codec="utf-8"), min_size=190, max_size=260),
        st.text(max_size=10).map(lambda s: s * 1200),  # past the 10,000-character limits
    )


def values_of(field: FD) -> st.SearchStrategy[Any]:
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Struct":
            return structs()
        return messages(field.message_type)
    if field.type == FD.TYPE_STRING:
        return texts()
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type == FD.TYPE_INT32:
        return st.one_of(
            st.integers(-(2**31), 2**31 - 1),
            st.integers(-2, 205),  # around the real bounds
        )
    raise NotImplementedError(f"no strategy for {field.full_name}")


def messages(message: descriptor.Descriptor) -> st.SearchStrategy[Message]:
    """Any message of the type: each field unset or set to any value of its type."""
    message_class: Any = message_factory.GetMessageClass(message)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in message.fields:
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            keys, items = (values_of(entry.fields_by_name[name]) for name in ("key", "value"))
            fields[field.name] = st.dictionaries(keys, items, max_size=3)
            continue
        values = values_of(field)
        if field.is_repeated:
            values = st.lists(values, max_size=5 if field.message_type else 3)
        fields[field.name] = values
    return st.fixed_dictionaries({}, optional=fields).map(lambda kwargs: message_class(**kwargs))


# Any value gRPC lets a client send (printable ASCII), valid as a key or not;
# two fixed keys make reuse with another request likely.
idempotency_keys = (
    st.none()
    | st.sampled_from(["k1", "k2"])
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=5)
)

# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["envoy", "server"])
def channel(request: pytest.FixtureRequest, stack: Stack) -> Iterator[grpc.Channel]:
    """A channel through Envoy, as internal clients call, and one to the server itself."""
    target = stack.envoy_target if request.param == "envoy" else stack.server_target
    with grpc.insecure_channel(target) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.ProcessServiceStub:
    return pb_grpc.ProcessServiceStub(channel)


def call(
    stub: pb_grpc.ProcessServiceStub, name: str, request: Message, org: Org, key: str | None = None
) -> tuple[Code, Any]:
    """Calls the RPC; returns its status code and the response (None on error).
    A stream's response is its first message (None if it ends without one):
    every stream sends one at once, and most would never end."""
    metadata = list(org.metadata())
    if key is not None:
        metadata.append(("idempotency-key", key))
    try:
        if not SERVICE.methods_by_name[name].server_streaming:
            return Code.OK, getattr(stub, name)(request, metadata=metadata, timeout=30)
        stream = getattr(stub, name)(request, metadata=metadata, timeout=30)
        first = next(stream, None)
        stream.cancel()
        return Code.OK, first
    except grpc.RpcError as error:
        code: Code = error.code()
        assert code in ALLOWED[name], (name, request, code, error.details())
        return code, None


def create(stub: pb_grpc.ProcessServiceStub, org: Org) -> pb.Process:
    request = pb.CreateProcessRequest(
        namespace="fuzz",
        name="property",
        step_defs=[pb.StepDef(key=key, label=key.title()) for key in STEPS],
    )
    code, process = call(stub, "CreateProcess", request, org)
    assert code == Code.OK
    assert isinstance(process, pb.Process)
    return process


# --- arbitrary requests ----------------------------------------------------------


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_arbitrary_requests_get_documented_answers(
    method: descriptor.MethodDescriptor, stub: pb_grpc.ProcessServiceStub, tenant: Org
) -> None:
    # A real process to aim some requests at, so they reach past NOT_FOUND.
    existing = create(stub, tenant).process_id

    @fuzz_settings()
    @given(request=messages(method.input_type), real_id=st.booleans(), key=idempotency_keys)
    def check(request: Any, real_id: bool, key: str | None) -> None:
        if real_id and "process_id" in method.input_type.fields_by_name:
            request.process_id = existing
        code, response = call(stub, method.name, request, tenant, key)
        if code != Code.OK or response is None:
            return
        assert isinstance(response, Message)
        actual: Any = response
        # Whatever was accepted prints as JSON, as Envoy will print it.
        json.dumps(json_format.MessageToDict(response, preserving_proto_field_name=True))
        if method.name in {"GetProcess", "UpdateProcess"}:
            assert actual.process_id == request.process_id

    check()


# --- well-formed update sequences ------------------------------------------------

details = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=40)


@st.composite
def updates(draw: st.DrawFn) -> pb.UpdateProcessRequest:
    """One well-formed update: a known type with exactly the fields it takes."""
    kind = draw(
        st.sampled_from(
            ["step_started", "step_completed", "step_failed", "progress", "completed", "failed"]
        )
    )
    fields: dict[str, Any] = {"type": kind}
    if kind.startswith("step_") or kind == "progress":
        fields["step"] = draw(st.sampled_from(STEPS))
    if kind in {"step_started", "step_completed"}:
        fields["detail"] = draw(st.none() | details)
    if kind == "step_completed":
        fields["data"] = draw(st.none() | st.dictionaries(details, st.integers(), max_size=3))
    if kind in {"step_failed", "failed"}:
        fields["error"] = draw(details.filter(str.strip))
    if kind == "progress":
        fields["message"], fields["percent"] = draw(
            st.tuples(
                st.none() | details.filter(str.strip), st.none() | st.integers(0, 100)
            ).filter(lambda pair: pair != (None, None))
        )
    if kind == "completed":
        fields["summary"] = draw(st.none() | details)
    request = pb.UpdateProcessRequest(
        **{k: v for k, v in fields.items() if k != "data" and v is not None}
    )
    if fields.get("data") is not None:
        request.data.update(fields["data"])
    return request


STEP_STATUS_AFTER = {
    "step_started": "running",
    "step_completed": "completed",
    "step_failed": "failed",
}


def test_well_formed_updates_keep_the_process_readable(
    stub: pb_grpc.ProcessServiceStub, tenant: Org
) -> None:
    @fuzz_settings(max_examples=max(10, EXAMPLES // 4))
    @given(sequence=st.lists(updates(), min_size=1, max_size=8))
    def check(sequence: list[pb.UpdateProcessRequest]) -> None:
        process = create(stub, tenant)
        for update in sequence:
            update.process_id = process.process_id
            code, _ = call(stub, "UpdateProcess", update, tenant)
            # Well-formed: only the state may refuse it.
            assert code in {Code.OK, Code.FAILED_PRECONDITION}, (update, code)
            get_code, after = call(
                stub, "GetProcess", pb.GetProcessRequest(process_id=process.process_id), tenant
            )
            assert get_code == Code.OK
            assert [entry.step for entry in after.timeline] == list(STEPS)
            if code == Code.FAILED_PRECONDITION:
                assert after == process, f"a rejected {update.type} changed the process"
            elif update.type in STEP_STATUS_AFTER:
                entry = after.timeline[STEPS.index(update.step)]
                assert entry.status == STEP_STATUS_AFTER[update.type], (update, entry)
            elif update.type == "progress":
                entry = after.timeline[STEPS.index(update.step)]
                assert entry.status == "running"
                if update.HasField("percent"):
                    assert entry.progress_percent == update.percent
            else:
                assert after.status == update.type
                assert after.HasField("finished_at")
                # Every run ends cleanly: no step of a finished process is still to come.
                assert not {entry.status for entry in after.timeline} & {"pending", "running"}
            process = after

    check()


# --- payloads that are no valid message ------------------------------------------------------


def _varint(value: int) -> bytes:
    encoded = b""
    while value > 0x7F:
        encoded += bytes([value & 0x7F | 0x80])
        value >>= 7
    return encoded + bytes([value])


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_fields(message: descriptor.Descriptor, path: str = "") -> list[tuple[str, list[int]]]:
    """Every string field, as its JSON-style path and the field numbers leading to it."""
    found = []
    for field in message.fields:
        where = f"{path}.{field.name}" if path else field.name
        if field.type == FD.TYPE_STRING:
            found.append((where, [field.number]))
        elif field.message_type is not None and not field.message_type.full_name.startswith(
            "google.protobuf."
        ):
            index = "[0]" if field.is_repeated else ""
            found += [
                (name, [field.number, *numbers])
                for name, numbers in _string_fields(field.message_type, where + index)
            ]
    return found


@st.composite
def undecodable_payloads(
    draw: st.DrawFn, message: descriptor.Descriptor
) -> tuple[bytes, str | None, str]:
    """A payload protobuf refuses as `message` (or, for random bytes, might
    not), the field the refusal must name if known, and how it was made."""
    how = draw(st.sampled_from(["string-not-utf8", "deep-struct", "mangled", "random"]))
    if how == "string-not-utf8" and _string_fields(message):
        field, numbers = draw(st.sampled_from(_string_fields(message)))
        payload = draw(st.binary(max_size=4)) + b"\xff" + draw(st.binary(max_size=4))
        for number in reversed(numbers):
            payload = _length_delimited(number, payload)
        return payload, field, how
    if how == "deep-struct" and "data" in message.fields_by_name:
        levels = draw(st.sampled_from([21, 33, 34, 35, 49, 50, 51, 99, 100, 101, 300]))
        value: Any = 1
        for level in range(levels):
            value = {"a": value} if level % 2 or draw(st.booleans()) else [value]
        struct = struct_pb2.Struct()
        struct.update({"a": value})
        return _length_delimited(5, struct.SerializeToString()), "data", how
    if how == "mangled":
        valid = draw(messages(message)).SerializeToString()
        cut = draw(st.integers(0, max(0, len(valid) - 1)))
        mangled = valid[:cut] + draw(st.binary(min_size=1, max_size=6))
        return mangled, None, how
    return draw(st.binary(max_size=64)), None, "random"


@pytest.fixture(scope="module")
def update_base(stub: pb_grpc.ProcessServiceStub, tenant: Org) -> bytes:
    """The start of an UpdateProcess payload aimed at a real process and step,
    so that a well-formed request gets as far as its `data` (protobuf keeps
    the last of repeated fields)."""
    existing = create(stub, tenant).process_id.encode()
    return b"".join(
        _length_delimited(number, value)
        for number, value in ((1, existing), (2, b"step_completed"), (3, STEPS[0].encode()))
    )


def _first_answer(
    channel: grpc.Channel, method: descriptor.MethodDescriptor, payload: bytes, tenant: Org
) -> None:
    """Calls `method` with raw bytes; returns once it answers (a stream: its
    first message, as a live stream may never end) or raises its error."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    if not method.server_streaming:
        channel.unary_unary(path, None, None)(payload, metadata=tenant.metadata(), timeout=30)
        return
    stream: Any = channel.unary_stream(path, None, None)(
        payload, metadata=tenant.metadata(), timeout=30
    )
    try:
        next(stream, None)
    finally:
        stream.cancel()


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@fuzz_settings()
@given(data=st.data())
def test_payloads_that_are_no_valid_message(
    method: descriptor.MethodDescriptor,
    channel: grpc.Channel,
    update_base: bytes,
    tenant: Org,
    data: st.DataObject,
) -> None:
    payload, field, how = data.draw(undecodable_payloads(method.input_type))
    event(how)
    base = update_base if method.name == "UpdateProcess" else b""
    try:
        _first_answer(channel, method, base + payload, tenant)
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        assert code in ALLOWED[method.name], (code, details)
        assert not PYTHON_NAMES.search(details), details
        if field is not None:
            assert code == Code.INVALID_ARGUMENT, (code, details)
            # A repeated field's item is named with its index (`label[0]`).
            named = re.match(rf"{re.escape(field)}(\[\d+\])?: ", details)
            assert named, (field, details)
        return
    # Decoded after all (random bytes can be a valid message): served as one.
    assert field is None, payload


# --- Envoy's internal metadata -------------------------------------------------------------

internal_metadata = st.lists(
    st.tuples(
        st.sampled_from([QUERY_HEADER, JSON_BODY_HEADER])
        | st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10).map(
            INTERNAL_HEADER_PREFIX.__add__
        ),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda pair: pair[0],
)


@pytest.fixture(scope="module")
def through_envoy_and_direct(stack: Stack) -> Iterator[tuple[pb_grpc.ProcessServiceStub, ...]]:
    with (
        grpc.insecure_channel(stack.envoy_target) as envoy,
        grpc.insecure_channel(stack.server_target) as server,
    ):
        yield pb_grpc.ProcessServiceStub(envoy), pb_grpc.ProcessServiceStub(server)


@fuzz_settings()
@given(spoofed=internal_metadata, limit=st.integers(1, 200))
def test_spoofed_internal_metadata(
    through_envoy_and_direct: tuple[pb_grpc.ProcessServiceStub, ...],
    tenant: Org,
    spoofed: list[tuple[str, str]],
    limit: int,
) -> None:
    """Through Envoy a client's internal metadata is dropped; on the direct
    port it is refused, naming it."""
    through_envoy, direct = through_envoy_and_direct
    event(
        "Envoy's own names"
        if {QUERY_HEADER, JSON_BODY_HEADER} & dict(spoofed).keys()
        else "other names"
    )
    request = pb.ListProcessesRequest(limit=limit)
    metadata = (*tenant.metadata(), *spoofed)
    assert through_envoy.ListProcesses(request, metadata=metadata).limit == limit
    with pytest.raises(grpc.RpcError) as refusal:
        direct.ListProcesses(request, metadata=metadata)
    assert refusal.value.code() == Code.INVALID_ARGUMENT
    assert (refusal.value.details() or "").split(":")[0] in dict(spoofed)
