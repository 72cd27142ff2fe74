"""The load and the checks of a failover, shared by the CI test
(tests/chaos/test_failover.py: two embedded servers, the test promotes) and
the drill (bench/drill.py, `make drill`: Patroni promotes).

Pipelines send progress updates with idempotency keys, retried with the same
key as a client does; watchers follow each pipeline's process with the Python
client, which resumes a broken stream by `after_seq`; steps time out around
the fault. Then the fault (the caller's), and the load runs on. Everything
checked is read back over the API (REST and gRPC) and the watch streams:

- every acknowledged update is in the event log exactly once;
- no watcher missed or repeated an event;
- no step timeout fired twice or not at all;
- writes succeed again (how long it took is measured; bounded only by a
  generous safety limit, never by a tight one).

Nothing waits for a time to pass: each wait ends when what it waits for has
happened, and fails only past a generous limit.
"""

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import httpx

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk_client.rest import ApiError, JsonObject, RestApi, Unreachable
from tests.chaos.helpers import CLIENT_TIMEOUT_SECONDS, wait_until
from tests.support.stack import Stack

# Safety limits, not measurements: each wait ends as soon as its condition holds.
WAIT_LIMIT_SECONDS = 120.0
# How long a client keeps retrying one write before it gives up (and the run fails).
RETRY_LIMIT_SECONDS = 120.0
FIRST_RETRY_PAUSE_SECONDS = 0.1
LONGEST_RETRY_PAUSE_SECONDS = 1.0
PAGE = 1000
# What a client may retry with the same Idempotency-Key: UNAVAILABLE (503,
# from htk or from Envoy with no worker ready) and DEADLINE_EXCEEDED (504).
RETRYABLE_STATUSES = frozenset({503, 504})


@dataclass(frozen=True)
class Load:
    """How much load runs across the fault."""

    pipelines: int
    watchers_per_process: int
    # Steps that time out; their timeouts start just before the fault.
    timeout_steps_seconds: tuple[int, ...]
    # Updates acknowledged before the fault, and again after it.
    acknowledged_before: int
    acknowledged_after: int
    # Each pipeline's pause between acknowledged updates: 0 sends them back to
    # back, more gives a steady rate (updates per second = pipelines / pause).
    pause_seconds: float = 0.0


@dataclass(frozen=True)
class Fault:
    """What the caller's fault reports: when the database was lost, and until
    when no server could take writes, if the caller knows (a write
    acknowledged in that window would be a lie)."""

    lost_at: float
    no_primary_until: float | None = None
    # What the caller saw of the fault, for the report.
    detail: str = ""


@dataclass
class Attempt:
    """One request a client sent, and how it ended."""

    key: str
    sent_at: float
    answered_at: float
    # The HTTP status, or None when no answer came (a refused or cut connection).
    status: int | None
    detail: str = ""


@dataclass
class Writer:
    """Sends writes as a pipeline does: each with an Idempotency-Key of its own,
    retried with the same key while the answer says to retry, until acknowledged."""

    api: RestApi
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, process_id: str, body: JsonObject, key: str) -> None:
        """Returns once acknowledged; raises after RETRY_LIMIT_SECONDS of retries,
        or at once on an answer that no retry would change."""
        give_up_at = time.monotonic() + RETRY_LIMIT_SECONDS
        pause = FIRST_RETRY_PAUSE_SECONDS
        while True:
            sent_at = time.monotonic()
            status: int | None = 200
            detail = ""
            try:
                self.api.update_process(process_id, body, key)
            except ApiError as error:
                status, detail = error.http_status, f"code={error.code}: {error}"
            except Unreachable as error:
                status, detail = None, str(error)
            with self.lock:
                self.attempts.append(Attempt(key, sent_at, time.monotonic(), status, detail))
            if status == 200:
                return
            if (status is not None and status not in RETRYABLE_STATUSES) or (
                time.monotonic() > give_up_at
            ):
                raise AssertionError(f"update {key} not acknowledged: {status} {detail}")
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_RETRY_PAUSE_SECONDS)

    def snapshot(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)


