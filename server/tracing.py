"""Traces: OpenTelemetry spans of a worker's RPCs and of the SQL statements
they run, exported over OTLP/gRPC beside Envoy's spans of the same requests.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then no span is made and the
SDK is never imported. When on, each traced call's RPC span (made in
server/transport/tracing.py, the child of Envoy's span) makes its tracer
current for the call, and the statements the call runs become its
children. Statements outside a traced call (the upkeep jobs' every second)
make none, so they never fill the traces with roots of their own.
"""

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace

from server.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

# The tracer of the traced call being served; None outside one.
_call_tracer: contextvars.ContextVar[trace.Tracer | None] = contextvars.ContextVar(
    "call_tracer", default=None
)

# OpenTelemetry's semantic conventions for database client spans.
DB_SYSTEM = "postgresql"
# How long a stopping worker waits for its last spans to go out: a
# collector that is down would otherwise hold it for the exporter's retries
# (10 s), past the time `htk run` gives a worker to stop.
FLUSH_ON_STOP_SECONDS = 2.0


def start(settings: Settings) -> "TracerProvider | None":
    """The worker's tracer provider, exporting to OTEL_EXPORTER_OTLP_ENDPOINT
    in batches; None when tracing is off. `stop` sends its last spans."""
    if settings.otel_exporter_otlp_endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    # Envoy starts every trace and passes its decision in `traceparent`; the
    # root sampler only decides for calls that bypass Envoy (HTK_GRPC_PORT).
    root = TraceIdRatioBased(settings.trace_sampling_percent / 100)
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: settings.otel_service_name}),
        sampler=ParentBased(root),
        # `stop` does, within a bound; at exit it would wait on the exporter.
        shutdown_on_exit=False,
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint, insecure=True)
        )
    )
    return provider


def stop(provider: "TracerProvider") -> None:
    """Sends the spans still batched, waiting at most FLUSH_ON_STOP_SECONDS;
    the SDK's threads are daemons, so what is left then dies with the process."""
    flushing = threading.Thread(target=provider.shutdown, name="flush spans", daemon=True)
    flushing.start()
    flushing.join(FLUSH_ON_STOP_SECONDS)


@contextmanager
def tracing_call(tracer: trace.Tracer) -> Iterator[None]:
    """Makes the statements run inside spans of `tracer`."""
    token = _call_tracer.set(tracer)
    try:
        yield
    finally:
        _call_tracer.reset(token)


def statement_span(statement: str) -> trace.Span | None:
    """A started span for one SQL statement of the traced call being served
    (the current span's child), or None outside one; the caller ends it."""
    tracer = _call_tracer.get()
    if tracer is None:
        return None
    operation = statement.split(None, 1)[0].upper() if statement.strip() else "SQL"
    return tracer.start_span(
        operation,
        kind=trace.SpanKind.CLIENT,
        attributes={"db.system.name": DB_SYSTEM, "db.query.text": statement},
    )


def end_statement_span(span: trace.Span | None, error: BaseException | None = None) -> None:
    if span is None:
        return
    if error is not None:
        span.record_exception(error)
        span.set_status(trace.StatusCode.ERROR, type(error).__name__)
    span.end()
