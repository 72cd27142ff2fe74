"""Every type of event, read back through every read path: the events page
(REST and gRPC), WatchProcess (replayed whole and resumed from right before
each event) and the organization's WatchProcesses, each over gRPC and as
Server-Sent Events.

A step that times out once logged a payload key that ProcessEvent lacked, and
every read of that event failed (issue 18): the table below has one row per
event type, and fails when a type is added without joining it.
"""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_grpc
from server.domain.processes import EventType, UpdateType
from tests.e2e.test_rest_contract import PROCESSES, create_process, ok, update
from tests.support.orgs import Org
from tests.support.sse import kind, messages
from tests.support.stack import Stack
from tests.support.tokens import create_token

Json = dict[str, Any]
APPROVER = "event-types approver"
STEPS = [
    {"key": "build", "label": "Build"},
    {"key": "review", "label": "Review", "human": True},
    {"key": "deploy", "label": "Deploy", "timeout_seconds": 1},
    {"key": "cleanup", "label": "Clean up"},
]
# What each type of event shows, beside its seq, type and timestamp: one row
# per type. "<task>" and "<approver>" stand for the ids only known at run
# time, "<writer>" for the name of the organization's writer token.
EXPECTED: dict[str, Json] = {
    "step_started": {"step": "build", "detail": "from main", "actor": "<writer>"},
    "progress": {
        "step": "build",
        "message": "compiling",
        "percent": 50,
        "actor": "<writer>",
    },
    "step_completed": {
        "step": "build",
        "detail": "built",
        "data": {"image": "v2", "layers": 3},
        "actor": "<writer>",
    },
    "task_completed": {
        "step": "review",
        "task_id": "<task>",
        "outcome": "approved",
        "comment": "looks right",
        "completed_by": APPROVER,
        "completed_by_token_id": "<approver>",
        "actor": APPROVER,
    },
    "step_timed_out": {
        "step": "deploy",
        "error": "timed out after 1 s without an update",
        "timeout_seconds": 1,
        "actor": "htk",
    },
    "step_failed": {"step": "cleanup", "error": "disk full", "actor": "<writer>"},
    "failed": {"error": "gave up", "actor": "<writer>"},
    "completed": {"summary": "all done", "actor": "<writer>"},
    "cancelled": {"reason": "superseded", "actor": "<writer>"},
}
# The fields an event may show; any other would be new and untested here.
EVENT_KEYS = {"seq", "type", "timestamp"} | {key for row in EXPECTED.values() for key in row}
STREAM_SECONDS = 60


def test_the_table_has_one_row_per_event_type() -> None:
    assert set(EXPECTED) == {kind.value for kind in UpdateType} | {kind.value for kind in EventType}


@pytest.fixture(scope="module")
def org(stack: Stack) -> Org:
    return stack.new_org("events")


@pytest.fixture(scope="module")
def approver(stack: Stack, org: Org) -> tuple[str, str]:
    """A person's token and its id, as `htk token list` shows it."""
    token = create_token(stack.env, org.org_id, "tasks:complete", name=APPROVER)
    listing = stack.htk("token", "list", "--org", org.org_id)
    (line,) = [line for line in listing.stdout.splitlines() if APPROVER in line]
    return token, line.split()[0]


@pytest.fixture(scope="module")
def stub(grpc_channel: grpc.Channel) -> pb_grpc.ProcessServiceStub:
    return pb_grpc.ProcessServiceStub(grpc_channel)


