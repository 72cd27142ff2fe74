"""Finishing and cancelling processes in process, over real PostgreSQL: the
steps in every state end cleanly, read back through Get, List (`status`
filter and exact total), the events, WatchProcess and WatchProcesses; the
human steps' tasks are cancelled; CancelProcess's refusals and retries."""

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import json_format

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_grpc
from tests.service.calls import Stub, update
from tests.service.test_watch import read, read_until, rest_of, watch, watch_org
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FINISH = START + timedelta(seconds=90)
STEPS = [
    pb.StepDef(key="build", label="Build"),
    pb.StepDef(key="broken", label="Broken"),
    pb.StepDef(key="deploy", label="Deploy", timeout_seconds=600),
    pb.StepDef(key="review", label="Review", human=True),
    pb.StepDef(key="smoke", label="Smoke"),
]
# How each step reads once its process finished, whichever way it did.
ENDED = {
    "build": "completed",
    "broken": "failed",
    "deploy": "cancelled",
    "review": "skipped",
    "smoke": "skipped",
}


@pytest.fixture
def tasks(channel: grpc.aio.Channel) -> "tasks_grpc.TaskServiceAsyncStub":
    return tasks_grpc.TaskServiceStub(channel)  # typed as the async stub for an aio channel


async def started(server: InProcessServer, processes: Stub, org: Org) -> pb.Process:
    """A process with a completed, a failed, a running and two pending steps
    (one of them human, its task pending), at START."""
    server.clock.now = START
    process = await processes.CreateProcess(
        pb.CreateProcessRequest(namespace="releases", name="Release", step_defs=STEPS),
        metadata=org.metadata(),
    )
    for kind, fields in [
        ("step_started", {"step": "build"}),
        ("step_completed", {"step": "build"}),
        ("step_started", {"step": "broken"}),
        ("step_failed", {"step": "broken", "error": "flaky"}),
        ("step_started", {"step": "deploy"}),
    ]:
        server.clock.now += timedelta(seconds=10)
        await update(processes, org, process.process_id, kind, **fields)
    server.clock.now = FINISH
    return process


async def cancel(
    processes: Stub, org: Org, process_id: str, reason: str | None = None, **metadata: str
) -> pb.Process:
    request = pb.CancelProcessRequest(process_id=process_id, reason=reason)
    return await processes.CancelProcess(
        request, metadata=(*org.metadata(metadata.pop("token", None)), *metadata.items())
    )


async def get(processes: Stub, org: Org, process_id: str) -> pb.Process:
    return await processes.GetProcess(
        pb.GetProcessRequest(process_id=process_id), metadata=org.metadata()
    )


def timeline(process: pb.Process) -> dict[str, tuple[str, datetime | None, float | None]]:
    return {
        entry.step: (
            entry.status,
            entry.completed_at.ToDatetime(UTC) if entry.HasField("completed_at") else None,
            entry.duration_ms if entry.HasField("duration_ms") else None,
        )
        for entry in process.timeline
    }


@pytest.mark.parametrize(
    ("finish", "status"),
    [
        ({"type": "completed", "summary": "shipped"}, "completed"),
        ({"type": "failed", "error": "gave up"}, "failed"),
        ({}, "cancelled"),
    ],
    ids=["completed", "failed", "cancelled"],
)
async def test_every_step_has_ended_however_the_process_finishes(
    server: InProcessServer,
    processes: Stub,
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    finish: dict[str, str],
    status: str,
) -> None:
    process = await started(server, processes, org)
    if finish:
        kind = finish.pop("type")
        await update(processes, org, process.process_id, kind, **finish)
    else:
        await cancel(processes, org, process.process_id)

    read_back = await get(processes, org, process.process_id)
    assert (read_back.status, read_back.finished_at.ToDatetime(UTC)) == (status, FINISH)
    assert timeline(read_back) == {
        "build": ("completed", START + timedelta(seconds=20), 10_000.0),
        # A failed step ended when it failed, and shows how long it ran.
        "broken": ("failed", START + timedelta(seconds=40), 10_000.0),
        "deploy": ("cancelled", FINISH, 40_000.0),
        "review": ("skipped", FINISH, None),
        "smoke": ("skipped", FINISH, None),
    }
    assert {entry.step: entry.status for entry in read_back.timeline} == ENDED
    assert read_back.current_step == "deploy"
    (task_id,) = read_back.task_ids
    task = await tasks.GetTask(tasks_pb.GetTaskRequest(task_id=task_id), metadata=org.metadata())
    assert task.status == "cancelled"


