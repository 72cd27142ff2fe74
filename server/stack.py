"""`htk run`: PostgreSQL, the gRPC server workers and Envoy, in the foreground,
run by a `Supervisor`. What Envoy is told to do lives in server/edge/."""

import ctypes
import importlib.metadata
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server import metrics
from server.edge.constants import readiness_socket, worker_socket
from server.edge.envoy import envoy_command, render_envoy_config
from server.readiness import Checker, ReadinessServer
from server.settings import Settings
from server.storage.database import redacted_url
from server.storage.embedded import database_url
from server.storage.migrate import upgrade_to_latest

log = logging.getLogger(__name__)

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


def describe_database(settings: Settings, url: str) -> str:
    """The database, as the startup line names it: never its password."""
    if settings.database_url is None:
        return f"embedded in {settings.data_dir / 'postgres'}"
    return redacted_url(url)


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