def grpc_json(message: Any) -> Json:
    """A gRPC message as the REST API prints it."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


class OrgStream:
    """An organization's WatchProcesses read in the background until it has
    carried the events that finish `expected` processes."""

    def __init__(self, open_stream: Callable[[], Iterator[Json]], expected: int) -> None:
        self.events: list[tuple[str, Json]] = []
        self.listening = threading.Event()
        self.done = threading.Event()
        self._open = open_stream
        self._expected = expected
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        finished = 0
        try:
            for message in self._open():
                if "heartbeat" in message:
                    self.listening.set()
                if "event" in message:
                    self.events.append((message["process"]["process_id"], message["event"]))
                    finished += message["event"]["type"] in {"completed", "failed", "cancelled"}
                    if finished == self._expected:
                        self.done.set()
                        return
        except (grpc.RpcError, httpx.HTTPError):
            pass  # cancelled by a failing test; `done` stays unset and tells


@contextmanager
def org_streams(
    rest: httpx.Client, stub: pb_grpc.ProcessServiceStub, org: Org, expected: int
) -> Iterator[tuple[OrgStream, OrgStream]]:
    """WatchProcesses as SSE and over gRPC, each listening once this yields."""
    call = stub.WatchProcesses(
        pb.WatchProcessesRequest(), metadata=org.metadata(org.reader), timeout=STREAM_SECONDS
    )

    def over_grpc() -> Iterator[Json]:
        for message in call:
            yield grpc_json(message)

    def over_sse() -> Iterator[Json]:
        with rest.stream(
            "GET", "/api/v1/process-events", headers=org.auth(org.reader), timeout=STREAM_SECONDS
        ) as response:
            assert response.status_code == 200
            yield from messages(response)

    streams = OrgStream(over_sse, expected), OrgStream(over_grpc, expected)
    try:
        for stream in streams:
            assert stream.listening.wait(STREAM_SECONDS)
        yield streams
        for stream in streams:
            assert stream.done.wait(STREAM_SECONDS)
    finally:
        call.cancel()  # type: ignore[no-untyped-call] # grpc leaves it untyped


def wait_for_timeout(rest: httpx.Client, org: Org, process_id: str) -> None:
    """Until the deploy step's deadline has failed it (the server checks each second)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = ok(rest.get(f"{PROCESSES}/{process_id}/events", headers=org.auth(org.reader)))
        if any(event["type"] == "step_timed_out" for event in page["events"]):
            return
        time.sleep(0.2)
    raise AssertionError("the step did not time out")


@pytest.fixture(scope="module")
def logged(
    rest: httpx.Client,
    stub: pb_grpc.ProcessServiceStub,
    grpc_channel: grpc.Channel,
    org: Org,
    approver: tuple[str, str],
) -> Json:
    """Three finished processes whose logs hold every type of event between
    them, and what the organization's streams carried meanwhile: by process id,
    `events` (the log as REST pages it) and `org_sse` / `org_grpc`."""
    token, token_id = approver
    with org_streams(rest, stub, org, expected=3) as (sse, over_grpc):
        first = create_process(rest, org, steps=STEPS)["process_id"]
        update(rest, org, first, {"type": "step_started", "step": "build", "detail": "from main"})
        update(
            rest,
            org,
            first,
            {"type": "progress", "step": "build", "message": "compiling", "percent": 50},
        )
        update(
            rest,
            org,
            first,
            {
                "type": "step_completed",
                "step": "build",
                "detail": "built",
                "data": {"image": "v2", "layers": 3},
            },
        )
        update(rest, org, first, {"type": "step_started", "step": "review"})
        task_id = ok(rest.get(f"{PROCESSES}/{first}", headers=org.auth()))["task_ids"][0]
        # Over gRPC, so that both transports write too.
        tasks_grpc.TaskServiceStub(grpc_channel).CompleteTask(
            tasks_pb.CompleteTaskRequest(
                task_id=task_id, outcome="approved", comment="looks right"
            ),
            metadata=org.metadata(token),
        )
        update(rest, org, first, {"type": "step_started", "step": "deploy"})
        wait_for_timeout(rest, org, first)
        update(rest, org, first, {"type": "step_failed", "step": "cleanup", "error": "disk full"})
        update(rest, org, first, {"type": "failed", "error": "gave up"})
        second = create_process(rest, org)["process_id"]
        update(rest, org, second, {"type": "completed", "summary": "all done"})
        third = create_process(rest, org)["process_id"]
        stub.CancelProcess(
            pb.CancelProcessRequest(process_id=third, reason="superseded"),
            metadata=org.metadata(),
        )
    writer = ok(rest.get("/api/v1/caller", headers=org.auth()))["token_name"]
    placeholders = {"<task>": task_id, "<approver>": token_id, "<writer>": writer}
    return {
        "placeholders": placeholders,
        "processes": [first, second, third],
        "org_sse": sse.events,
        "org_grpc": over_grpc.events,
    }


