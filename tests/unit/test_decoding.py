"""Request payloads that are no valid message (server/transport/decoding.py):
INVALID_ARGUMENT naming the field, for every kind of RPC, never UNKNOWN."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from htk.processes.v1 import process_service_pb2 as pb
from server.domain.processes import DATA_TOO_DEEP
from server.transport.decoding import DecodingInterceptor, Undecodable, diagnosis, tolerant

UPDATE = pb.UpdateProcessRequest.DESCRIPTOR


def data_nested(levels: int) -> bytes:
    request = pb.UpdateProcessRequest(type="step_completed")
    value: Any = 1
    for _ in range(levels - 1):
        value = {"a": value}
    request.data.update({"a": value})
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("message", "raw", "field", "problem"),
    [
        (pb.GetProcessRequest.DESCRIPTOR, b"\n\x01\xff", "process_id", "not valid UTF-8"),
        (pb.ListProcessesRequest.DESCRIPTOR, b"\x1a\x03\xed\xa0\x80", "search", "not valid UTF-8"),
        (
            pb.CreateProcessRequest.DESCRIPTOR,
            b"\x1a\x03\n\x01a\x1a\x03\n\x01\xfe",
            "step_defs[1].key",
            "not valid UTF-8",
        ),
        (UPDATE, b"\x2a\x07\x0a\x05\x0a\x01\xff\x12\x00", "data", "not valid UTF-8"),
        (UPDATE, data_nested(40), "data", DATA_TOO_DEEP),
        (UPDATE, b"\x12\x05ab", "type", "truncated"),
        (UPDATE, b"\xff\xff", "request", "truncated"),
        (UPDATE, b"\x0f", "process_id", "malformed: wire type 7 is not used here"),
    ],
)
def test_the_diagnosis_names_the_field(
    message: descriptor.Descriptor, raw: bytes, field: str, problem: str
) -> None:
    error = diagnosis(message, raw)
    assert (error.field, error.problem) == (field, problem)


def test_a_tolerant_deserializer_returns_what_it_cannot_decode_instead_of_raising() -> None:
    decode = tolerant(pb.GetProcessRequest.FromString, pb.GetProcessRequest.DESCRIPTOR)
    assert decode(b"\n\x01a") == pb.GetProcessRequest(process_id="a")
    undecodable = decode(b"\n\x01\xff")
    assert isinstance(undecodable, Undecodable)
    assert undecodable.error.field == "process_id"


def test_without_a_descriptor_the_whole_request_is_at_fault() -> None:
    assert str(diagnosis(None, b"\xff")) == "request: not a valid message"


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    """A server with the interceptor and services of every RPC kind: health's
    Check (unary), Watch (a stream written with context.write) and
    reflection (a bidirectional stream of yields)."""
    server = grpc.aio.server(interceptors=[DecodingInterceptor()])
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection([reflection.SERVICE_NAME], server)
    address = f"unix-abstract:htk-test-{uuid.uuid4().hex}"
    server.add_insecure_port(address)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    async with grpc.aio.insecure_channel(address) as channel:
        yield channel
    await server.stop(0)


CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECT = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def raw(channel: grpc.aio.Channel, kind: str, method: str) -> Any:
    """A callable of `method` that sends and receives bytes as they are."""
    return getattr(channel, kind)(method, None, None)


async def test_well_formed_calls_of_every_kind_still_work(channel: grpc.aio.Channel) -> None:
    check = await raw(channel, "unary_unary", CHECK)(b"")
    assert health_pb2.HealthCheckResponse.FromString(check).status == 1
    watch = raw(channel, "unary_stream", WATCH)(b"")
    assert health_pb2.HealthCheckResponse.FromString(await watch.read()).status == 1
    watch.cancel()
    listing = b"\x3a\x00"  # list_services: ""
    replies = [reply async for reply in raw(channel, "stream_stream", REFLECT)(iter([listing]))]
    assert len(replies) == 1


async def test_undecodable_calls_of_every_kind_are_invalid_arguments(
    channel: grpc.aio.Channel,
) -> None:
    not_utf8 = b"\n\x01\xff"  # HealthCheckRequest.service
    calls = [
        raw(channel, "unary_unary", CHECK)(not_utf8),
        raw(channel, "unary_stream", WATCH)(not_utf8),
        raw(channel, "stream_stream", REFLECT)(iter([b"\x3a\x00", b"\x0a\x01\xff"])),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            if isinstance(call, grpc.aio.UnaryUnaryCall):
                await call
            else:
                async for _ in call:
                    pass
        assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = refusal.value.details() or ""
        assert "not valid UTF-8" in details
        assert "class" not in details and "Error" not in details
