"""Event history and watch streams in process: snapshot then events, resuming
without gap or duplicate, the end of a stream, heartbeats, in-band errors,
tenancy, the organization-wide stream's filters, the watcher limit, and a
lost listening connection."""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import grpc
import psycopg
import pytest
from google.protobuf import json_format

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.service.calls import Stub, create, update
from tests.service.conftest import HEARTBEAT_ENV
from tests.support import raw_h2
from tests.support.in_process import InProcessServer, in_process_server
from tests.support.orgs import Org

# A guard against a hang, not a timing check: every wait here ends much sooner.
HANG_SECONDS = 20.0
Call: TypeAlias = Any  # grpc.aio's UnaryStreamCall, generic only in its type stubs


async def read(call: Call) -> Any:
    """The stream's next message, or None at its end."""
    message = await asyncio.wait_for(call.read(), HANG_SECONDS)
    return None if message is grpc.aio.EOF else message  # type: ignore[attr-defined]


async def read_until(call: Call, done: Callable[[list[Any]], bool]) -> list[Any]:
    """Messages other than heartbeats, until `done(messages)`, an in-band
    error (the last message, before the call's error status) or the end."""
    received: list[Any] = []
    while not done(received):
        message = await read(call)
        if message is None:
            break
        if not message.HasField("heartbeat"):
            received.append(message)
        if message.HasField("error"):
            break
    return received


async def rest_of(call: Call) -> list[Any]:
    """Every message other than heartbeats until the stream ends."""
    return await read_until(call, lambda _: False)


def seqs(messages: list[pb.WatchProcessResponse]) -> list[int]:
    return [message.event.seq for message in messages if message.HasField("event")]


def watch(
    stub: Stub, org: Org, process_id: str, after_seq: int | None = None, token: str | None = None
) -> Call:
    request = pb.WatchProcessRequest(process_id=process_id)
    if after_seq is not None:
        request.after_seq = after_seq
    return stub.WatchProcess(request, metadata=org.metadata(token))


async def test_a_watch_sends_the_process_then_its_events_and_ends_with_the_finish(
    processes: Stub, org: Org
) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    call = watch(processes, org, process.process_id, token=org.reader)

    first = await read(call)
    assert first.WhichOneof("kind") == "process"
    assert first.process.timeline[0].status == "running"
    await update(processes, org, process.process_id, "progress", step="build", percent=40)
    await update(processes, org, process.process_id, "completed", summary="done")
    events = await rest_of(call)

    assert seqs(events) == [2, 3]
    progress, completed = (message.event for message in events)
    assert json_format.MessageToDict(progress, preserving_proto_field_name=True) == {
        "seq": 2,
        "type": "progress",
        "timestamp": progress.timestamp.ToJsonString(),
        "step": "build",
        "percent": 40,
        "actor": (
            await processes.GetCaller(pb.GetCallerRequest(), metadata=org.metadata())
        ).token_name,
    }
    assert (completed.type, completed.summary, completed.HasField("step")) == (
        "completed",
        "done",
        False,
    )
    assert await call.code() == grpc.StatusCode.OK