def check(events: list[Json], placeholders: dict[str, str]) -> None:
    """The first event of each type shows exactly what its row of the table
    says (later ones, such as the other steps' starts, differ in values);
    none shows a field the table does not know."""
    for event in events:
        assert event.keys() <= EVENT_KEYS, event
    firsts = {event["type"]: event for event in reversed(events)}
    for event in firsts.values():
        expected = {
            key: placeholders.get(value, value) if isinstance(value, str) else value
            for key, value in EXPECTED[event["type"]].items()
        }
        assert {key: event.get(key) for key in expected} == expected, event
        assert event.keys() - expected.keys() == {"seq", "type", "timestamp"}, event


def rest_events(rest: httpx.Client, org: Org, process_id: str) -> list[Json]:
    page = ok(rest.get(f"{PROCESSES}/{process_id}/events", headers=org.auth(org.reader)))
    return list(page["events"])


def test_every_event_type_is_logged(rest: httpx.Client, org: Org, logged: Json) -> None:
    types = [event["type"] for pid in logged["processes"] for event in rest_events(rest, org, pid)]
    assert sorted(set(types)) == sorted(EXPECTED)


def test_the_events_page_shows_each_type_over_rest_and_grpc(
    rest: httpx.Client, stub: pb_grpc.ProcessServiceStub, org: Org, logged: Json
) -> None:
    for process_id in logged["processes"]:
        over_rest = rest_events(rest, org, process_id)
        response = stub.ListProcessEvents(
            pb.ListProcessEventsRequest(process_id=process_id), metadata=org.metadata(org.reader)
        )
        over_grpc = [grpc_json(event) for event in response.events]
        assert [event["seq"] for event in over_rest] == list(range(1, len(over_rest) + 1))
        assert over_grpc == over_rest
        check(over_rest, logged["placeholders"])


def watch_sse(rest: httpx.Client, org: Org, process_id: str, after_seq: int) -> list[Json]:
    with rest.stream(
        "GET",
        f"{PROCESSES}/{process_id}/watch",
        params={"after_seq": after_seq},
        headers=org.auth(org.reader),
        timeout=STREAM_SECONDS,
    ) as response:
        assert response.status_code == 200
        return list(messages(response))


def watch_grpc(
    stub: pb_grpc.ProcessServiceStub, org: Org, process_id: str, after_seq: int
) -> list[Json]:
    call = stub.WatchProcess(
        pb.WatchProcessRequest(process_id=process_id, after_seq=after_seq),
        metadata=org.metadata(org.reader),
        timeout=STREAM_SECONDS,
    )
    return [grpc_json(message) for message in call]


def test_watching_a_process_replays_and_resumes_at_each_type_over_grpc_and_sse(
    rest: httpx.Client, stub: pb_grpc.ProcessServiceStub, org: Org, logged: Json
) -> None:
    for process_id in logged["processes"]:
        log = rest_events(rest, org, process_id)
        # From the start, and resumed from right before each event: the
        # stream carries the rest of the log, then ends (the process finished).
        for event in log:
            after_seq = event["seq"] - 1
            for streamed in (
                watch_sse(rest, org, process_id, after_seq),
                watch_grpc(stub, org, process_id, after_seq),
            ):
                assert [kind(message) for message in streamed] == ["event"] * (len(log) - after_seq)
                assert [message["event"] for message in streamed] == log[after_seq:]


