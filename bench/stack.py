"""How much memory and CPU the stack's processes, and the load's clients, use
while the benchmark measures."""

import os
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.stack import Stack


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


def postmaster(database_dir: Path) -> psutil.Process | None:
    """The embedded PostgreSQL's postmaster, from its pid file; None when it
    is not running there (an external DATABASE_URL)."""
    try:
        pid = int((database_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])
        return psutil.Process(pid)
    except (OSError, ValueError, psutil.Error):
        return None


class Sampler:
    """Samples RSS (and CPU time at both ends) of the servers, Envoy and
    PostgreSQL's processes (when the database is the embedded one) in a thread."""

    INTERVAL = 0.2

    def __init__(self, stack: Stack, database: psutil.Process | None = None) -> None:
        self.stack = stack
        self.servers = Usage()
        self.envoy = Usage()
        self.postgres = Usage()
        self._database = database
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
            (self.servers, list(self.stack.workers().values())),
            (self.envoy, self.stack.envoys()),
            (self.postgres, self._postgres_processes()),
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

    @property
    def samples_postgres(self) -> bool:
        return self._database is not None

    def _postgres_processes(self) -> list[psutil.Process]:
        """The postmaster and its children: the backends serving the calls,
        and the writers and autovacuum working for them."""
        if self._database is None:
            return []
        try:
            return [self._database, *self._database.children()]
        except psutil.Error:
            return []


@dataclass(frozen=True)
class ClientRun:
    """A load client's exit, output and CPU time (user + system)."""

    returncode: int
    stdout: str
    stderr: str
    cpu_seconds: float


def run_client(command: list[str]) -> ClientRun:
    """Runs a load client (wrk, pgbench) to its end; its CPU time comes from
    wait4's rusage, so it is the client's own."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)  # noqa: S603
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        return ClientRun(
            returncode=process.returncode,
            stdout=stdout.read().decode(),
            stderr=stderr.read().decode(),
            cpu_seconds=usage.ru_utime + usage.ru_stime,
        )
