"""The real stack for tests and the benchmark: `htk run` (PostgreSQL, the gRPC
workers, Envoy) in a data folder of its own, on free ports, and tokens made
in its database (tests/support/tokens.py)."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import psutil

from server.stack import wait_until_serving
from tests.support.orgs import Org
from tests.support.tokens import create_token, stack_database_url

HTK = str(Path(sys.executable).parent / "htk")
# Generous: a loaded machine, or the benchmark's database of a million rows.
START_TIMEOUT_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def htk(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the htk CLI with `env`, which names the database (DATABASE_URL or HTK_DATA_DIR)."""
    return subprocess.run([HTK, *args], env=env, capture_output=True, text=True, timeout=60)


@dataclass
class Stack:
    """A running `htk run`, the environment it was started with, and its processes."""

    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def http_url(self) -> str:
        # With TLS, the name the test certificate is for (tests/support/tls.py).
        if self.tls_ca:
            return f"https://localhost:{self.env['HTK_HTTP_PORT']}"
        return f"http://127.0.0.1:{self.env['HTK_HTTP_PORT']}"

    @property
    def tls_ca(self) -> Path | None:
        """The certificate to trust when the stack serves TLS (self-signed in tests)."""
        cert_file = self.env.get("HTK_TLS_CERT_FILE")
        return Path(cert_file) if cert_file else None

    def grpc_credentials(self) -> grpc.ChannelCredentials | None:
        """What a gRPC client of `envoy_target` needs: None without TLS."""
        if self.tls_ca is None:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.tls_ca.read_bytes())

    @property
    def envoy_target(self) -> str:
        """Native gRPC through Envoy, the address internal services use."""
        return f"127.0.0.1:{self.env['HTK_HTTP_PORT']}"

    @property
    def server_target(self) -> str:
        """The gRPC workers themselves (they share the port), behind Envoy."""
        return f"127.0.0.1:{self.env['HTK_GRPC_PORT']}"

    @property
    def envoy_admin_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HTK_ENVOY_ADMIN_PORT']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['HTK_METRICS_PORT']}/metrics"

    @property
    def database_url(self) -> str:
        """The stack's database, for tests that inspect what was stored."""
        return stack_database_url(self.env)

    @property
    def log_path(self) -> Path:
        return self.data_dir / "stack.log"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def htk(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Runs the htk CLI against this stack's database."""
        return htk(self.env, *args)

    def token(self, org: str, scopes: str = "processes:write") -> str:
        return create_token(self.env, org, scopes)

    def new_org(self, prefix: str = "org") -> Org:
        """An organization no other test uses, with a writer and a reader token."""
        org_id = f"{prefix}-{uuid.uuid4().hex[:12]}"
        return Org(org_id=org_id, writer=self.token(org_id), reader=self.token(org_id, scopes=""))

    def workers(self) -> dict[int, psutil.Process]:
        """The live gRPC workers, by index (from their --listen address)."""
        found = {}
        for child in psutil.Process(self.process.pid).children():
            try:
                command = child.cmdline()
                if "serve" in command and child.status() != psutil.STATUS_ZOMBIE:
                    found[int(command[-1].rsplit("-", 1)[1])] = child
            except psutil.Error:
                continue
        return found

    def envoys(self) -> list[psutil.Process]:
        """Envoy, and its launcher."""
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if "envoy" in child.name():
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def worker_health(self) -> dict[int, str]:
        """How Envoy sees each worker, by index: `healthy`, or the reasons it is not."""
        clusters = httpx.get(f"{self.envoy_admin_url}/clusters", timeout=10).text
        health = {}
        for line in clusters.splitlines():
            host, marker, flags = line.partition("::health_flags::")
            if marker and "-worker-" in host:
                health[int(host.rsplit("-", 1)[1])] = flags
        return health

    def requests_in_flight(self) -> dict[int, int]:
        """How many requests (streams included) Envoy has open to each worker,
        by index: where Envoy placed the calls and streams is its choice, so a
        test that needs a worker to hold some asks rather than assumes."""
        return self._per_worker("rq_active")

    def requests_served(self) -> dict[int, int]:
        """How many requests Envoy has sent each worker, by index."""
        return self._per_worker("rq_total")

    def _per_worker(self, statistic: str) -> dict[int, int]:
        """One of Envoy's host statistics for each worker, by index, summed
        over every cluster the worker is in."""
        clusters = httpx.get(f"{self.envoy_admin_url}/clusters", timeout=10).text
        totals: dict[int, int] = {}
        for line in clusters.splitlines():
            host, marker, count = line.partition(f"::{statistic}::")
            if marker and "-worker-" in host:
                index = int(host.rsplit("-", 1)[1])
                totals[index] = totals.get(index, 0) + int(count)
        return totals

    def serves_on_every_worker(self) -> bool:
        """Whether Envoy routes to every worker: each passed its health check."""
        try:
            health = self.worker_health()
        except httpx.HTTPError:  # Envoy's admin port is not up yet
            return False
        return bool(health) and all(flags == "healthy" for flags in health.values())


@contextmanager
def running_stack(
    data_dir: Path, database_url: str | None = None, env: Mapping[str, str] | None = None
) -> Iterator[Stack]:
    """Starts `htk run` on `data_dir`, yields it once Envoy routes to every
    worker, and stops it with SIGTERM afterwards.

    Without `database_url` the stack runs its embedded PostgreSQL. `env`
    overrides settings; rate limiting is off unless the caller turns it on.
    """
    env = {
        **os.environ,
        "HTK_DATA_DIR": str(data_dir),
        "HTK_HTTP_PORT": str(free_port()),
        "HTK_GRPC_PORT": str(free_port()),
        "HTK_ENVOY_ADMIN_PORT": str(free_port()),
        "HTK_METRICS_PORT": str(free_port()),
        "HTK_RATE_LIMIT_PER_SECOND": "0",
        **(env or {}),
    }
    env.pop("DATABASE_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "stack.log").open("ab") as log:
        process = subprocess.Popen([HTK, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    stack = Stack(data_dir=data_dir, env=env, process=process)
    try:
        _wait_until_started(stack)
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _wait_until_started(stack: Stack) -> None:
    """Waits until Envoy serves and routes to every worker; fails with the stack's log."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS

    def running() -> bool:
        return stack.process.poll() is None

    try:
        started = wait_until_serving(
            stack.envoy_target, START_TIMEOUT_SECONDS, running, stack.grpc_credentials()
        )
    except TimeoutError:
        started = False
    # Serving through Envoy means one worker is up; tests and measurements
    # want them all in rotation.
    while started and not stack.serves_on_every_worker():
        started = running() and time.monotonic() < deadline
        time.sleep(0.1)
    if not started:
        raise RuntimeError(f"the stack did not start; its log ({stack.log_path}):\n{stack.log}")
