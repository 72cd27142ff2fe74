"""Tracing's settings (OpenTelemetry's standard variables), Envoy's tracing
config rendered from them, and the SQL statement spans of a traced call."""

import subprocess
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server import tracing
from server.edge.envoy import TRACING_CLUSTER, envoy_command, render_envoy_config
from server.settings import Settings, SettingsError

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}


def test_tracing_is_off_unless_an_endpoint_is_set() -> None:
    settings = Settings.from_env({})
    assert not settings.tracing
    assert tracing.start(settings) is None
    assert (settings.otel_service_name, settings.otel_traces_sampler) == (
        "htk",
        "parentbased_always_on",
    )
    assert Settings.from_env(ENDPOINT).tracing


@pytest.mark.parametrize(
    ("endpoint", "normalized"),
    [
        ("http://127.0.0.1:4317", "http://127.0.0.1:4317"),
        # OTLP/gRPC's own port when none is named; a trailing slash is no path.
        ("http://collector", "http://collector:4317"),
        ("http://[::1]:14317/", "http://[::1]:14317"),
    ],
)
def test_the_endpoint_is_read_with_its_port(endpoint: str, normalized: str) -> None:
    settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert settings.otel_exporter_otlp_endpoint == normalized


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # Envoy's exporter would need TLS settings htk does not take: refused, not half served.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4317"}, "https is not supported"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "must be http://host:port"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317/v1/traces"}, "must be http://"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:99999"}, "bad port"),
        # The caller's decision always wins at Envoy: only the parent-based samplers say so.
        (
            {"OTEL_TRACES_SAMPLER": "always_on"},
            "OTEL_TRACES_SAMPLER must be one of parentbased_always_on, parentbased_always_off,"
            " parentbased_traceidratio, got 'always_on'",
        ),
        (
            {"OTEL_TRACES_SAMPLER_ARG": "1.5"},
            "OTEL_TRACES_SAMPLER_ARG must be a number, at least 0.0 and at most 1.0, got '1.5'",
        ),
    ],
)
def test_a_bad_tracing_setting_is_refused_naming_its_variable(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=next(iter(env))) as raised:
        Settings.from_env(env)
    assert named in str(raised.value)


@pytest.mark.parametrize(
    ("sampler", "argument", "percent"),
    [
        ("parentbased_always_on", "0.5", 100.0),
        ("parentbased_always_off", "0.5", 0.0),
        ("parentbased_traceidratio", "0.25", 25.0),
    ],
)
def test_the_sampler_says_which_requests_envoy_traces(
    sampler: str, argument: str, percent: float
) -> None:
    settings = Settings.from_env(
        ENDPOINT | {"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": argument}
    )
    assert settings.trace_sampling_percent == percent


def _envoy_config(tmp_path: Path, env: dict[str, str]) -> Path:
    return render_envoy_config(Settings.from_env({"HTK_DATA_DIR": str(tmp_path)} | env), 0)


def test_envoy_traces_nothing_when_tracing_is_off(tmp_path: Path) -> None:
    config = _envoy_config(tmp_path, {}).read_text()
    assert "envoy.tracers.opentelemetry" not in config
    assert TRACING_CLUSTER not in config


def test_envoy_takes_its_tracing_config(tmp_path: Path) -> None:
    config = _envoy_config(
        tmp_path,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317",
            "OTEL_SERVICE_NAME": "htk-eu",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
    )
    text = config.read_text()
    assert '"service_name": "htk-eu"' in text
    assert '"random_sampling": {"value": 10.0}' in text
    validated = subprocess.run(
        [*envoy_command(config), "--mode", "validate"], capture_output=True, text=True, timeout=60
    )
    assert validated.returncode == 0, validated.stderr + validated.stdout


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exported: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return provider.get_tracer("test")


def test_statements_outside_a_traced_call_make_no_span(tracer: trace.Tracer) -> None:
    # The upkeep jobs' statements, and every statement when tracing is off.
    assert tracing.statement_span("SELECT 1") is None
    with tracer.start_as_current_span("unrelated"):
        assert tracing.statement_span("SELECT 1") is None


def test_a_statement_of_a_traced_call_is_a_child_of_the_calls_span(
    tracer: trace.Tracer, exported: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("call") as call, tracing.tracing_call(tracer):
        tracing.end_statement_span(tracing.statement_span("  select * from processes"))
        tracing.end_statement_span(
            tracing.statement_span("UPDATE processes SET name = %(name)s"), ValueError("refused")
        )
    select, update, _ = exported.get_finished_spans()
    assert (select.name, update.name) == ("SELECT", "UPDATE")
    for span in (select, update):
        assert span.parent is not None
        assert span.parent.span_id == call.get_span_context().span_id
        assert span.kind is trace.SpanKind.CLIENT
        assert span.attributes is not None
        assert span.attributes["db.system.name"] == "postgresql"
    assert update.attributes is not None
    # The statement as written: its parameters' values never appear.
    assert update.attributes["db.query.text"] == "UPDATE processes SET name = %(name)s"
    assert update.status.status_code is trace.StatusCode.ERROR
    assert select.status.status_code is trace.StatusCode.UNSET