@dataclass
class Pipeline:
    """A thread reporting progress on one running step, update after update."""

    writer: Writer
    process_id: str
    name: str
    pause_seconds: float = 0.0
    acknowledged: list[str] = field(default_factory=list)
    failure: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        number = 0
        try:
            while not self._stop.is_set():
                tag = f"{self.name}-{number}"
                body = {"type": "progress", "step": "build", "message": tag}
                self.writer.update(self.process_id, body, key=f"{tag}-{uuid.uuid4().hex}")
                self.acknowledged.append(tag)
                number += 1
                self._stop.wait(self.pause_seconds)
        except BaseException as error:  # reported by the run
            self.failure = error

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Lets the update under way be acknowledged, then stops."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(RETRY_LIMIT_SECONDS + CLIENT_TIMEOUT_SECONDS)
        assert not self._thread.is_alive(), f"pipeline {self.name} did not stop"


@dataclass
class Watcher:
    """A thread watching one process from its first event to its end, with the
    Python client, which resumes a broken stream by `after_seq`."""

    api: RestApi
    process_id: str
    events: list[JsonObject] = field(default_factory=list)
    failure: BaseException | None = None
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            for message in self.api.watch_process(self.process_id, after_seq=0):
                if isinstance(message.get("event"), dict):
                    self.events.append(message["event"])
        except BaseException as error:  # reported by the run
            self.failure = error

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(WAIT_LIMIT_SECONDS)
        assert not self._thread.is_alive(), f"a watcher of {self.process_id} never saw the end"


@contextmanager
def clients(stack: Stack, token: str, count: int) -> Iterator[list[RestApi]]:
    apis = [
        RestApi(stack.http_url, token, timeout_seconds=CLIENT_TIMEOUT_SECONDS) for _ in range(count)
    ]
    try:
        yield apis
    finally:
        for api in apis:
            api.close()


def create(writer: Writer, name: str, steps: list[JsonObject]) -> str:
    """A new process, with retries as a client would (none expected here)."""
    created = writer.api.create_process(
        {"namespace": "failover", "name": name, "step_defs": steps}, f"create-{uuid.uuid4().hex}"
    )
    return str(created.json["process_id"])


def logged_over_rest(api: RestApi, process_id: str) -> list[tuple[int, str, str | None]]:
    """The process's whole event log as (seq, type, message), page by page."""
    events: list[JsonObject] = []
    while True:
        page = api.list_events(process_id, {"after_seq": len(events), "limit": PAGE}).json
        events += page.get("events", [])
        if len(page.get("events", [])) < PAGE:
            return [(int(e["seq"]), e["type"], e.get("message")) for e in events]


