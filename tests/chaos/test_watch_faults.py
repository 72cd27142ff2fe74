"""Watchers through faults: PostgreSQL restarted under 100 watchers, and a
worker killed -9 or stopped under 20, while updates flow.

Each watcher follows one process over REST (Server-Sent Events through
Envoy) from `after_seq=0`, and whenever its stream ends before the process
does, however it ends, watches again with the `seq` of the last event it
got. Once the faults are over, every process is completed; then every
watcher must hold exactly the process's logged events, each once, in order.
"""

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk_client import ApiError, HtkClient, Unreachable
from tests.chaos.helpers import (
    CLIENT_TIMEOUT_SECONDS,
    STEP,
    create_running_processes,
    kill_worker,
    load,
    progress_by,
    restarted_worker,
    start_postgres,
    stop_postgres,
    wait_until,
)
from tests.support.sse import amessages, kind
from tests.support.stack import Stack, running_stack

FAULT_ENV = {"HTK_WORKERS": "2", "HTK_HEARTBEAT_SECONDS": "1"}
ANSWERS = 40
DOWN_SECONDS = 2.0
RECOVERY_TIMEOUT_SECONDS = 60.0
# Between a watcher's attempts: a refused or failed one returns at once.
RETRY_SECONDS = 0.2


@dataclass
class Watcher:
    """One client following one process to its end, resuming after every break."""

    process_id: str
    seqs: list[int] = field(default_factory=list)
    # How each of its streams ended: finished, error <code> (in-band), ended
    # (without a word), cut (the connection broke once the stream had begun),
    # refused <HTTP status>, unanswered (the connection broke before any
    # answer: no stream began).
    endings: list[str] = field(default_factory=list)
    # What broke each attempt that ended cut or unanswered, its after_seq, and when.
    breaks: list[str] = field(default_factory=list)
    following: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, client: httpx.AsyncClient, token: str) -> None:
        while not self.endings or self.endings[-1] != "finished":
            self.endings.append(await self._watch_once(client, token))
            if self.endings[-1] != "finished":
                await asyncio.sleep(RETRY_SECONDS)

    async def _watch_once(self, client: httpx.AsyncClient, token: str) -> str:
        after_seq = self.seqs[-1] if self.seqs else 0
        answered = False
        try:
            async with client.stream(
                "GET",
                f"/api/v1/processes/{self.process_id}/watch",
                params={"after_seq": after_seq},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                answered = True
                if response.status_code != 200:
                    return f"refused {response.status_code}"
                async for message in amessages(response):
                    self.following.set()
                    if kind(message) == "error":
                        return f"error {message['error']['code']}"
                    if kind(message) == "event":
                        self.seqs.append(message["event"]["seq"])
                        if message["event"]["type"] == "completed":
                            return "finished"
                return "ended"
        except httpx.HTTPError as error:
            ending = "cut" if answered else "unanswered"
            self.breaks.append(
                f"{ending}: {error!r}, after_seq={after_seq}, at {time.monotonic():.2f}"
            )
            return ending


def finish(stack: Stack, token: str, process_ids: list[str]) -> None:
    """Completes every process, retrying each until it is accepted."""
    with httpx.Client(base_url=stack.http_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        for process_id in process_ids:

            def completed(process_id: str = process_id) -> bool:
                answer = http.post(
                    f"/api/v1/processes/{process_id}/update",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"type": "completed"},
                )
                return answer.status_code == 200

            wait_until(completed, RECOVERY_TIMEOUT_SECONDS, f"{process_id} to complete")


async def watch_through(
    stack: Stack, token: str, process_ids: list[str], per_process: int, fault: Callable[[], None]
) -> list[Watcher]:
    """Watchers of every process while progress updates flow and `fault`
    strikes; the processes are completed once updates succeed again."""
    watchers = [Watcher(process_id) for process_id in process_ids for _ in range(per_process)]
    limits = httpx.Limits(max_connections=len(watchers) + 10)
    async with httpx.AsyncClient(
        base_url=stack.http_url, timeout=CLIENT_TIMEOUT_SECONDS, limits=limits
    ) as client:
        tasks = [asyncio.create_task(watcher.run(client, token)) for watcher in watchers]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(watcher.following.wait() for watcher in watchers)),
                RECOVERY_TIMEOUT_SECONDS,
            )
            await asyncio.to_thread(_fault_under_load, stack, token, process_ids, fault)
            await asyncio.wait_for(asyncio.gather(*tasks), RECOVERY_TIMEOUT_SECONDS)
        finally:
            for task in tasks:
                task.cancel()
    return watchers


def _fault_under_load(
    stack: Stack, token: str, process_ids: list[str], fault: Callable[[], None]
) -> None:
    with load(stack, progress_by(token), process_ids, clients=2) as running:
        running.wait_for(ANSWERS, RECOVERY_TIMEOUT_SECONDS)
        fault()
        running.wait_for(ANSWERS, RECOVERY_TIMEOUT_SECONDS, since=time.monotonic())
    finish(stack, token, process_ids)


def missed_or_repeated(stack: Stack, watchers: list[Watcher]) -> list[str]:
    """Watchers whose events differ from their process's log (1..n, each once)."""
    with psycopg.connect(stack.database_url) as connection:
        logged: dict[str, int] = dict(
            connection.execute(
                "SELECT process_id::text, max(seq) FROM process_events"
                " WHERE process_id = ANY(%s::uuid[]) GROUP BY process_id",
                (list({watcher.process_id for watcher in watchers}),),
            ).fetchall()
        )
    return [
        f"{watcher.process_id}: got {len(watcher.seqs)} events,"
        f" logged {logged[watcher.process_id]}, endings {watcher.endings}"
        for watcher in watchers
        if watcher.seqs != list(range(1, logged[watcher.process_id] + 1))
    ]