async def test_a_cancel_reads_back_through_get_list_events_and_both_watches(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    organization = await watch_org(processes, org, status="cancelled")
    process = await started(server, processes, org)
    other = await started(server, processes, org)
    await update(processes, org, other.process_id, "completed")
    watching = watch(processes, org, process.process_id, after_seq=5)

    cancelled = await cancel(processes, org, process.process_id, "superseded by v2")

    assert (cancelled.status, cancelled.reason, cancelled.seq) == (
        "cancelled",
        "superseded by v2",
        6,
    )
    assert cancelled == await get(processes, org, process.process_id)
    listed = await processes.ListProcesses(
        pb.ListProcessesRequest(status="cancelled"), metadata=org.metadata()
    )
    assert listed.total == 1
    assert [(p.process_id, p.status) for p in listed.processes] == [
        (process.process_id, "cancelled")
    ]
    events = await processes.ListProcessEvents(
        pb.ListProcessEventsRequest(process_id=process.process_id, after_seq=5),
        metadata=org.metadata(),
    )
    (event,) = events.events
    caller = await processes.GetCaller(pb.GetCallerRequest(), metadata=org.metadata())
    assert json_format.MessageToDict(event, preserving_proto_field_name=True) == {
        "seq": 6,
        "type": "cancelled",
        "timestamp": FINISH.isoformat().replace("+00:00", "Z"),
        "reason": "superseded by v2",
        # Who cancelled: the token that called CancelProcess.
        "actor": caller.token_name,
    }
    # The watch ends after the event that finished the process.
    streamed = await rest_of(watching)
    assert [message.event for message in streamed] == [event]
    assert await watching.code() == grpc.StatusCode.OK
    (change,) = await read_until(organization, lambda got: len(got) == 1)
    assert (change.process.process_id, change.process.status, change.event) == (
        process.process_id,
        "cancelled",
        event,
    )
    organization.cancel()


async def test_a_watch_of_a_cancelled_process_ends_after_its_snapshot(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await started(server, processes, org)
    await cancel(processes, org, process.process_id)

    call = watch(processes, org, process.process_id)
    (snapshot,) = await rest_of(call)
    assert snapshot.process.status == "cancelled"
    assert await call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("finish", ["completed", "failed", "cancelled"])
async def test_a_finished_process_cannot_be_cancelled_and_the_status_is_named(
    server: InProcessServer, processes: Stub, org: Org, finish: str
) -> None:
    process = await started(server, processes, org)
    if finish == "cancelled":
        await cancel(processes, org, process.process_id)
    elif finish == "failed":
        await update(processes, org, process.process_id, finish, error="x")
    else:
        await update(processes, org, process.process_id, finish)
    before = await get(processes, org, process.process_id)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cancel(processes, org, process.process_id, "again")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"has already {finish}" in (refused.value.details() or "")
    assert await get(processes, org, process.process_id) == before


async def test_a_cancelled_process_accepts_no_more_updates(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await started(server, processes, org)
    await cancel(processes, org, process.process_id)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await update(processes, org, process.process_id, "completed")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has already cancelled" in (refused.value.details() or "")


async def test_cancel_needs_processes_write(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await started(server, processes, org)
    pipeline = await server.token(org.org_id, "tasks:create")

    for token in (org.reader, pipeline):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await cancel(processes, org, process.process_id, token=token)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await get(processes, org, process.process_id)).status == "running"


async def test_a_cancel_of_no_process_is_not_found(processes: Stub, org: Org) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cancel(processes, org, "00000000-0000-4000-8000-000000000000")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_blank_reason_is_refused_naming_it(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await started(server, processes, org)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cancel(processes, org, process.process_id, " ")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("reason: must not be blank")
    assert (await get(processes, org, process.process_id)).status == "running"


async def test_a_retried_cancel_with_its_key_returns_the_first_answer(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await started(server, processes, org)
    key = {"idempotency-key": f"cancel-{process.process_id}"}

    first = await cancel(processes, org, process.process_id, "stop", **key)
    retried = await cancel(processes, org, process.process_id, "stop", **key)

    assert retried == first
    events = await processes.ListProcessEvents(
        pb.ListProcessEventsRequest(process_id=process.process_id), metadata=org.metadata()
    )
    assert [event.type for event in events.events].count("cancelled") == 1
    assert (await read(watch(processes, org, process.process_id))).process == first
