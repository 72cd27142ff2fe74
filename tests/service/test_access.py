"""Every RPC of every htk service is guarded: enumerated from the descriptor set
Envoy serves (built from protos/), so a new RPC is covered without editing this."""

from collections.abc import Callable

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from htk.processes.v1 import access_pb2
from server.settings import CHECKOUT
from tests.support.orgs import Org

DESCRIPTOR_SET = CHECKOUT / "envoy" / "process_service.binpb"


def _api_methods() -> list[tuple[str, descriptor_pb2.MethodDescriptorProto]]:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file
    return [
        (f"/{file.package}.{service.name}/{method.name}", method)
        for file in files
        if file.package.startswith("htk.")
        for service in file.service
        for method in service.method
    ]


def _access(method: descriptor_pb2.MethodDescriptorProto) -> access_pb2.MethodAccess:
    return method.options.Extensions[access_pb2.access]


METHODS = _api_methods()
WRITES = [
    (path, method)
    for path, method in METHODS
    if method.options.idempotency_level != descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
]
# Those that declare they take no htk token, and all the others.
OPEN = [(path, method) for path, method in METHODS if _access(method).no_token]
GUARDED = [(path, method) for path, method in METHODS if not _access(method).no_token]
SCOPED = [(path, method) for path, method in METHODS if _access(method).any_of_scopes]
ANY_TOKEN = [(path, method) for path, method in METHODS if _access(method).any_token]


def test_the_descriptor_set_has_reads_and_writes() -> None:
    assert len(WRITES) >= 2
    assert len(METHODS) > len(WRITES)


async def _call(
    channel: grpc.aio.Channel,
    path: str,
    method: descriptor_pb2.MethodDescriptorProto,
    token: str | None,
) -> grpc.StatusCode:
    """Calls `path` with an empty request (valid bytes for any message) and
    returns its status; a stream is read until its first message or error."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    identity: Callable[[bytes], bytes] = lambda raw: raw  # noqa: E731
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, identity, identity)(
                b"", metadata=metadata, timeout=5
            )
            async for _ in stream:
                break
            stream.cancel()
        else:
            await channel.unary_unary(path, identity, identity)(b"", metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("path", "method"), GUARDED, ids=[path for path, _ in GUARDED])
async def test_every_method_refuses_a_call_without_a_token(
    channel: grpc.aio.Channel, path: str, method: descriptor_pb2.MethodDescriptorProto
) -> None:
    assert await _call(channel, path, method, None) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(("path", "method"), OPEN, ids=[path for path, _ in OPEN])
async def test_a_method_declared_open_takes_no_token(
    channel: grpc.aio.Channel, path: str, method: descriptor_pb2.MethodDescriptorProto
) -> None:
    # Its request carries the proof, if any: an empty one may be invalid, but
    # is not refused for want of a token.
    status = await _call(channel, path, method, None)
    assert status not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def test_every_write_needs_a_scope_or_no_token() -> None:
    assert {path for path, _ in WRITES} <= {path for path, _ in SCOPED + OPEN}


@pytest.mark.parametrize(("path", "method"), SCOPED, ids=[path for path, _ in SCOPED])
async def test_every_scoped_method_refuses_a_read_only_token(
    channel: grpc.aio.Channel, org: Org, path: str, method: descriptor_pb2.MethodDescriptorProto
) -> None:
    assert await _call(channel, path, method, org.reader) == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(("path", "method"), ANY_TOKEN, ids=[path for path, _ in ANY_TOKEN])
async def test_every_read_for_any_token_lets_a_read_only_token_through(
    channel: grpc.aio.Channel, org: Org, path: str, method: descriptor_pb2.MethodDescriptorProto
) -> None:
    # An empty request may well be invalid or name nothing; it is not refused for access.
    status = await _call(channel, path, method, org.reader)
    assert status not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


async def test_a_method_outside_the_api_is_unimplemented(
    channel: grpc.aio.Channel, org: Org
) -> None:
    _, method = METHODS[0]
    status = await _call(
        channel, "/htk.processes.v1.ProcessService/Nonexistent", method, org.writer
    )
    assert status == grpc.StatusCode.UNIMPLEMENTED


async def test_health_needs_no_token(channel: grpc.aio.Channel) -> None:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
