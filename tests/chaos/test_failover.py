"""The primary PostgreSQL lost under load, its synchronous standby promoted: the
four zeroes at a small scale (issue 27).

Two embedded PostgreSQL servers in synchronous streaming replication; an htk
stack of two workers whose DATABASE_URL lists both (libpq's multi-host form);
pipelines sending progress updates with idempotency keys, retried with the
same key as a client does; watchers resuming by `after_seq`; steps whose
timeouts fall around the failover. Then the primary's machine dies (kill -9
of its postmaster and every process it started), the test promotes the
standby as an HA manager would, and the load runs on. Everything checked is
read back over the API (REST and gRPC) and the watch streams:

- every acknowledged update is in the event log exactly once;
- no watcher missed or repeated an event;
- no step timeout fired twice or not at all;
- writes succeed again (how long it took is printed; bounded only by a
  generous safety limit, never by a tight one).

Nothing waits for a time to pass: each wait ends when what it waits for has
happened, and fails only past a generous limit.
"""

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk_client.rest import ApiError, JsonObject, RestApi, Unreachable
from tests.chaos.helpers import CLIENT_TIMEOUT_SECONDS, wait_until
from tests.chaos.replication import Pair, replicated_pair
from tests.support.stack import Stack, running_stack

PIPELINES = 3
WATCHERS_PER_PROCESS = 2
# Steps that time out; their timeouts start just before the primary is lost.
TIMEOUT_STEPS_SECONDS = (1, 3, 6)
# Updates acknowledged before the fault, and again after the promotion.
ACKNOWLEDGED_BEFORE = 30
ACKNOWLEDGED_AFTER = 30
# Safety limits, not measurements: each wait ends as soon as its condition holds.
RECOVERY_LIMIT_SECONDS = 60.0
WAIT_LIMIT_SECONDS = 120.0
# How long a client keeps retrying one write before it gives up (and the test fails).
RETRY_LIMIT_SECONDS = 120.0
FIRST_RETRY_PAUSE_SECONDS = 0.1
LONGEST_RETRY_PAUSE_SECONDS = 1.0
PAGE = 1000
# What a client may retry with the same Idempotency-Key: UNAVAILABLE (503,
# from htk or from Envoy with no worker ready) and DEADLINE_EXCEEDED (504).
RETRYABLE_STATUSES = frozenset({503, 504})


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
        except BaseException as error:  # reported by the test
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
        except BaseException as error:  # reported by the test
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


def test_a_lost_primary_loses_nothing_acknowledged_and_writes_resume(tmp_path: Path) -> None:
    with (
        replicated_pair(tmp_path / "postgres") as pair,
        running_stack(
            tmp_path / "stack", database_url=pair.database_url(), env={"HTK_WORKERS": "2"}
        ) as stack,
    ):
        # The startup line (logged once Envoy is ready, maybe after this
        # point) names both servers; the URL has no password to mask.
        until(lambda: f"database {pair.database_url()} (Ctrl-C" in stack.log, "the startup line")
        token = stack.token("failover")
        with clients(stack, token, PIPELINES * (1 + WATCHERS_PER_PROCESS) + 2) as apis:
            report = _fail_over_under_load(pair, stack, token, apis)
    print(report)


