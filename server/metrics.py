"""Prometheus metrics: what the workers record, and the endpoint `htk run` serves.

Every worker records into memory-mapped files of its own in one folder per
`htk run` (prometheus-client's multiprocess mode, switched on by
PROMETHEUS_MULTIPROC_DIR in the worker's environment, which the supervisor
sets). The supervisor reads them all at each scrape, so one scrape shows the
instance: counters and histograms summed over every worker that ever ran
(those of a worker that died stay counted), gauges over the live ones only
(`mark_worker_dead` drops a dead worker's). Envoy's own statistics are
appended to the same page, so that its admin port can stay private.

Without that variable (tests in process, `htk serve` alone) the values live
in the process's memory, where nothing reads them.
"""

import logging
import os
import shutil
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

log = logging.getLogger(__name__)

# In multiprocess mode prometheus-client asks for the process id at every value
# it writes, to notice a fork (a child must write files of its own): a system
# call each, and a call of the API writes six values. This id is the same
# answer without one, renewed in a forked child before any of its code runs.
# Set before any metric exists, so that every value's class is this one.
_process_id = os.getpid()


def _forked() -> None:
    global _process_id
    _process_id = os.getpid()


def _current_process_id() -> int:
    return _process_id


os.register_at_fork(after_in_child=_forked)
if values.ValueClass._multiprocess:
    values.ValueClass = values.MultiProcessValue(_current_process_id)  # type: ignore[no-untyped-call]

# The variable prometheus-client reads when it is imported.
DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
PATH = "/metrics"
# A scrape waits at most this long for Envoy's statistics; without them it
# still shows the workers'.
ENVOY_STATS_TIMEOUT_SECONDS = 2.0

# Most calls take a few milliseconds; the default buckets start at 5 ms.
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

RPC_REQUESTS = Counter(
    "htk_rpc_requests",
    "Calls of the API's methods that ended, by gRPC status code",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "htk_rpc_duration_seconds",
    "Time from a call's arrival at a worker to its end (a stream's whole life)",
    ["service", "method"],
    buckets=_LATENCY_BUCKETS,
)
RPC_IN_FLIGHT = Gauge(
    "htk_rpc_in_flight",
    "Calls being served now, streams included",
    ["service", "method"],
    multiprocess_mode="livesum",
)
WATCH_STREAMS = Gauge("htk_watch_streams", "Watch streams open now", multiprocess_mode="livesum")
DB_POOL_CONNECTIONS = Gauge(
    "htk_db_pool_connections",
    "The workers' pooled database connections: in_use by a call, or idle",
    ["state"],
    multiprocess_mode="livesum",
)
DB_POOL_MAX_CONNECTIONS = Gauge(
    "htk_db_pool_max_connections",
    "How many pooled connections the workers may open (HTK_DB_POOL_SIZE each)",
    multiprocess_mode="livesum",
)
DB_QUERY_DURATION = Histogram(
    "htk_db_query_duration_seconds",
    "Time a worker waits for each statement, or each pipelined round trip of statements",
    buckets=_LATENCY_BUCKETS,
)
TOKEN_CACHE_REQUESTS = Counter(
    "htk_token_cache_requests",
    "Tokens authenticated: hit (a remembered caller), refused (a token remembered as"
    " unknown), miss (looked up in the database)",
    ["result"],
)
DEADLINE_SCAN_LAG = Gauge(
    "htk_deadline_scan_lag_seconds",
    "How long ago the deadline a step may still be running past passed: the time since"
    " the last scan that timed out every due step (the best worker's)",
    multiprocess_mode="livemin",
)
NOTIFICATION_LISTENER_UP = Gauge(
    "htk_notification_listener_up",
    "1 when every worker's LISTEN connection is up (watch streams and the token cache"
    " need it), else 0",
    multiprocess_mode="livemin",
)
RETENTION_PROCESSES = Counter(
    "htk_retention_processes",
    "Finished processes retention deleted (HTK_RETENTION_DAYS): `archived` ones were"
    " written to HTK_ARCHIVE_DIR first; counted when their delete committed",
    ["archived"],
)
RETENTION_BATCH_DURATION = Histogram(
    "htk_retention_batch_duration_seconds",
    "How long each retention batch's delete held its locks (the processes' rows and the"
    " counters' rows its triggers update), to its commit",
    buckets=_LATENCY_BUCKETS,
)

TOKEN_CACHE_HIT = TOKEN_CACHE_REQUESTS.labels("hit")
TOKEN_CACHE_REFUSED = TOKEN_CACHE_REQUESTS.labels("refused")
TOKEN_CACHE_MISS = TOKEN_CACHE_REQUESTS.labels("miss")
DB_POOL_IN_USE = DB_POOL_CONNECTIONS.labels("in_use")
DB_POOL_IDLE = DB_POOL_CONNECTIONS.labels("idle")


class MethodMetrics:
    """One method's series, looked up once when its handler is wrapped, so
    that a call only adds to them."""

    def __init__(self, path: str) -> None:
        service, method = path.strip("/").split("/")
        self._labels = (service, method)
        self._in_flight = RPC_IN_FLIGHT.labels(service, method)
        self._duration = RPC_DURATION.labels(service, method)
        self._by_code: dict[str, Any] = {}

    def started(self) -> None:
        self._in_flight.inc()

    def ended(self, code: str, seconds: float) -> None:
        requests = self._by_code.get(code)
        if requests is None:
            requests = self._by_code[code] = RPC_REQUESTS.labels(*self._labels, code)
        requests.inc()
        self._duration.observe(seconds)
        self._in_flight.dec()


def prepare_directory(directory: Path) -> None:
    """An empty folder for the workers' files: a previous run's would add its
    counts to this one's."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)


def mark_worker_dead(directory: Path, pid: int) -> None:
    """Drops a dead worker's gauges (its counters stay counted)."""
    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


class Endpoint:
    """`/metrics` on `address`:`port`: the workers' metrics from `directory`,
    then Envoy's statistics from its admin interface at `envoy_admin_url`."""

    def __init__(self, address: str, port: int, directory: Path, envoy_admin_url: str) -> None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        envoy_stats = f"{envoy_admin_url}/stats/prometheus"

        def page() -> bytes:
            return generate_latest(registry) + _envoy_stats(envoy_stats)

        self._server = ThreadingHTTPServer((address, port), _handler(page))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics endpoint", daemon=True
        )

    def __enter__(self) -> "Endpoint":
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()


def _envoy_stats(url: str) -> bytes:
    """Envoy's statistics in the same text format, or nothing while it is down
    (its own `envoy_server_live` series then goes missing)."""
    try:
        with urllib.request.urlopen(url, timeout=ENVOY_STATS_TIMEOUT_SECONDS) as response:  # noqa: S310 # Envoy's admin URL, built by the supervisor
            body: bytes = response.read()
    except OSError as error:
        log.debug("Envoy's statistics are unavailable: %s", error)
        return b""
    return body


def _handler(page: Callable[[], bytes]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != PATH:
                self._answer(404, "text/plain; charset=utf-8", f"not found: try {PATH}\n".encode())
                return
            self._answer(200, CONTENT_TYPE_PLAIN_0_0_4, page())

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes come every few seconds: no line each."""

    return Handler