async def test_a_stream_whose_client_leaves_is_logged_at_debug_never_as_an_error(
    processes: Stub, org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    """A client leaving mid-stream, replaying or waiting, is normal."""
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    for percent in range(50):
        await update(processes, org, process.process_id, "progress", step="build", percent=percent)
    caplog.set_level(logging.DEBUG, logger="server")
    cancelled = Cancelled(expected=5)
    logging.getLogger("server").addHandler(cancelled)
    try:
        replaying = [watch(processes, org, process.process_id, after_seq=0) for _ in range(3)]
        waiting = [watch(processes, org, process.process_id, after_seq=51) for _ in range(2)]
        for call in replaying + waiting:
            await read(call)
            call.cancel()
        await asyncio.wait_for(cancelled.all_logged.wait(), HANG_SECONDS)
    finally:
        logging.getLogger("server").removeHandler(cancelled)

    assert {record.levelno for record in cancelled.records} == {logging.DEBUG}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


class Cancelled(logging.Handler):
    """The server's records of cancelled streams, until `expected` came."""

    def __init__(self, expected: int) -> None:
        super().__init__(logging.DEBUG)
        self.expected = expected
        self.records: list[logging.LogRecord] = []
        self.all_logged = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().endswith("its deadline passed"):
            self.records.append(record)
            if len(self.records) >= self.expected:
                self.all_logged.set()


async def test_resuming_with_after_seq_has_no_gap_and_no_duplicate_at_the_seam(
    processes: Stub, org: Org
) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    for percent in range(1, 6):
        await update(processes, org, process.process_id, "progress", step="build", percent=percent)

    async def more_updates() -> None:
        # Racing the stream's replay, so some land before it, some during, some after.
        for percent in range(6, 40):
            await update(
                processes, org, process.process_id, "progress", step="build", percent=percent
            )
        await update(processes, org, process.process_id, "failed", error="gave up")

    call = watch(processes, org, process.process_id, after_seq=3)
    writer = asyncio.create_task(more_updates())
    received = await rest_of(call)
    await writer

    assert seqs(received) == list(range(4, 42))
    assert received[-1].event.type == "failed"


async def test_last_event_id_resumes_a_watch_and_wins_over_after_seq(
    processes: Stub, org: Org
) -> None:
    """As a browser's EventSource reconnects: the URL it opened (after_seq
    included) and the last id it got, in the Last-Event-ID header."""
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    await update(processes, org, process.process_id, "progress", step="build", percent=5)
    await update(processes, org, process.process_id, "completed")

    def reconnect(last_event_id: str) -> Call:
        return processes.WatchProcess(
            pb.WatchProcessRequest(process_id=process.process_id, after_seq=0),
            metadata=(*org.metadata(), ("last-event-id", last_event_id)),
        )

    assert seqs(await rest_of(reconnect("1"))) == [2, 3]
    for bad, problem in [
        ("4", "Last-Event-ID: 4 is past the process's last event (3)"),
        ("one", "Last-Event-ID: must be the seq of an event, a whole number, got 'one'"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await read(reconnect(bad))
        assert (refused.value.code(), refused.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            problem,
        )


async def test_watchers_joining_at_any_point_each_get_every_event_once(
    processes: Stub, org: Org
) -> None:
    """Watchers of one process share what the server reads of its log; those
    who join late, or replay more than it keeps, read the log themselves."""
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    for percent in range(300):  # more than a feed keeps
        await update(
            processes, org, process.process_id, "progress", step="build", percent=percent % 101
        )
    early = [watch(processes, org, process.process_id, after_seq=seq) for seq in (301, 250, 0)]
    snapshot = watch(processes, org, process.process_id)

    async def more_updates() -> list[Call]:
        late = []
        for percent in range(40):
            await update(
                processes, org, process.process_id, "progress", step="build", percent=percent
            )
            if percent % 10 == 0:  # joining while the updates flow
                late.append(watch(processes, org, process.process_id, after_seq=302 + percent))
        await update(processes, org, process.process_id, "completed")
        return late

    late = await more_updates()
    received = await asyncio.gather(*(rest_of(call) for call in [*early, snapshot, *late]))

    last = 342  # started, 300 + 40 progress updates, completed
    for after, messages in zip([301, 250, 0], received, strict=False):
        assert seqs(messages) == list(range(after + 1, last + 1))
    snapshot_first, *after_snapshot = received[3]
    assert snapshot_first.WhichOneof("kind") == "process"
    assert seqs(after_snapshot) == list(range(last - len(after_snapshot) + 1, last + 1))
    for joined, messages in zip(range(0, 40, 10), received[4:], strict=True):
        assert seqs(messages) == list(range(303 + joined, last + 1))


async def test_after_seq_zero_replays_the_whole_log(processes: Stub, org: Org) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_completed", step="build")
    await update(processes, org, process.process_id, "completed")

    assert seqs(await rest_of(watch(processes, org, process.process_id, after_seq=0))) == [1, 2]


async def test_a_finished_process_ends_the_stream_at_once(processes: Stub, org: Org) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "failed", error="broken")

    snapshot_only = await rest_of(watch(processes, org, process.process_id))
    assert [message.WhichOneof("kind") for message in snapshot_only] == ["process"]
    assert snapshot_only[0].process.status == "failed"
    # Nothing after its last event: the process itself, the stream's first
    # message at once, then the end.
    call = watch(processes, org, process.process_id, after_seq=1)
    caught_up = await rest_of(call)
    assert [message.WhichOneof("kind") for message in caught_up] == ["process"]
    assert caught_up[0].process.status == "failed"
    assert await call.code() == grpc.StatusCode.OK


async def test_a_quiet_stream_sends_heartbeats_from_the_start(processes: Stub, org: Org) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    call = watch(processes, org, process.process_id, after_seq=1)

    first, second = await read(call), await read(call)  # the session's interval is 1 s
    assert first.WhichOneof("kind") == second.WhichOneof("kind") == "heartbeat"
    assert second.heartbeat.time.ToDatetime() >= first.heartbeat.time.ToDatetime()
    call.cancel()


@pytest.mark.parametrize(
    ("after_seq", "problem"),
    [
        (-1, "after_seq: must be 0 or more, got -1"),
        (3, "after_seq: 3 is past the process's last event (1)"),
    ],
)
async def test_a_bad_after_seq_is_refused_before_the_stream_starts(
    processes: Stub, org: Org, after_seq: int, problem: str
) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    call = watch(processes, org, process.process_id, after_seq=after_seq)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await read(call)
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        problem,
    )


async def test_another_organizations_process_cannot_be_watched_or_listed(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await create(processes, org, "build")
    stranger = await server.new_org("other")
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await read(watch(processes, stranger, process.process_id))
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as unlisted:
        await processes.ListProcessEvents(
            pb.ListProcessEventsRequest(process_id=process.process_id),
            metadata=stranger.metadata(),
        )
    assert unlisted.value.code() == grpc.StatusCode.NOT_FOUND


async def test_events_list_in_pages_after_a_seq(processes: Stub, org: Org) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build", detail="go")
    for percent in (10, 20, 30):
        await update(processes, org, process.process_id, "progress", step="build", percent=percent)
    await update(processes, org, process.process_id, "step_completed", step="build", data={"n": 1})

    def page(after_seq: int, limit: int | None = None) -> Any:
        request = pb.ListProcessEventsRequest(process_id=process.process_id, after_seq=after_seq)
        if limit is not None:
            request.limit = limit
        return processes.ListProcessEvents(request, metadata=org.metadata(org.reader))

    everything = (await page(0)).events
    assert [(event.seq, event.type) for event in everything] == [
        (1, "step_started"),
        (2, "progress"),
        (3, "progress"),
        (4, "progress"),
        (5, "step_completed"),
    ]
    assert everything[0].detail == "go" and dict(everything[4].data) == {"n": 1}
    assert [event.seq for event in (await page(1, limit=2)).events] == [2, 3]
    assert (await page(5)).events == []


@pytest.mark.parametrize(
    ("after_seq", "limit", "problem"),
    [
        (-1, None, "after_seq: must be 0 or more, got -1"),
        (0, 0, "limit: must be between 1 and 1000, got 0"),
        (0, 1001, "limit: must be between 1 and 1000, got 1001"),
    ],
)
async def test_bad_event_paging_is_refused(
    processes: Stub, org: Org, after_seq: int, limit: int | None, problem: str
) -> None:
    process = await create(processes, org, "build")
    request = pb.ListProcessEventsRequest(process_id=process.process_id, after_seq=after_seq)
    if limit is not None:
        request.limit = limit
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await processes.ListProcessEvents(request, metadata=org.metadata())
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        problem,
    )


# --- the organization-wide stream ---------------------------------------------------------


def changes(messages: list[pb.WatchProcessesResponse]) -> list[tuple[str, str | None]]:
    """(process name, event type or None for a creation) of each change."""
    return [
        (message.process.name, message.event.type if message.HasField("event") else None)
        for message in messages
    ]


async def watch_org(stub: Stub, org: Org, **filters: str) -> Call:
    """An organization-wide stream, once its first heartbeat says it follows changes."""
    call = stub.WatchProcesses(pb.WatchProcessesRequest(**filters), metadata=org.metadata())
    assert (await read(call)).HasField("heartbeat")
    return call


async def named(stub: Stub, org: Org, name: str, namespace: str = "deployments") -> str:
    created = await stub.CreateProcess(
        pb.CreateProcessRequest(
            namespace=namespace, name=name, step_defs=[pb.StepDef(key="build", label="Build")]
        ),
        metadata=org.metadata(),
    )
    return created.process_id


async def test_the_organization_stream_carries_creations_and_events_of_its_own_org(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    call = await watch_org(processes, org)
    stranger = await server.new_org("other")
    await named(processes, stranger, "theirs")
    mine = await named(processes, org, "mine")
    await update(processes, org, mine, "step_started", step="build")
    await update(processes, org, mine, "completed")

    received = await read_until(call, lambda got: len(got) == 3)
    call.cancel()
    assert changes(received) == [("mine", None), ("mine", "step_started"), ("mine", "completed")]
    assert received[2].process.process_id == mine
    assert received[2].event.seq == 2


async def test_the_organization_stream_filters_by_namespace_and_status(
    processes: Stub, org: Org
) -> None:
    in_namespace = await watch_org(processes, org, namespace="ops")
    finished = await watch_org(processes, org, status="completed")
    ops = await named(processes, org, "ops run", namespace="ops")
    other = await named(processes, org, "other run")
    await update(processes, org, other, "completed")
    await update(processes, org, ops, "failed", error="no")
    last = await named(processes, org, "last", namespace="ops")
    await update(processes, org, last, "completed")

    namespaced = await read_until(in_namespace, lambda got: len(got) == 4)
    completed = await read_until(finished, lambda got: len(got) == 2)
    assert changes(namespaced) == [
        ("ops run", None),
        ("ops run", "failed"),
        ("last", None),
        ("last", "completed"),
    ]
    assert changes(completed) == [("other run", "completed"), ("last", "completed")]
    for call in (in_namespace, finished):
        call.cancel()


async def test_a_bad_organization_filter_is_refused(processes: Stub, org: Org) -> None:
    call = processes.WatchProcesses(
        pb.WatchProcessesRequest(status="paused"), metadata=org.metadata()
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await read(call)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("status: unknown value 'paused'")


# --- limits, shutdown and a lost listening connection, each on a server of its own ----------


@asynccontextmanager
async def own_server(
    database_url: str, **env: str
) -> AsyncIterator[tuple[InProcessServer, Stub, Org]]:
    async with (
        in_process_server(database_url, env=HEARTBEAT_ENV | env) as running,
        grpc.aio.insecure_channel(running.target) as channel,
    ):
        stub: Stub = pb_grpc.ProcessServiceStub(channel)
        yield running, stub, await running.new_org()


async def test_streams_past_the_limit_are_refused_until_one_ends(database_url: str) -> None:
    async with own_server(database_url, HTK_MAX_WATCHERS="2") as (_, stub, org):
        process = await create(stub, org, "build")
        first = watch(stub, org, process.process_id)
        second = stub.WatchProcesses(pb.WatchProcessesRequest(), metadata=org.metadata())
        assert await read(first) and await read(second)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await read(watch(stub, org, process.process_id))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "maximum of 2 streams" in (refused.value.details() or "")

        first.cancel()
        for _ in range(100):  # the server learns of the cancellation soon after
            try:
                assert await read(watch(stub, org, process.process_id))
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the ended stream still counts against the limit")
        second.cancel()


async def test_one_token_or_organization_cannot_take_every_stream(database_url: str) -> None:
    """The caps per token and per organization refuse, naming the cap, while
    another organization still gets a stream."""
    caps = {
        "HTK_WORKERS": "1",
        "HTK_MAX_WATCHERS": "10",
        "HTK_MAX_WATCHERS_PER_TOKEN": "2",
        "HTK_MAX_WATCHERS_PER_ORG": "3",
    }
    async with own_server(database_url, **caps) as (running, stub, org):
        process = await create(stub, org, "build")
        held = [watch(stub, org, process.process_id, token=org.reader) for _ in range(2)]
        held.append(stub.WatchProcesses(pb.WatchProcessesRequest(), metadata=org.metadata()))
        for call in held:
            assert await read(call)

        async def refusal(call: Call) -> str:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await read(call)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            return refused.value.details() or ""

        assert "maximum of 2 streams on this server process (the limit per token)" in (
            await refusal(watch(stub, org, process.process_id, token=org.reader))
        )
        assert "maximum of 3 streams on this server process (the limit per organization)" in (
            await refusal(watch(stub, org, process.process_id))
        )
        stranger = await running.new_org("other")
        theirs = await create(stub, stranger, "build")
        assert (await read(watch(stub, stranger, theirs.process_id))).HasField("process")
        for call in held:
            call.cancel()


def host_port(target: str) -> tuple[str, int]:
    host, port = target.rsplit(":", 1)
    return host, int(port)


def grpc_messages(data: bytes) -> list[bytes]:
    """The gRPC messages in a stream's DATA, each a 5-byte prefix and its bytes."""
    found = []
    while data:
        length = int.from_bytes(data[1:5], "big")
        found.append(data[5 : 5 + length])
        data = data[5 + length :]
    return found


async def until_accepted(open_stream: Callable[[], Call]) -> Call:
    """A stream opened once the server has a slot for it again (a cap is full meanwhile)."""
    async with asyncio.timeout(HANG_SECONDS):
        while True:
            call = open_stream()
            try:
                await read(call)
                return call
            except grpc.aio.AioRpcError as refused:
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                await asyncio.sleep(0.05)


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether the server logged nothing at ERROR or above: a client falling
    behind or leaving is normal."""
    return not [record for record in caplog.records if record.levelno >= logging.ERROR]


STALLING_ENV = {
    "HTK_WORKERS": "1",
    "HTK_WATCH_STALL_SECONDS": "1",
    # Its one slot is free again only once the stalled stream has ended.
    "HTK_MAX_WATCHERS_PER_TOKEN": "1",
}


async def test_a_client_that_stops_reading_is_ended_and_resumes_without_loss(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that grants HTTP/2 flow control for a few bytes and then
    stops reading: its stream ends once a write has waited the bound, which
    frees its slot; when it reads again it gets what was sent, then the
    status saying how to resume, and resuming loses nothing."""
    async with own_server(database_url, **STALLING_ENV) as (running, stub, org):
        process = await create(stub, org, "build")
        await update(stub, org, process.process_id, "step_started", step="build")
        for percent in (10, 20, 30):
            await update(stub, org, process.process_id, "progress", step="build", percent=percent)
        request = pb.WatchProcessRequest(process_id=process.process_id, after_seq=0)
        stalled = raw_h2.grpc_call(
            host_port(running.target),
            "/htk.processes.v1.ProcessService/WatchProcess",
            request.SerializeToString(),
            org.metadata(org.reader),
            window=64,  # room for one event
        )
        with stalled:
            incoming = raw_h2.frames(stalled)
            # The stream has begun (what fits the window follows the headers).
            started = await asyncio.to_thread(raw_h2.response_headers, incoming)
            assert not started.flags & raw_h2.END_STREAM, started
            # The token's one slot, held by the stalled stream until it ends.
            resumed = await until_accepted(
                lambda: watch(stub, org, process.process_id, after_seq=4, token=org.reader)
            )
            resumed.cancel()

            raw_h2.grant(stalled, 1 << 20)
            data, trailers = await asyncio.to_thread(raw_h2.response, incoming)

        received = [pb.WatchProcessResponse.FromString(raw) for raw in grpc_messages(data)]
        assert b"grpc-status\x018" in trailers  # RESOURCE_EXHAUSTED
        assert (
            b"the client read no message for 1 s and fell behind; the stream ended:"
            b" watch again with after_seq set to the last seq received"
        ) in trailers
        got = seqs(received)
        # What fitted the window, then what was being written when it stalled.
        assert got and got == list(range(1, len(got) + 1))
        call = watch(stub, org, process.process_id, after_seq=got[-1])
        await update(stub, org, process.process_id, "completed")
        assert got + seqs(await rest_of(call)) == [1, 2, 3, 4, 5]
    assert no_errors_logged(caplog)


async def test_an_organization_stream_whose_client_stops_reading_is_ended(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with own_server(database_url, **STALLING_ENV) as (running, stub, org):
        stalled = raw_h2.grpc_call(
            host_port(running.target),
            "/htk.processes.v1.ProcessService/WatchProcesses",
            b"",
            org.metadata(org.reader),
            window=8,  # less than the first heartbeat
        )
        with stalled:
            started = await asyncio.to_thread(raw_h2.response_headers, raw_h2.frames(stalled))
            assert not started.flags & raw_h2.END_STREAM, started
            # Accepted once the stalled stream has given its slot back.
            call = await until_accepted(
                lambda: stub.WatchProcesses(
                    pb.WatchProcessesRequest(), metadata=org.metadata(org.reader)
                )
            )
            call.cancel()
        # It goes away before its stream's status could be sent.
    assert no_errors_logged(caplog)


async def test_shutdown_ends_streams_with_an_in_band_error(database_url: str) -> None:
    async with own_server(database_url) as (running, stub, org):
        process = await create(stub, org, "build")
        call = watch(stub, org, process.process_id)
        assert (await read(call)).HasField("process")

        stopping = asyncio.create_task(running.server.stop())
        last = await rest_of(call)
        await stopping

    assert [message.WhichOneof("kind") for message in last] == ["error"]
    assert last[0].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "shutting down" in last[0].error.message
    assert await call.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_lost_listening_connection_loses_no_event(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with own_server(database_url) as (running, stub, org):
        process = await create(stub, org, "build")
        await update(stub, org, process.process_id, "step_started", step="build")
        per_process = watch(stub, org, process.process_id, after_seq=1)
        assert (await read(per_process)).HasField("heartbeat")
        organization = await watch_org(stub, org)

        # The listener may not reconnect until the update below is committed:
        # its notification then reaches no one on this server.
        reconnect = asyncio.Event()
        connect = running.database.dedicated_connection

        async def held_back(application_name: str) -> psycopg.AsyncConnection[Any]:
            await reconnect.wait()
            return await connect(application_name)

        monkeypatch.setattr(running.database, "dedicated_connection", held_back)
        listener = running.server.listener
        assert listener.backend_pid is not None
        async with running.database.transaction(isolation="AUTOCOMMIT") as connection:
            await connection.exec_driver_sql(f"SELECT pg_terminate_backend({listener.backend_pid})")

        # The organization-wide stream cannot replay what it missed: it ends.
        (ended,) = await rest_of(organization)
        assert ended.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert await organization.code() == grpc.StatusCode.UNAVAILABLE
        await update(stub, org, process.process_id, "progress", step="build", percent=50)
        reconnect.set()

        # Reconnected, the server has every process watcher read its log again.
        received = await read_until(per_process, lambda got: len(got) == 1)
        assert seqs(received) == [2]
        assert received[0].event.percent == 50
        per_process.cancel()
