"""Event history and watch streams end to end: Server-Sent Events through
Envoy (as curl and httpx read them) and gRPC streams through Envoy, on a
two-worker stack whose requests time out after 3 s and whose quiet streams
send a heartbeat every second; then two instances sharing one PostgreSQL.
"""

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.edge.constants import worker_socket
from tests.support.orgs import Org
from tests.support.sse import kind, messages
from tests.support.stack import HTK, Stack, running_stack

REQUEST_TIMEOUT_SECONDS = 3
MAX_WATCHERS = 10
LIVE_ENV = {
    "HTK_WORKERS": "2",
    "HTK_HEARTBEAT_SECONDS": "1",
    "HTK_REQUEST_TIMEOUT_SECONDS": str(REQUEST_TIMEOUT_SECONDS),
    "HTK_MAX_WATCHERS": str(MAX_WATCHERS),
}
Message = dict[str, Any]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("watch"), env=LIVE_ENV) as stack:
        yield stack


def new_org(stack: Stack) -> Org:
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    return Org(org_id=org_id, writer=stack.token(org_id), reader=stack.token(org_id, scopes=""))


@pytest.fixture(scope="module")
def tenant(live: Stack) -> Org:
    """The organization of the tests that watch single processes."""
    return new_org(live)


@pytest.fixture(scope="module")
def strangers_process(live: Stack) -> str:
    """A process of another organization than the tenant's."""
    with httpx.Client(base_url=live.http_url, timeout=30) as client:
        return running(client, new_org(live))


@pytest.fixture
def http(live: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.http_url, timeout=30) as client:
        yield client


def create(http: httpx.Client, org: Org, name: str = "Deploy", namespace: str = "deploy") -> str:
    created = http.post(
        "/api/v1/processes",
        headers=org.auth(),
        json={
            "namespace": namespace,
            "name": name,
            "step_defs": [{"key": "build", "label": "Build"}, {"key": "test", "label": "Test"}],
        },
    )
    assert created.status_code == 200, created.text
    return str(created.json()["process_id"])


def send(http: httpx.Client, org: Org, process_id: str, body: Message) -> None:
    answer = http.post(f"/api/v1/processes/{process_id}/update", headers=org.auth(), json=body)
    assert answer.status_code == 200, answer.text


def progress(http: httpx.Client, org: Org, process_id: str, percent: int) -> None:
    send(http, org, process_id, {"type": "progress", "step": "build", "percent": percent})


def running(http: httpx.Client, org: Org) -> str:
    """A new process whose `build` step runs (event 1)."""
    process_id = create(http, org)
    send(http, org, process_id, {"type": "step_started", "step": "build"})
    return process_id


@contextmanager
def watching(http: httpx.Client, org: Org, path: str, **params: Any) -> Iterator[Iterator[Message]]:
    """A watch stream's messages over REST, read as they arrive."""
    with http.stream("GET", path, params=params, headers=org.auth(org.reader)) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "text/event-stream"
        yield messages(response)


def take(stream: Iterator[Message], count: int) -> list[Message]:
    """The next `count` messages other than heartbeats (fewer if the stream ends)."""
    taken: list[Message] = []
    for message in stream:
        if kind(message) != "heartbeat":
            taken.append(message)
        if len(taken) == count:
            break
    return taken


def seqs(received: list[Message]) -> list[int]:
    return [message["event"]["seq"] for message in received if kind(message) == "event"]