def logged_over_grpc(
    stack: Stack, token: str, process_id: str
) -> list[tuple[int, str, str | None]]:
    events: list[Any] = []
    with grpc.insecure_channel(stack.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        while True:
            page = stub.ListProcessEvents(
                pb.ListProcessEventsRequest(
                    process_id=process_id, after_seq=len(events), limit=PAGE
                ),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=CLIENT_TIMEOUT_SECONDS,
            )
            events += page.events
            if len(page.events) < PAGE:
                return [
                    (e.seq, e.type, e.message if e.HasField("message") else None) for e in events
                ]


def acknowledged_since(writers: list[Writer], since: float) -> int:
    return sum(
        attempt.status == 200 and attempt.sent_at >= since
        for writer in writers
        for attempt in writer.snapshot()
    )


def refused_since(writers: list[Writer], since: float) -> int:
    return sum(
        attempt.status != 200 and attempt.sent_at >= since
        for writer in writers
        for attempt in writer.snapshot()
    )


def until(condition: Callable[[], bool], what: str) -> None:
    wait_until(lambda: condition() or None, WAIT_LIMIT_SECONDS, what)


@dataclass
class Outcome:
    """What a failover under load did, with the four figures of issue 27."""

    load: Load
    fault: Fault
    acknowledged: int
    attempts: int
    refusals: dict[str, int]
    watchers: int
    # Seconds from the loss until a write sent after a client saw the outage was acknowledged.
    writes_back_after: float
    # Acknowledged updates not in the log exactly once.
    lost: int
    # Watchers that missed or repeated an event.
    watchers_wrong: int
    # Step timeouts that fired twice or not at all.
    timeouts_wrong: int
    problems: list[str]

    def summary(self) -> str:
        refusals = (
            ", ".join(f"{count} {kind}" for kind, count in sorted(self.refusals.items())) or "none"
        )
        return (
            f"{self.acknowledged} updates acknowledged by {self.load.pipelines} pipelines"
            f" ({self.attempts} attempts, refused or unanswered: {refusals});"
            f" {self.watchers} watchers; {len(self.load.timeout_steps_seconds)} step timeouts."
            f" Writes succeeded again {self.writes_back_after:.2f} s after the primary was lost"
            f"{self.fault.detail}. Acknowledged updates lost: {self.lost}; watchers that"
            f" missed or repeated an event: {self.watchers_wrong}; step timeouts fired twice"
            f" or not at all: {self.timeouts_wrong}."
        )


def fail_over_under_load(
    stacks: list[Stack],
    org: str,
    token: str,
    load: Load,
    fault: Callable[[list[Writer]], Fault],
) -> Outcome:
    """Starts the load on `stacks` (pipelines and watchers alternate between
    them) with `token`, of organization `org`; calls `fault`, which loses the
    primary and returns once it is done with it (the pipelines' writers let
    it see the clients' refusals); runs the load on until writes are back,
    ends it, and checks what every client saw against what the API reads back."""
    count = 2 + load.pipelines * (1 + load.watchers_per_process)
    with ExitStack() as opened:
        apis = [
            opened.enter_context(clients(stacks[number % len(stacks)], token, 1))[0]
            for number in range(count)
        ]
        return _run(stacks, org, token, load, fault, apis)


def _run(
    stacks: list[Stack],
    org: str,
    token: str,
    load: Load,
    fault: Callable[[list[Writer]], Fault],
    apis: list[RestApi],
) -> Outcome:
    setup, timeouts_api, *per_thread = apis
    steps = [{"key": "build", "label": "Build"}, {"key": "ship", "label": "Ship"}]
    writer = Writer(setup)
    pipelines = []
    watchers = []
    threads = iter(per_thread)
    for number in range(load.pipelines):
        process_id = create(writer, f"pipeline {number}", steps)
        writer.update(process_id, {"type": "step_started", "step": "build"}, f"start-{process_id}")
        pipelines.append(
            Pipeline(Writer(next(threads)), process_id, f"p{number}", load.pause_seconds)
        )
        watchers += [Watcher(next(threads), process_id) for _ in range(load.watchers_per_process)]
    timed = {
        seconds: create(
            writer,
            f"times out after {seconds} s",
            [{"key": "wait", "label": "Wait", "timeout_seconds": seconds}],
        )
        for seconds in load.timeout_steps_seconds
    }
    writers = [pipeline.writer for pipeline in pipelines]

    for watcher in watchers:
        watcher.start()
    for pipeline in pipelines:
        pipeline.start()
    until(
        lambda: acknowledged_since(writers, 0.0) >= load.acknowledged_before,
        "updates before the fault",
    )
    # The step timeouts start now: their deadlines fall around the failover.
    timeouts = Writer(timeouts_api)
    for process_id in timed.values():
        timeouts.update(process_id, {"type": "step_started", "step": "wait"}, f"wait-{process_id}")

    happened = fault(writers)
    after_fault = time.monotonic()
    until(
        lambda: acknowledged_since(writers, after_fault) >= load.acknowledged_after,
        "updates after the fault",
    )
    for pipeline in pipelines:
        pipeline.stop()
    for stack in stacks:
        # /readyz checks the database and that every worker's listening
        # connection is back, on the new primary.
        until(partial(_ready, stack), f"/readyz of {stack.http_url}")
    # The CLI finds the new primary too; the token it makes is read from it.
    created = stacks[0].htk(
        "token", "create", "--org", org, "--name", f"after the failover {uuid.uuid4().hex[:8]}"
    )
    assert created.returncode == 0, created.stderr
    with clients(stacks[-1], created.stdout.strip(), 1) as (reader,):
        assert reader.get_process(pipelines[0].process_id).json["process_id"]

    # Every step timeout fires, after the failover if not before.
    def all_timed_out() -> bool:
        try:
            logs = [logged_over_rest(setup, process_id) for process_id in timed.values()]
        except (ApiError, Unreachable):
            return False
        return all(any(kind == "step_timed_out" for _, kind, _ in log) for log in logs)

    until(all_timed_out, "every step timeout to fire")
    for pipeline in pipelines:
        writer.update(
            pipeline.process_id,
            {"type": "completed", "summary": "done"},
            f"end-{pipeline.process_id}",
        )
    for watcher in watchers:
        watcher.join()
    return _check(stacks[0], token, load, happened, setup, writers, [timeouts, writer], pipelines,
                  watchers, timed)  # fmt: skip


def _ready(stack: Stack) -> bool:
    try:
        return httpx.get(f"{stack.http_url}/readyz", timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def _check(
    stack: Stack,
    token: str,
    load: Load,
    fault: Fault,
    setup: RestApi,
    writers: list[Writer],
    others: list[Writer],
    pipelines: list[Pipeline],
    watchers: list[Watcher],
    timed: dict[int, str],
) -> Outcome:
    attempts = [attempt for w in [*writers, *others] for attempt in w.snapshot()]
    lost_at = fault.lost_at
    # Writes are back with the first acknowledged one sent once a client had
    # seen the outage: one sent in the instant after the fault may still
    # have found the old primary alive (a kill takes a moment to land).
    pipelines_attempts = [a for w in writers for a in w.snapshot()]
    outage_seen = min(
        (a.answered_at for a in pipelines_attempts if a.status != 200 and a.sent_at >= lost_at),
        default=lost_at,
    )
    first_write_back = min(
        a.answered_at for a in pipelines_attempts if a.status == 200 and a.sent_at >= outage_seen
    )
    problems = [f"pipeline {p.name}: {p.failure!r}" for p in pipelines if p.failure]
    problems += [f"watcher of {w.process_id}: {w.failure!r}" for w in watchers if w.failure]
    problems += [
        f"{a.key}: {a.status} {a.detail}"
        for a in attempts
        if a.status not in {200, None, *RETRYABLE_STATUSES}
    ]
    if fault.no_primary_until is not None:
        problems += [
            f"{a.key}: acknowledged with no primary (sent {a.sent_at - lost_at:.2f} s after"
            " the loss)"
            for a in attempts
            if a.status == 200 and lost_at <= a.sent_at and a.answered_at <= fault.no_primary_until
        ]
    lost = watchers_wrong = timeouts_wrong = 0
    for pipeline in pipelines:
        logged = logged_over_rest(setup, pipeline.process_id)
        where = f"process {pipeline.process_id}"
        if logged != logged_over_grpc(stack, token, pipeline.process_id):
            problems.append(f"{where}: REST and gRPC read different logs")
        if [seq for seq, _, _ in logged] != list(range(1, len(logged) + 1)):
            problems.append(f"{where}: seqs {[seq for seq, _, _ in logged]}")
        tags = [message for _, kind, message in logged if kind == "progress"]
        wrong = [tag for tag in pipeline.acknowledged if tags.count(tag) != 1]
        lost += len(wrong)
        problems += [f"{where}: acknowledged {tag} logged {tags.count(tag)} times" for tag in wrong]
        problems += [
            f"{where}: logged {tag}, never acknowledged"
            for tag in set(tags) - set(pipeline.acknowledged)
        ]
        for watcher in (w for w in watchers if w.process_id == pipeline.process_id):
            seen = [(int(e["seq"]), e["type"], e.get("message")) for e in watcher.events]
            if seen != logged:
                watchers_wrong += 1
                missed = sorted(set(logged) - set(seen))
                repeated = len(seen) - len(set(seen))
                problems.append(
                    f"{where}: a watcher missed {missed[:5]} ({len(missed)}) and"
                    f" repeated {repeated} of {len(logged)} events"
                )
    for seconds, process_id in timed.items():
        fired = [kind for _, kind, _ in logged_over_rest(setup, process_id)].count("step_timed_out")
        if fired != 1:
            timeouts_wrong += 1
            problems.append(f"the {seconds} s step timeout fired {fired} times")

    refusals: dict[str, int] = {}
    for attempt in attempts:
        if attempt.status != 200:
            kind = "no answer" if attempt.status is None else f"{attempt.status} {attempt.detail}"
            # Counted by status and gRPC code, not by message.
            kind = kind.partition(":")[0]
            refusals[kind] = refusals.get(kind, 0) + 1
    return Outcome(
        load=load,
        fault=fault,
        acknowledged=sum(len(p.acknowledged) for p in pipelines),
        attempts=len(attempts),
        refusals=refusals,
        watchers=len(watchers),
        writes_back_after=first_write_back - lost_at,
        lost=lost,
        watchers_wrong=watchers_wrong,
        timeouts_wrong=timeouts_wrong,
        problems=problems,
    )
