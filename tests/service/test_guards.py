"""The guard interceptor on every kind of RPC, shown on probe methods of each
kind: authentication, scopes, and errors mapped to statuses, before and after
a stream's first message."""

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from htk.processes.v1 import process_service_pb2
from server.domain.errors import FailedPrecondition
from server.domain.tokens import Scope
from server.edge.constants import INTERNAL_HEADER_PREFIX
from server.service.tokens import TokenService
from server.transport import interceptors
from server.transport.interceptors import current_caller
from server.transport.methods import Method
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org

# Any descriptor will do: the probes ignore their input.
_DESCRIPTOR = process_service_pb2.DESCRIPTOR.services_by_name["ProcessService"].methods[0]


def _identity(raw: bytes) -> bytes:
    return raw


async def _unary(request: bytes, context: Any) -> bytes:
    return current_caller().org_id.encode()


# Streaming methods write their responses (the guards await them).
async def _stream(request: bytes, context: Any) -> None:
    await context.write(current_caller().org_id.encode())
    if request == b"fail":
        raise FailedPrecondition("the probe failed mid-stream")


async def _client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b"".join([request async for request in requests])


async def _bidi_stream(requests: AsyncIterator[bytes], context: Any) -> None:
    async for request in requests:
        await context.write(request)


@pytest.fixture(scope="module")
async def probe(server: InProcessServer) -> AsyncIterator[grpc.aio.Channel]:
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream, _identity, _identity),
        "ClientStream": grpc.stream_unary_rpc_method_handler(_client_stream, _identity, _identity),
        "BidiStream": grpc.stream_stream_rpc_method_handler(_bidi_stream, _identity, _identity),
        "Unlisted": grpc.unary_unary_rpc_method_handler(_unary, _identity, _identity),
    }
    methods = {
        f"/test.Probe/{name}": Method(
            f"/test.Probe/{name}", _DESCRIPTOR, frozenset({Scope.PROCESSES_WRITE}), False
        )
        for name in handlers
        if name != "Unlisted"
    }
    authentication = interceptors.Authentication(TokenService(server.database, server.clock))
    probe_server = grpc.aio.server(
        interceptors=[interceptors.GuardInterceptor(methods, authentication)]
    )
    probe_server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Probe", handlers)]
    )
    port = probe_server.add_insecure_port("127.0.0.1:0")
    await probe_server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await probe_server.stop(None)


async def _requests(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def _call(
    channel: grpc.aio.Channel, kind: str, token: str | None, sent: tuple[bytes, ...] = (b"a", b"b")
) -> list[bytes]:
    """Calls the probe of `kind`; a streaming call sends `sent`."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    path = f"/test.Probe/{kind}"
    if kind in ("Unary", "Unlisted"):
        return [await channel.unary_unary(path, _identity, _identity)(b"", metadata=metadata)]
    if kind == "Stream":
        return [
            item
            async for item in channel.unary_stream(path, _identity, _identity)(
                b"", metadata=metadata
            )
        ]
    if kind == "ClientStream":
        uploading = channel.stream_unary(path, _identity, _identity)(
            _requests(*sent), metadata=metadata
        )
        return [await uploading]
    call = channel.stream_stream(path, _identity, _identity)(_requests(*sent), metadata=metadata)
    return [item async for item in call]


KINDS = ["Unary", "Stream", "ClientStream", "BidiStream"]


# The refused calls send no messages: a client still writing when the server has
# refused the call sees grpc's own INTERNAL ("Failed execute_batch") instead.
@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_needs_a_token(probe: grpc.aio.Channel, kind: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(probe, kind, None, sent=())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("kind", KINDS)
async def test_every_kind_checks_scopes(probe: grpc.aio.Channel, org: Org, kind: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(probe, kind, org.reader, sent=())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("kind", "answer"),
    [("Unary", None), ("Stream", None), ("ClientStream", [b"ab"]), ("BidiStream", [b"a", b"b"])],
)
async def test_every_kind_serves_an_allowed_caller(
    probe: grpc.aio.Channel, org: Org, kind: str, answer: list[bytes] | None
) -> None:
    assert await _call(probe, kind, org.writer) == (answer or [org.org_id.encode()])


async def test_a_method_missing_from_the_table_is_refused(
    probe: grpc.aio.Channel, org: Org
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _call(probe, "Unlisted", org.writer)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_an_error_mid_stream_ends_it_with_the_mapped_status(
    probe: grpc.aio.Channel, org: Org
) -> None:
    call = probe.unary_stream("/test.Probe/Stream", _identity, _identity)(
        b"fail", metadata=org.metadata()
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for item in call:
            received.append(item)
    assert received == [org.org_id.encode()]
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.details() == "the probe failed mid-stream"


async def test_a_call_from_outside_envoy_gets_no_internal_header(
    probe: grpc.aio.Channel, org: Org
) -> None:
    """The token's name is for Envoy's access log: a direct gRPC caller's
    response headers and trailers go without it."""
    call = probe.unary_unary("/test.Probe/Unary", _identity, _identity)(
        b"", metadata=org.metadata()
    )
    assert await call == org.org_id.encode()
    metadata = (*await call.initial_metadata(), *await call.trailing_metadata())
    assert not [name for name, _ in metadata if name.startswith(INTERNAL_HEADER_PREFIX)]