def test_the_organizations_streams_carry_each_type_over_grpc_and_sse(
    rest: httpx.Client, org: Org, logged: Json
) -> None:
    logs = [(pid, event) for pid in logged["processes"] for event in rest_events(rest, org, pid)]
    for streamed in (logged["org_sse"], logged["org_grpc"]):
        assert sorted(streamed, key=_order(logged)) == sorted(logs, key=_order(logged))
        check([event for _, event in streamed], logged["placeholders"])


def _order(logged: Json) -> Callable[[tuple[str, Json]], tuple[int, int]]:
    return lambda item: (logged["processes"].index(item[0]), item[1]["seq"])


def test_the_ack_and_the_snapshot_carry_the_latest_seq_over_rest_and_grpc(
    rest: httpx.Client, stub: pb_grpc.ProcessServiceStub, org: Org
) -> None:
    process_id = create_process(rest, org)["process_id"]
    assert ok(rest.get(f"{PROCESSES}/{process_id}", headers=org.auth()))["seq"] == 0
    for seq, body in enumerate(
        (
            {"type": "step_started", "step": "build"},
            {"type": "progress", "step": "build", "percent": 5},
        ),
        start=1,
    ):
        ack = ok(rest.post(f"{PROCESSES}/{process_id}/update", headers=org.auth(), json=body))
        assert ack["seq"] == seq
    assert ok(rest.get(f"{PROCESSES}/{process_id}", headers=org.auth()))["seq"] == 2
    request = pb.GetProcessRequest(process_id=process_id)
    assert stub.GetProcess(request, metadata=org.metadata()).seq == 2
    acked = stub.UpdateProcess(
        pb.UpdateProcessRequest(process_id=process_id, type="completed"), metadata=org.metadata()
    )
    assert acked.seq == 3
    assert stub.GetProcess(request, metadata=org.metadata()).seq == 3
    (snapshot, *_) = watch_grpc_from_start(stub, org, process_id)
    assert snapshot["process"]["seq"] == 3


def watch_grpc_from_start(
    stub: pb_grpc.ProcessServiceStub, org: Org, process_id: str
) -> list[Json]:
    call = stub.WatchProcess(
        pb.WatchProcessRequest(process_id=process_id),
        metadata=org.metadata(org.reader),
        timeout=STREAM_SECONDS,
    )
    return [grpc_json(message) for message in call]


def test_large_events_page_by_size_through_envoy_over_rest_and_grpc(
    rest: httpx.Client, stub: pb_grpc.ProcessServiceStub, org: Org
) -> None:
    """110 events of 10,000 four-byte characters: 4.4 MB, past gRPC's default
    4 MiB message limit, had they come as one page."""
    events = 110
    process_id = create_process(rest, org)["process_id"]
    update(rest, org, process_id, {"type": "step_started", "step": "build"})
    for _ in range(events):
        body = {"type": "progress", "step": "build", "message": "\U0001d11e" * 10_000}
        ok(rest.post(f"{PROCESSES}/{process_id}/update", headers=org.auth(), json=body))
    over_rest: list[int] = []
    over_grpc: list[int] = []
    for seqs, read in ((over_rest, _rest_page), (over_grpc, _grpc_page)):
        for _ in range(events + 2):
            page = read(rest, stub, org, process_id, seqs[-1] if seqs else 0)
            if not page:
                break
            assert len(page) < events  # cut by size, not by `limit`
            seqs.extend(page)
    assert over_rest == over_grpc == list(range(1, events + 2))


def _rest_page(
    rest: httpx.Client, stub: pb_grpc.ProcessServiceStub, org: Org, process_id: str, after: int
) -> list[int]:
    params = {"after_seq": after, "limit": 1000}
    response = rest.get(f"{PROCESSES}/{process_id}/events", params=params, headers=org.auth())
    return [event["seq"] for event in ok(response)["events"]]


def _grpc_page(
    rest: httpx.Client, stub: pb_grpc.ProcessServiceStub, org: Org, process_id: str, after: int
) -> list[int]:
    request = pb.ListProcessEventsRequest(process_id=process_id, after_seq=after, limit=1000)
    return [event.seq for event in stub.ListProcessEvents(request, metadata=org.metadata()).events]