def test_postgres_restarted_under_100_watchers_loses_and_repeats_no_event(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path, env=FAULT_ENV) as stack:
        token = stack.token("chaos")
        process_ids = create_running_processes(stack, token, 10)

        def restart_postgres() -> None:
            socket_dir = stop_postgres(stack)
            time.sleep(DOWN_SECONDS)
            start_postgres(stack, socket_dir)

        watchers = asyncio.run(watch_through(stack, token, process_ids, 10, restart_postgres))
        problems = missed_or_repeated(stack, watchers)

    resumed = sum(len(watcher.endings) > 1 for watcher in watchers)
    print(f"\n{resumed} of {len(watchers)} watchers resumed at least once")
    assert len(watchers) == 100
    assert not problems, "\n".join(problems[:20])


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("watch-faults"), env=FAULT_ENV) as stack:
        yield stack


@pytest.mark.parametrize(
    ("signum", "ending"),
    [(signal.SIGKILL, "cut"), (signal.SIGTERM, "error 14")],
    ids=["kill -9", "SIGTERM"],
)
def test_a_workers_watchers_resume_on_the_other_and_lose_nothing(
    two_workers: Stack, signum: signal.Signals, ending: str
) -> None:
    """Killed, a worker's streams break; stopped, each ends with an in-band
    UNAVAILABLE. Either way their watchers resume with after_seq."""
    stack = two_workers
    # The previous case restarted a worker: the streams resume on whichever
    # Envoy routes to, and may need either.
    wait_until(stack.serves_on_every_worker, RECOVERY_TIMEOUT_SECONDS, "every worker in rotation")
    token = stack.token("chaos")
    process_ids = create_running_processes(stack, token, 4)
    stopped: list[tuple[int, psutil.Process, float]] = []

    def stop_worker() -> None:
        # The worker that holds the most streams: Envoy places them as it
        # likes (all on one worker, at times), so it is asked, not assumed.
        # Its 20 streams outnumber the load's two calls in flight, so the
        # busiest worker holds some.
        in_flight = stack.requests_in_flight()
        index = max(in_flight, key=in_flight.__getitem__)
        assert in_flight[index] > 2, in_flight
        victim = stack.workers()[index]
        stopped.append((index, victim, time.monotonic()))
        victim.send_signal(signum)
        victim.wait(RECOVERY_TIMEOUT_SECONDS)

    watchers = asyncio.run(watch_through(stack, token, process_ids, 5, stop_worker))
    problems = missed_or_repeated(stack, watchers)
    [(index, victim, stopped_at)] = stopped
    wait_until(
        lambda: restarted_worker(stack, index, victim),
        RECOVERY_TIMEOUT_SECONDS,
        f"the supervisor to restart worker {index}",
    )

    endings = [end for watcher in watchers for end in watcher.endings]
    breaks = [text for watcher in watchers for text in watcher.breaks]
    print(f"\nstopped worker {index} at {stopped_at:.2f}; breaks: {breaks}")
    assert ending in endings, endings  # the worker had streams, and they ended so
    if signum == signal.SIGTERM:
        # Ended cleanly, every one.
        assert "cut" not in endings, (endings, breaks)
    assert not problems, "\n".join(problems[:20])


def test_the_python_clients_watch_delivers_every_event_once_across_a_killed_worker(
    two_workers: Stack,
) -> None:
    """HtkClient's watch, its stream's worker killed -9 mid-stream: the client
    resumes by itself, and the caller sees each event once, in order."""
    stack = two_workers
    wait_until(stack.serves_on_every_worker, RECOVERY_TIMEOUT_SECONDS, "every worker in rotation")
    [process_id] = create_running_processes(stack, stack.token("chaos"), 1)
    with HtkClient(stack.http_url, stack.token("chaos")) as htk:
        before = [_progress(htk, process_id, f"before {number}") for number in range(3)]
        watch = htk.processes.watch(process_id, after_seq=0)
        events = (message.event.seq for message in watch if message.HasField("event"))
        seen = [next(events) for _ in range(len(before) + 1)]  # the log's replay
        assert seen == [1, *before]
        # The watch is the only call in flight: the worker it holds is the one to kill.
        in_flight = wait_until(
            lambda: {i: n for i, n in stack.requests_in_flight().items() if n} or None,
            RECOVERY_TIMEOUT_SECONDS,
            "the watch in flight on a worker",
        )
        [index] = in_flight
        victim = kill_worker(stack, index)
        after = [_progress(htk, process_id, f"after {number}") for number in range(3)]
        last = _progress(htk, process_id, "", update_type="completed")
        seen += events
        logged = htk.processes.events(pb.ListProcessEventsRequest(process_id=process_id))
    assert seen == [event.seq for event in logged.events] == [1, *before, *after, last]
    wait_until(
        lambda: restarted_worker(stack, index, victim),
        RECOVERY_TIMEOUT_SECONDS,
        f"the supervisor to restart worker {index}",
    )


def _progress(htk: HtkClient, process_id: str, message: str, update_type: str = "progress") -> int:
    """Sends one update, retried with its idempotency key while a worker is
    down (a retry that reaches the server twice is logged once); returns its seq."""
    request = pb.UpdateProcessRequest(process_id=process_id, type=update_type)
    if update_type == "progress":
        request.step, request.message = STEP, message
    key = f"{process_id}-{update_type}-{message.replace(' ', '-')}"
    for _ in range(ANSWERS):
        try:
            return htk.processes.update(request, idempotency_key=key).seq
        except (ApiError, Unreachable) as error:
            if isinstance(error, ApiError) and not error.resumable:
                raise
            failure = error
            time.sleep(RETRY_SECONDS)
    raise AssertionError(f"the update never went through: {failure}")
