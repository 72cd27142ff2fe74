"""An OTLP/gRPC trace receiver of our own, on a free loopback port: what an
OpenTelemetry collector would receive from Envoy and the workers."""

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    span: trace_pb2.Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, object]:
        return {
            attribute.key: getattr(attribute.value, attribute.value.WhichOneof("value") or "")
            for attribute in self.span.attributes
        }


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self.endpoint = ""

    def Export(  # noqa: N802 # the generated servicer's name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    attribute.value.string_value
                    for attribute in resource_spans.resource.attributes
                    if attribute.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                received += [ReceivedSpan(service, span) for span in scope_spans.spans]
        with self._lock:
            self._spans += received
        return trace_service_pb2.ExportTraceServiceResponse()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(
        self, found: Callable[[list[ReceivedSpan]], bool], timeout: float = 60.0
    ) -> list[ReceivedSpan]:
        """The spans received, once `found(spans)` holds; fails after `timeout`
        seconds with what did arrive. (Envoy and the workers send their spans
        in batches, every few seconds.)"""
        deadline = time.monotonic() + timeout
        while not found(spans := self.spans):
            if time.monotonic() > deadline:
                raise AssertionError(f"the expected spans did not arrive; got {spans}")
            time.sleep(0.1)
        return spans


@dataclass
class Sink:
    """What an `otlp_sink` took: export requests and their bytes."""

    endpoint: str = ""
    exports: int = 0
    bytes: int = 0


@contextmanager
def otlp_sink() -> Iterator[Sink]:
    """An OTLP/gRPC trace endpoint that takes every export and reads none
    (no decoding): for the benchmark, where a receiver's own work would
    take the cores from what is measured."""
    sink = Sink()
    lock = threading.Lock()
    empty = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()

    def export(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            sink.exports += 1
            sink.bytes += len(request)
        return empty

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sink.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield sink
    finally:
        server.stop(grace=None)


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.stop(grace=None)