def _fail_over_under_load(pair: Pair, stack: Stack, token: str, apis: list[RestApi]) -> str:
    steps = [{"key": "build", "label": "Build"}, {"key": "ship", "label": "Ship"}]
    setup, timeouts_writer, *per_thread = apis
    writer = Writer(setup)
    pipelines = []
    watchers = []
    for number in range(PIPELINES):
        process_id = create(writer, f"pipeline {number}", steps)
        writer.update(process_id, {"type": "step_started", "step": "build"}, f"start-{process_id}")
        pipeline_api, *watcher_apis = per_thread[number * (1 + WATCHERS_PER_PROCESS) :][
            : 1 + WATCHERS_PER_PROCESS
        ]
        pipelines.append(Pipeline(Writer(pipeline_api), process_id, f"p{number}"))
        watchers += [Watcher(api, process_id) for api in watcher_apis]
    timed = {
        seconds: create(
            writer,
            f"times out after {seconds} s",
            [{"key": "wait", "label": "Wait", "timeout_seconds": seconds}],
        )
        for seconds in TIMEOUT_STEPS_SECONDS
    }
    writers = [pipeline.writer for pipeline in pipelines]

    for watcher in watchers:
        watcher.start()
    for pipeline in pipelines:
        pipeline.start()
    until(
        lambda: acknowledged_since(writers, 0.0) >= ACKNOWLEDGED_BEFORE, "updates before the fault"
    )
    # The step timeouts start now: their deadlines fall around the failover.
    timeouts = Writer(timeouts_writer)
    for process_id in timed.values():
        timeouts.update(process_id, {"type": "step_started", "step": "wait"}, f"wait-{process_id}")

    pair.primary.lose()
    # Once every process of the primary is gone: a write sent after this has
    # no server to take it until the promotion.
    lost_at = time.monotonic()
    # Until a standby is promoted no server takes writes: every client sees
    # it fail (the delay an HA manager takes to decide, here a few refusals).
    until(lambda: refused_since(writers, lost_at) >= PIPELINES, "clients to see the primary gone")
    promoting_at = time.monotonic()
    pair.standby.promote()
    promoted_at = time.monotonic()
    until(
        lambda: acknowledged_since(writers, promoted_at) >= ACKNOWLEDGED_AFTER,
        "updates after the promotion",
    )
    for pipeline in pipelines:
        pipeline.stop()
    # /readyz checks the database and that every worker's listening
    # connection is back, on the new primary.
    until(lambda: httpx.get(f"{stack.http_url}/readyz", timeout=10).status_code == 200, "/readyz")
    # The CLI finds the new primary too; the token it makes is read from it.
    created = stack.htk("token", "create", "--org", "failover", "--name", "after the failover")
    assert created.returncode == 0, created.stderr
    with clients(stack, created.stdout.strip(), 1) as (reader,):
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

    attempts = [attempt for w in [*writers, timeouts, writer] for attempt in w.snapshot()]
    first_write_back = min(
        a.answered_at
        for w in writers
        for a in w.snapshot()
        if a.status == 200 and a.sent_at >= lost_at
    )
    problems = [f"pipeline {p.name}: {p.failure!r}" for p in pipelines if p.failure]
    problems += [f"watcher of {w.process_id}: {w.failure!r}" for w in watchers if w.failure]
    problems += [
        f"{a.key}: {a.status} {a.detail}"
        for a in attempts
        if a.status not in {200, None, *RETRYABLE_STATUSES}
    ]
    problems += [
        f"{a.key}: acknowledged with no primary (sent {a.sent_at - lost_at:.2f} s after the loss)"
        for a in attempts
        if a.status == 200 and lost_at <= a.sent_at and a.answered_at <= promoting_at
    ]
    for pipeline in pipelines:
        logged = logged_over_rest(setup, pipeline.process_id)
        where = f"process {pipeline.process_id}"
        if logged != logged_over_grpc(stack, token, pipeline.process_id):
            problems.append(f"{where}: REST and gRPC read different logs")
        if [seq for seq, _, _ in logged] != list(range(1, len(logged) + 1)):
            problems.append(f"{where}: seqs {[seq for seq, _, _ in logged]}")
        tags = [message for _, kind, message in logged if kind == "progress"]
        problems += [
            f"{where}: acknowledged {tag} logged {tags.count(tag)} times"
            for tag in pipeline.acknowledged
            if tags.count(tag) != 1
        ]
        problems += [
            f"{where}: logged {tag}, never acknowledged"
            for tag in set(tags) - set(pipeline.acknowledged)
        ]
        for watcher in (w for w in watchers if w.process_id == pipeline.process_id):
            seen = [(int(e["seq"]), e["type"], e.get("message")) for e in watcher.events]
            if seen != logged:
                missed = sorted(set(logged) - set(seen))
                repeated = len(seen) - len(set(seen))
                problems.append(
                    f"{where}: a watcher missed {missed[:5]} ({len(missed)}) and"
                    f" repeated {repeated} of {len(logged)} events"
                )
    for seconds, process_id in timed.items():
        fired = [kind for _, kind, _ in logged_over_rest(setup, process_id)].count("step_timed_out")
        if fired != 1:
            problems.append(f"the {seconds} s step timeout fired {fired} times")

    refusals: dict[str, int] = {}
    for attempt in attempts:
        if attempt.status != 200:
            kind = "no answer" if attempt.status is None else f"{attempt.status} {attempt.detail}"
            # Counted by status and gRPC code, not by message.
            kind = kind.partition(":")[0]
            refusals[kind] = refusals.get(kind, 0) + 1
    acknowledged = sum(len(p.acknowledged) for p in pipelines)
    report = (
        f"\nfailover: {acknowledged} updates acknowledged by {PIPELINES} pipelines"
        f" ({len(attempts)} attempts, refused or unanswered: {refusals});"
        f" {len(watchers)} watchers; {len(timed)} step timeouts."
        f" Writes succeeded again {first_write_back - lost_at:.2f} s after the primary was lost"
        f" ({first_write_back - promoted_at:.2f} s after the promotion, which took"
        f" {promoted_at - promoting_at:.2f} s)."
    )
    assert problems == [], report + "\n" + "\n".join(problems)
    assert first_write_back - lost_at < RECOVERY_LIMIT_SECONDS, report
    return report