def test_sse_as_curl_sees_it_snapshot_then_events_until_the_finish(
    live: Stack, http: httpx.Client, tenant: Org
) -> None:
    process_id = running(http, tenant)
    curl = subprocess.Popen(
        [
            "curl",
            "-sN",
            "-D",
            "-",
            f"{live.http_url}/api/v1/processes/{process_id}/watch",
            "-H",
            f"Authorization: Bearer {tenant.reader}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert curl.stdout is not None
    head = []  # (text mode reads each CRLF as a newline)
    while (line := curl.stdout.readline()) not in ("\n", ""):
        head.append(line.strip().lower())
    snapshot = curl.stdout.readline()
    assert curl.stdout.readline() == "\n"  # each event ends with a blank line
    progress(http, tenant, process_id, 60)
    send(http, tenant, process_id, {"type": "step_completed", "step": "build", "data": {"n": 1}})
    send(http, tenant, process_id, {"type": "completed", "summary": "shipped"})
    rest, _ = curl.communicate(timeout=30)

    assert curl.returncode == 0  # the stream ended by itself, after the finish
    assert head[0] == "http/1.1 200 ok"
    assert "content-type: text/event-stream" in head
    assert snapshot.startswith("data: ")
    process = json.loads(snapshot.removeprefix("data: "))["process"]
    assert (process["process_id"], process["timeline"][0]["status"]) == (process_id, "running")
    blocks = rest.split("\n\n")
    assert blocks[-1] == ""
    # Each event's block: its seq as the id, then its data.
    received = [
        (block.partition("id: ")[2].partition("\n")[0], json.loads(block.split("data: ")[1]))
        for block in blocks[:-1]
    ]
    events = [message["event"] for _, message in received if kind(message) != "heartbeat"]
    assert [event_id for event_id, message in received if kind(message) == "event"] == [
        "2",
        "3",
        "4",
    ]
    assert [(event["seq"], event["type"]) for event in events] == [
        (2, "progress"),
        (3, "step_completed"),
        (4, "completed"),
    ]
    assert events[0]["percent"] == 60 and events[0]["step"] == "build"
    assert events[1]["data"] == {"n": 1} and events[2]["summary"] == "shipped"
    assert {"seq", "type", "timestamp"} <= events[2].keys()


def test_resuming_with_after_seq_gets_the_updates_made_while_disconnected(
    http: httpx.Client, tenant: Org
) -> None:
    process_id = running(http, tenant)
    path = f"/api/v1/processes/{process_id}/watch"
    with watching(http, tenant, path) as stream:
        assert kind(next(stream)) == "process"
        progress(http, tenant, process_id, 10)
        (first,) = take(stream, 1)
    assert seqs([first]) == [2]
    for percent in (20, 30, 40):  # while no one watches
        progress(http, tenant, process_id, percent)

    with watching(http, tenant, path, after_seq=first["event"]["seq"]) as stream:
        replayed = take(stream, 3)
        send(http, tenant, process_id, {"type": "failed", "error": "gave up"})
        live_and_end = take(stream, 100)

    assert seqs(replayed) == [3, 4, 5]
    assert [message["event"]["percent"] for message in replayed] == [20, 30, 40]
    assert seqs(live_and_end) == [6]
    assert live_and_end[0]["event"]["error"] == "gave up"


def test_watching_a_finished_process_from_its_last_event_sends_the_process(
    live: Stack, http: httpx.Client, tenant: Org
) -> None:
    """The first message comes at once even when no event is left to send:
    the process, then the end, over REST and gRPC alike."""
    process_id = running(http, tenant)
    send(http, tenant, process_id, {"type": "completed", "summary": "done"})
    with watching(http, tenant, f"/api/v1/processes/{process_id}/watch", after_seq=2) as stream:
        over_rest = list(stream)
    with grpc.insecure_channel(live.envoy_target) as channel:
        call: Any = pb_grpc.ProcessServiceStub(channel).WatchProcess(
            pb.WatchProcessRequest(process_id=process_id, after_seq=2),
            metadata=tenant.metadata(tenant.reader),
        )
        over_grpc = list(call)

    assert [kind(message) for message in over_rest] == ["process"]
    assert over_rest[0]["process"]["status"] == "completed"
    assert [message.WhichOneof("kind") for message in over_grpc] == ["process"]
    assert over_grpc[0].process.status == "completed"
    assert call.code() == grpc.StatusCode.OK


def test_sse_events_carry_their_seq_as_id_and_nothing_else_does(
    http: httpx.Client, tenant: Org
) -> None:
    """The bytes of the stream: `id: <seq>` before each event's data; the
    process and heartbeats, which have no seq, carry none."""
    process_id = running(http, tenant)
    path = f"/api/v1/processes/{process_id}/watch"
    with http.stream("GET", path, params={"after_seq": 1}, headers=tenant.auth()) as quiet:
        first = next(quiet.iter_raw())
    assert first.startswith(b'data: {"heartbeat":') and first.endswith(b"}\n\n"), first
    progress(http, tenant, process_id, 50)
    send(http, tenant, process_id, {"type": "completed"})

    body = http.get(path, headers=tenant.auth()).read().decode()  # finished: it ends
    snapshot, *events, end = body.split("\n\n")
    assert end == ""
    assert snapshot.startswith('data: {"process":')
    assert events == []  # a stream without after_seq starts at the process

    body = http.get(path, params={"after_seq": 0}, headers=tenant.auth()).read().decode()
    blocks = body.split("\n\n")[:-1]
    assert [block.split("\n")[0] for block in blocks] == ["id: 1", "id: 2", "id: 3"]
    for seq, block in enumerate(blocks, start=1):
        _, data_line = block.split("\n")
        assert json.loads(data_line.removeprefix("data: "))["event"]["seq"] == seq


def test_an_event_source_resumes_with_last_event_id_losing_and_repeating_nothing(
    http: httpx.Client, tenant: Org
) -> None:
    """As a browser's EventSource does: the same URL again, with the id of
    the last event it got in Last-Event-ID. The events arrive as they are
    sent: nothing holds them back to add their ids."""
    process_id = running(http, tenant)
    progress(http, tenant, process_id, 10)
    path = f"/api/v1/processes/{process_id}/watch"
    received: list[str] = []

    def read_events(lines: Iterator[str], count: int) -> None:
        """Reads until `count` ids in all are received, or the stream ends."""
        for line in lines:
            if line.startswith("id: "):
                received.append(line.removeprefix("id: "))
                if len(received) == count:
                    return

    with http.stream("GET", path, params={"after_seq": 0}, headers=tenant.auth()) as first:
        lines = first.iter_lines()
        read_events(lines, 2)
        progress(http, tenant, process_id, 20)  # live, while the stream is open
        read_events(lines, 3)
    for percent in (30, 40):  # while disconnected
        progress(http, tenant, process_id, percent)
    send(http, tenant, process_id, {"type": "completed"})
    again = {**tenant.auth(), "Last-Event-ID": received[-1]}
    with http.stream("GET", path, params={"after_seq": 0}, headers=again) as resumed:
        read_events(resumed.iter_lines(), 100)  # to its end, after the finish

    assert received == ["1", "2", "3", "4", "5", "6"]


def test_a_bad_last_event_id_is_a_400_naming_it(http: httpx.Client, tenant: Org) -> None:
    process_id = running(http, tenant)
    refused = http.get(
        f"/api/v1/processes/{process_id}/watch",
        headers={**tenant.auth(), "Last-Event-ID": "7"},
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"] == "Last-Event-ID: 7 is past the process's last event (1)"


def test_a_quiet_stream_outlives_the_request_timeout_on_heartbeats(
    http: httpx.Client, tenant: Org
) -> None:
    process_id = running(http, tenant)
    heartbeats = 2 * REQUEST_TIMEOUT_SECONDS + 1  # one a second, from the start
    with watching(http, tenant, f"/api/v1/processes/{process_id}/watch", after_seq=1) as stream:
        received = [next(stream) for _ in range(heartbeats)]
    assert [kind(message) for message in received] == ["heartbeat"] * heartbeats


def test_events_list_over_rest(http: httpx.Client, tenant: Org) -> None:
    process_id = running(http, tenant)
    for percent in (10, 20, 30):
        progress(http, tenant, process_id, percent)
    listed = http.get(
        f"/api/v1/processes/{process_id}/events",
        params={"after_seq": 1, "limit": 2},
        headers=tenant.auth(tenant.reader),
    )
    assert listed.status_code == 200, listed.text
    events = listed.json()["events"]
    assert [(event["seq"], event["percent"]) for event in events] == [(2, 10), (3, 20)]
    assert events[0].keys() == {"seq", "type", "timestamp", "step", "percent", "actor"}


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/v1/processes/{id}/watch", {"after_seq": -1}, 400, "after_seq: must be 0 or more"),
        ("/api/v1/processes/{id}/watch", {"after_seq": 9}, 400, "after_seq: 9 is past"),
        ("/api/v1/processes/{id}/watch", {"after": 1}, 400, None),
        ("/api/v1/processes/{id}/events", {"limit": 0}, 400, "limit: must be between 1 and 1000"),
        ("/api/v1/processes/{other}/watch", {}, 404, "not found"),
        ("/api/v1/processes/{other}/events", {}, 404, "not found"),
        ("/api/v1/process-events", {"status": "paused"}, 400, "status: unknown value"),
        ("/api/v1/process-events", {"namespace": "other.x"}, 400, "namespace:"),
    ],
)
def test_errors_before_a_stream_starts_are_json_with_their_status(
    http: httpx.Client,
    tenant: Org,
    strangers_process: str,
    path: str,
    params: dict[str, Any],
    status: int,
    message: str | None,
) -> None:
    process_id = running(http, tenant)
    url = path.format(id=process_id, other=strangers_process)
    response = http.get(url, params=params, headers=tenant.auth(tenant.reader))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert message is None or message in response.json()["message"]


def test_a_stream_without_a_token_is_401(http: httpx.Client, tenant: Org) -> None:
    response = http.get("/api/v1/process-events")
    assert response.status_code == 401
    assert response.json()["code"] == 16


def test_the_organization_stream_sends_its_orgs_matching_changes(
    live: Stack, http: httpx.Client
) -> None:
    org, stranger = new_org(live), new_org(live)
    with watching(http, org, "/api/v1/process-events", namespace="ops") as stream:
        assert kind(next(stream)) == "heartbeat"  # changes are followed from here on
        create(http, stranger, "theirs", namespace="ops")
        create(http, org, "elsewhere", namespace="builds")
        process_id = create(http, org, "mine", namespace="ops")
        send(http, org, process_id, {"type": "completed"})
        received = take(stream, 2)

    assert [message["process"]["name"] for message in received] == ["mine", "mine"]
    created, completed = received
    assert "event" not in created and created["process"]["namespace"] == f"{org.org_id}.ops"
    assert completed["event"]["type"] == "completed"
    assert completed["process"]["process_id"] == process_id


def test_grpc_streams_through_envoy(live: Stack, http: httpx.Client, tenant: Org) -> None:
    process_id = running(http, tenant)
    progress(http, tenant, process_id, 50)
    metadata = tenant.metadata(tenant.reader)
    with grpc.insecure_channel(live.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        # grpc's stream calls are iterators at run time, not in its type stubs.
        finished: Any = stub.WatchProcesses(
            pb.WatchProcessesRequest(status="completed"), metadata=metadata
        )
        assert next(finished).HasField("heartbeat")
        replay: Any = stub.WatchProcess(
            pb.WatchProcessRequest(process_id=process_id, after_seq=0), metadata=metadata
        )
        assert [next(replay).event.seq for _ in range(2)] == [1, 2]
        send(http, tenant, process_id, {"type": "completed"})
        rest = [message for message in replay if not message.HasField("heartbeat")]
        completions = next(message for message in finished if not message.HasField("heartbeat"))
        finished.cancel()

    assert [(message.event.seq, message.event.type) for message in rest] == [(3, "completed")]
    assert replay.code() == grpc.StatusCode.OK
    assert (completions.process.process_id, completions.event.seq) == (process_id, 3)


# Enough calls that a race between two timers, lost now and then, shows.
DEADLINE_CALLS = 20


def test_a_grpc_streams_deadline_through_envoy_ends_it_with_deadline_exceeded(
    live: Stack, tenant: Org
) -> None:
    # The worker ends the stream at the caller's deadline; Envoy must not race
    # it with a timer of its own, whose reset of a begun response a client
    # reads as INTERNAL.
    with grpc.insecure_channel(live.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        for _ in range(DEADLINE_CALLS):
            stream: Any = stub.WatchProcesses(
                pb.WatchProcessesRequest(), metadata=tenant.metadata(tenant.reader), timeout=0.5
            )
            with pytest.raises(grpc.RpcError) as ended:
                for _message in stream:
                    pass
            assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ended.value


def test_a_watcher_on_one_worker_sees_updates_made_through_the_other(
    live: Stack, http: httpx.Client, tenant: Org
) -> None:
    process_id = running(http, tenant)
    workers = [f"unix-abstract:{worker_socket(live.process.pid, n)}" for n in (0, 1)]
    with grpc.insecure_channel(workers[0]) as first, grpc.insecure_channel(workers[1]) as second:
        stream: Any = pb_grpc.ProcessServiceStub(first).WatchProcess(
            pb.WatchProcessRequest(process_id=process_id, after_seq=1),
            metadata=tenant.metadata(tenant.reader),
        )
        assert next(stream).HasField("heartbeat")
        pb_grpc.ProcessServiceStub(second).UpdateProcess(
            pb.UpdateProcessRequest(process_id=process_id, type="completed"),
            metadata=tenant.metadata(),
        )
        received = [message for message in stream if not message.HasField("heartbeat")]
    assert [message.event.type for message in received] == ["completed"]


def test_streams_past_a_workers_limit_are_refused_with_429(
    live: Stack, http: httpx.Client, tenant: Org
) -> None:
    process_id = running(http, tenant)
    opened = 0
    with ExitStack() as streams:
        for _ in range(3 * MAX_WATCHERS):  # Envoy spreads them over the two workers
            response = streams.enter_context(
                http.stream(
                    "GET",
                    f"/api/v1/processes/{process_id}/watch",
                    headers=tenant.auth(tenant.reader),
                )
            )
            if response.status_code != 200:
                break
            opened += 1
        else:
            pytest.fail(f"all {opened} streams were accepted")
        refused = response.read()
    assert response.status_code == 429, refused
    assert json.loads(refused)["code"] == 8
    assert "maximum of 10 streams" in json.loads(refused)["message"]
    assert MAX_WATCHERS <= opened <= 2 * MAX_WATCHERS


# --- two instances, one database ------------------------------------------------------------


def test_a_watcher_on_one_instance_sees_updates_made_through_another(
    two_instances: tuple[Stack, Stack],
) -> None:
    a, b = two_instances
    org_id = f"org-{uuid.uuid4().hex[:12]}"
    org = Org(org_id, writer=a.token(org_id), reader=b.token(org_id, scopes=""))
    with (
        httpx.Client(base_url=a.http_url, timeout=30) as on_a,
        httpx.Client(base_url=b.http_url, timeout=30) as on_b,
        watching(on_a, org, "/api/v1/process-events") as everything,
    ):
        assert kind(next(everything)) == "heartbeat"
        process_id = running(on_b, org)
        with watching(on_a, org, f"/api/v1/processes/{process_id}/watch") as one:
            assert kind(next(one)) == "process"
            progress(on_b, org, process_id, 70)
            send(on_b, org, process_id, {"type": "completed"})
            watched = take(one, 100)
        changes = take(everything, 4)

    assert seqs(watched) == [2, 3]
    assert [message.get("event", {}).get("seq") for message in changes] == [None, 1, 2, 3]


def test_an_instance_on_ports_in_use_refuses_to_start(
    two_instances: tuple[Stack, Stack],
) -> None:
    a, _ = two_instances
    clash = subprocess.run([HTK, "run"], env=a.env, capture_output=True, text=True, timeout=60)
    assert clash.returncode == 1
    for name in ("HTK_HTTP_PORT", "HTK_GRPC_PORT", "HTK_ENVOY_ADMIN_PORT", "HTK_METRICS_PORT"):
        assert f"{name}={a.env[name]}" in clash.stderr
