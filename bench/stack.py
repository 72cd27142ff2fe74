"""Running `htk run` for the benchmark, and watching its processes."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from server.domain.processes import utc_now
from server.domain.tokens import Scope
from server.service.tokens import TokenService
from server.stack import wait_until_serving
from server.storage.database import Database

HTK = str(Path(sys.executable).parent / "htk")
START_TIMEOUT_SECONDS = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_token(database_url: str, org_id: str) -> str:
    """A write token of `org_id`, made the way `htk token create` makes one."""

    async def create() -> str:
        database = Database(database_url, pool_size=1)
        try:
            _, token = await TokenService(database, utc_now).create(
                org_id, "bench", frozenset({Scope.PROCESSES_WRITE})
            )
            return token
        finally:
            await database.close()

    return asyncio.run(create())


@dataclass
class Stack:
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def envoy_target(self) -> str:
        return f"127.0.0.1:{self.env['HTK_HTTP_PORT']}"

    @property
    def server_target(self) -> str:
        """The gRPC workers directly (they share the port), bypassing Envoy."""
        return f"127.0.0.1:{self.env['HTK_GRPC_PORT']}"

    @property
    def http_url(self) -> str:
        return f"http://{self.envoy_target}"

    def servers(self) -> list[psutil.Process]:
        """The gRPC server processes (`server.cli serve`) under `htk run`."""
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            if "server.cli" in command and "serve" in command:
                found.append(child)
        return found

    def envoys(self) -> list[psutil.Process]:
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if "envoy" in child.name():
                    found.append(child)
            except psutil.Error:
                continue
        return found


@contextmanager
def running_stack(
    data_dir: Path, database_url: str, workers: int, extra_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """`htk run` against the bench database, on free ports; SIGTERM afterwards."""
    env = {
        **os.environ,
        "HTK_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "HTK_HTTP_PORT": str(free_port()),
        "HTK_GRPC_PORT": str(free_port()),
        "HTK_ENVOY_ADMIN_PORT": str(free_port()),
        "HTK_WORKERS": str(workers),
        # The default per-token limit (100/s) would measure Envoy's limiter.
        "HTK_RATE_LIMIT_PER_SECOND": "0",
        "HTK_LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    log_path = data_dir / f"stack-{workers}w.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([HTK, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    stack = Stack(env=env, process=process, log_path=log_path)
    try:
        if not wait_until_serving(
            stack.envoy_target, START_TIMEOUT_SECONDS, lambda: process.poll() is None
        ):
            raise RuntimeError(f"the stack did not start; see {log_path}")
        # Envoy's health check reaching one worker does not mean all are up.
        deadline = time.monotonic() + 30
        while len(stack.servers()) < workers and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        yield stack
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@dataclass
class Usage:
    """Peak RSS and CPU time of a group of processes over one phase."""

    peak_rss: dict[int, int] = field(default_factory=dict)  # pid -> bytes
    cpu_seconds: float = 0.0

    @property
    def max_rss_mb(self) -> float:
        return max(self.peak_rss.values(), default=0) / 1e6

    @property
    def total_rss_mb(self) -> float:
        return sum(self.peak_rss.values()) / 1e6


class Sampler:
    """Samples RSS (and CPU time at both ends) of the servers and Envoy in a thread."""

    INTERVAL = 0.2

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.servers = Usage()
        self.envoy = Usage()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_last: dict[int, float] = {}
        self._first: float | None = None
        self._last: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds between the first and the last sample: what the CPU time spans."""
        if self._first is None or self._last is None:
            return 0.0
        return self._last - self._first

    def cores(self, usage: Usage) -> float:
        """Cores busy on average (1.0 = one core) while sampling."""
        return usage.cpu_seconds / self.elapsed if self.elapsed else 0.0

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    def _sample(self) -> None:
        now = time.monotonic()
        self._first = now if self._first is None else self._first
        self._last = now
        for usage, processes in (
            (self.servers, self.stack.servers()),
            (self.envoy, self.stack.envoys()),
        ):
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                cpu = times.user + times.system
                usage.peak_rss[process.pid] = max(usage.peak_rss.get(process.pid, 0), rss)
                previous = self._cpu_last.get(process.pid, cpu)
                self._cpu_last[process.pid] = cpu
                usage.cpu_seconds += cpu - previous
