"""The supervisor's readiness check, which Envoy routes /readyz to.

The supervisor is the one process that knows every part of the instance:
it asks the database for its schema revision, and each worker, over its own
socket, whether it serves and whether its notification listener is up. It
serves the verdict as JSON over HTTP/1.1 on an abstract Unix socket, which
only this machine reaches (Envoy), so no port is needed.

Checks run one at a time, and a request shares the first check that
started after it arrived: however many probes come in, the database sees
at most one check's connection at a time, and no answer is older than its
request.
"""

import http.server
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.domain.readiness import Check, Readiness, schema_check
from server.storage.migrate import current_revision, head_revision
from server.transport.health import NOTIFICATIONS_SERVICE

log = logging.getLogger(__name__)

# Each part gets this long to answer; Envoy's route allows 10 s in all.
CHECK_TIMEOUT_SECONDS = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING


class Checker:
    """Checks the database at `database_url` and the workers at `workers`
    (gRPC targets, in order: worker 0 first)."""

    def __init__(self, database_url: str, workers: Sequence[str]) -> None:
        self._database_url = database_url
        self._workers = workers
        self._head = head_revision()
        self._channels: dict[str, grpc.Channel] = {}
        self._lock = threading.Lock()
        self._latest: tuple[float, Readiness] | None = None

    def readiness(self) -> Readiness:
        """A check that started no earlier than this call."""
        asked = time.monotonic()
        with self._lock:
            if self._latest is None or self._latest[0] < asked:
                self._latest = (time.monotonic(), self._check())
            return self._latest[1]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def _check(self) -> Readiness:
        # The workers answer while the database is asked.
        asked = [
            (f"worker {index}", self._ask(target, ""), self._ask(target, NOTIFICATIONS_SERVICE))
            for index, target in enumerate(self._workers)
        ]
        checks = self._check_database()
        for name, serving, listening in asked:
            checks.append(Check(name, _worker_problem(serving, listening)))
        return Readiness(checks)

    def _check_database(self) -> list[Check]:
        try:
            current = current_revision(self._database_url, CHECK_TIMEOUT_SECONDS)
        except (psycopg.Error, OSError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            return [Check("database", f"not answering ({reason})")]
        return [Check("database"), schema_check(current, self._head)]

    def _ask(self, target: str, service: str) -> "Future[Any]":
        if target not in self._channels:
            self._channels[target] = grpc.insecure_channel(target)
        health = health_pb2_grpc.HealthStub(self._channels[target])
        # Waiting for the connection (within the timeout) rather than failing
        # at once: a channel's first call, or one after a worker restarted,
        # would otherwise read a connection still being made as a dead worker.
        future: Future[Any] = health.Check.future(
            health_pb2.HealthCheckRequest(service=service),
            timeout=CHECK_TIMEOUT_SECONDS,
            wait_for_ready=True,
        )
        return future


def _worker_problem(serving: "Future[Any]", listening: "Future[Any]") -> str | None:
    try:
        if serving.result().status != SERVING:
            return "not serving (shutting down)"
        if listening.result().status != SERVING:
            return "its notification listener is not connected to the database"
    except grpc.RpcError as error:
        return f"not answering ({error.code().name})"
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "ReadinessServer"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        readiness = self.server.checker.readiness()
        body = json.dumps(readiness.report()).encode()
        self.send_response(200 if readiness.ready else 503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        readiness = self.server.checker.readiness()
        self.send_response(200 if readiness.ready else 503)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("readiness: " + format, *args)


class ReadinessServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves `checker`'s verdict on the abstract Unix socket `name`, in a thread."""

    daemon_threads = True

    def __init__(self, name: str, checker: Checker) -> None:
        self.checker = checker
        super().__init__("\0" + name, _Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="readiness", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.checker.close()

    def get_request(self) -> tuple[socket.socket, Any]:
        # A Unix socket's peer has no address; http.server wants a pair.
        request, _ = self.socket.accept()
        return request, ("envoy", 0)
