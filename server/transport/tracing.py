"""The RPC span of each call, when tracing is on (server/tracing.py).

The call's trace comes from its `traceparent` metadata (W3C Trace Context):
Envoy sends its own span's, which carries a caller's trace on; a call
without one (HTK_GRPC_PORT) starts a trace. A stream is one span for as
long as it lasts, not one per message.
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server import tracing
from server.transport.interceptors import Context
from server.transport.methods import Method

_PROPAGATOR = TraceContextTextMapPropagator()
# The codes that are the server's fault, which OpenTelemetry's conventions
# for gRPC mark as errors of a server span; the others are the caller's.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class RpcSpans:
    """Each call's span, made by the guards (server/transport/interceptors.py)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    @contextmanager
    def span(self, method: Method, context: Context) -> Iterator[None]:
        carrier = {
            name: value
            for name, value in context.invocation_metadata() or ()
            if name in _PROPAGATOR.fields and isinstance(value, str)
        }
        service, _, name = method.path.strip("/").partition("/")
        with self._tracer.start_as_current_span(
            method.path.strip("/"),
            context=_PROPAGATOR.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            # The call's status says what went wrong, below.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            code = grpc.StatusCode.OK
            try:
                if not span.is_recording():
                    yield
                    return
                with tracing.tracing_call(self._tracer):
                    yield
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except BaseException:
                code = grpc.StatusCode.UNKNOWN
                raise
            finally:
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in _SERVER_FAULTS:
                    span.set_status(trace.StatusCode.ERROR, code.name)
