"""The event log, checked in PostgreSQL, and concurrent updates over grpc.aio.

Each accepted update appends exactly one `process_events` row (seq 1, 2, ...)
in the transaction that changes the process; a rejected update writes nothing.
"""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import psycopg
import pytest
from google.protobuf import timestamp_pb2
from psycopg.rows import class_row

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.e2e.test_grpc import Stub, create, get, rpc_error, update
from tests.support.orgs import Org
from tests.support.stack import Stack

if TYPE_CHECKING:
    from htk.processes.v1.process_service_pb2_grpc import ProcessServiceAsyncStub

CONCURRENT_UPDATES = 40


class LoggedEvent(NamedTuple):
    seq: int
    type: str
    step: str | None
    payload: dict[str, Any]
    recorded_at: datetime


def event_log(stack: Stack, process_id: str) -> list[LoggedEvent]:
    with (
        psycopg.connect(stack.database_url) as connection,
        connection.cursor(row_factory=class_row(LoggedEvent)) as cursor,
    ):
        cursor.execute(
            "SELECT seq, type, step, payload, recorded_at FROM process_events"
            " WHERE process_id = %s ORDER BY seq",
            (process_id,),
        )
        return cursor.fetchall()


def moment(timestamp: timestamp_pb2.Timestamp) -> datetime:
    return timestamp.ToDatetime(tzinfo=UTC)


@pytest.fixture
async def aio_stub(stack: Stack) -> AsyncIterator["ProcessServiceAsyncStub"]:
    async with grpc.aio.insecure_channel(stack.envoy_target) as channel:
        yield pb_grpc.ProcessServiceStub(channel)


async def send(
    stub: "ProcessServiceAsyncStub", org: Org, process_id: str, kind: str, **fields: Any
) -> pb.UpdateProcessResponse:
    request = pb.UpdateProcessRequest(process_id=process_id, type=kind, **fields)
    return await stub.UpdateProcess(request, metadata=org.metadata())


# --- the event log -------------------------------------------------------------------

# (type, fields): the payload logged is the fields other than `step`.
ACCEPTED_UPDATES: list[tuple[str, dict[str, Any]]] = [
    ("step_started", {"step": "build", "detail": "runner 7"}),
    ("progress", {"step": "build", "message": "Compiling", "percent": 40}),
    ("progress", {"step": "build", "percent": 0}),  # zero, yet sent
    ("step_completed", {"step": "build", "data": {"tag": "v2", "replicas": 3, "ok": True}}),
    ("step_failed", {"step": "approve", "error": "rejected"}),
    ("step_started", {"step": "approve"}),
    ("step_completed", {"step": "approve", "detail": ""}),  # empty, yet sent
    ("completed", {"summary": "v2 is live"}),
]


def test_each_accepted_update_appends_one_event(grpc_stub: Stub, stack: Stack, org: Org) -> None:
    process_id = create(grpc_stub, org).process_id
    assert event_log(stack, process_id) == []

    logged: list[LoggedEvent] = []
    for seq, (kind, fields) in enumerate(ACCEPTED_UPDATES, start=1):
        acknowledged = update(grpc_stub, org, process_id, kind, **fields)
        payload = {name: value for name, value in fields.items() if name != "step"}
        step = fields.get("step")
        logged.append(LoggedEvent(seq, kind, step, payload, moment(acknowledged.timestamp)))
        assert event_log(stack, process_id) == logged, f"after update {seq} ({kind})"


# (updates that succeed first, the rejected update, its status code, its message)
REJECTIONS = [
    pytest.param(
        [],
        ("progress", {"step": "build", "percent": 5}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "step 'build' is pending; it cannot report progress",
        id="progress on a pending step",
    ),
    pytest.param(
        [("step_started", {"step": "build"})],
        ("step_started", {"step": "build"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "step 'build' is running; it cannot be started",
        id="start a running step",
    ),
    pytest.param(
        [("step_completed", {"step": "build"})],
        ("progress", {"step": "build", "message": "late"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "step 'build' is completed; it cannot report progress",
        id="progress on a completed step",
    ),
    pytest.param(
        [("step_started", {"step": "build"}), ("completed", {})],
        ("step_completed", {"step": "build"}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "process {id} has already completed; it accepts no more updates",
        id="update a completed process",
    ),
    pytest.param(
        [("failed", {"error": "boom"})],
        ("completed", {}),
        grpc.StatusCode.FAILED_PRECONDITION,
        "process {id} has already failed; it accepts no more updates",
        id="complete a failed process",
    ),
    pytest.param(
        [("step_started", {"step": "build"})],
        ("progress", {"step": "build", "percent": 101}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "percent: must be between 0 and 100, got 101",
        id="percent 101",
    ),
    pytest.param(
        [("step_started", {"step": "build"})],
        ("step_completed", {"step": "nope"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "step: 'nope' is not a step of this process (steps: build, approve, deploy)",
        id="unknown step",
    ),
]


@pytest.mark.parametrize(("prior", "rejected", "code", "message"), REJECTIONS)
def test_a_rejected_update_changes_nothing(
    grpc_stub: Stub,
    stack: Stack,
    org: Org,
    prior: list[tuple[str, dict[str, Any]]],
    rejected: tuple[str, dict[str, Any]],
    code: grpc.StatusCode,
    message: str,
) -> None:
    process_id = create(grpc_stub, org).process_id
    for kind, fields in prior:
        update(grpc_stub, org, process_id, kind, **fields)
    before = (get(grpc_stub, org, process_id), event_log(stack, process_id))
    assert len(before[1]) == len(prior)

    kind, fields = rejected
    error = rpc_error(code, lambda: update(grpc_stub, org, process_id, kind, **fields))
    assert error.details() == message.format(id=process_id)
    assert (get(grpc_stub, org, process_id), event_log(stack, process_id)) == before


def test_the_state_change_rolls_back_when_its_event_cannot_be_logged(
    grpc_stub: Stub, stack: Stack, org: Org
) -> None:
    process_id = create(grpc_stub, org).process_id
    update(grpc_stub, org, process_id, "step_started", step="build")
    before = get(grpc_stub, org, process_id)
    # Taking seq 2 makes the server's event insert, its last write, fail.
    with psycopg.connect(stack.database_url) as connection:
        connection.execute(
            "INSERT INTO process_events (process_id, seq, type, payload, recorded_at)"
            " VALUES (%s, 2, 'squatter', '{}', now())",
            (process_id,),
        )

    def complete_build() -> pb.UpdateProcessResponse:
        return update(grpc_stub, org, process_id, "step_completed", step="build")

    assert rpc_error(grpc.StatusCode.INTERNAL, complete_build).details() == "internal error"
    assert get(grpc_stub, org, process_id) == before

    with psycopg.connect(stack.database_url) as connection:
        connection.execute(
            "DELETE FROM process_events WHERE process_id = %s AND seq = 2", (process_id,)
        )
    completed = complete_build()
    assert [(event.seq, event.type) for event in event_log(stack, process_id)] == [
        (1, "step_started"),
        (2, "step_completed"),
    ]
    assert get(grpc_stub, org, process_id).timeline[0].completed_at == completed.timestamp


# --- concurrent updates ----------------------------------------------------------------


async def test_concurrent_progress_updates_are_all_applied_in_log_order(
    grpc_stub: Stub, aio_stub: "ProcessServiceAsyncStub", stack: Stack, org: Org
) -> None:
    process_id = create(grpc_stub, org).process_id
    update(grpc_stub, org, process_id, "step_started", step="build")
    percents = range(1, CONCURRENT_UPDATES + 1)

    responses = await asyncio.gather(
        *(
            send(aio_stub, org, process_id, "progress", step="build", message=f"#{p}", percent=p)
            for p in percents
        )
    )

    log = event_log(stack, process_id)
    assert [event.seq for event in log] == list(range(1, CONCURRENT_UPDATES + 2))
    assert [event.type for event in log] == ["step_started"] + ["progress"] * CONCURRENT_UPDATES
    by_percent = {event.payload["percent"]: event for event in log[1:]}
    assert sorted(by_percent) == list(percents)  # each update logged exactly once
    for percent, response in zip(percents, responses, strict=True):
        event = by_percent[percent]
        assert (event.step, event.payload) == (
            "build",
            {"message": f"#{percent}", "percent": percent},
        )
        assert (response.update_type, moment(response.timestamp)) == ("progress", event.recorded_at)
    recorded = [event.recorded_at for event in log]
    assert recorded == sorted(recorded)  # recorded in the order applied

    last = log[-1].payload
    build = get(grpc_stub, org, process_id).timeline[0]
    assert (build.progress_percent, build.progress_message) == (last["percent"], last["message"])


async def test_concurrent_updates_of_several_processes_stay_apart(
    grpc_stub: Stub, aio_stub: "ProcessServiceAsyncStub", stack: Stack, org: Org
) -> None:
    process_ids = [create(grpc_stub, org, name=f"Run {n}").process_id for n in range(5)]
    for process_id in process_ids:
        update(grpc_stub, org, process_id, "step_started", step="deploy")
    # Interleaved: the first update of each process, then the second of each, ...
    updates = [(process_id, f"{process_id}/{n}") for n in range(8) for process_id in process_ids]

    await asyncio.gather(
        *(
            send(aio_stub, org, process_id, "progress", step="deploy", message=text)
            for process_id, text in updates
        )
    )

    for process_id in process_ids:
        log = event_log(stack, process_id)
        assert [event.seq for event in log] == list(range(1, 10))
        assert {event.payload.get("message") for event in log[1:]} == {
            f"{process_id}/{n}" for n in range(8)
        }
        deploy = get(grpc_stub, org, process_id).timeline[2]
        assert deploy.progress_message == log[-1].payload["message"]


@pytest.mark.parametrize(
    "contender",
    [("completed", {"summary": "second"}), ("failed", {"error": "second"})],
    ids=["completed", "failed"],
)
async def test_of_two_concurrent_finishes_exactly_one_wins(
    grpc_stub: Stub,
    aio_stub: "ProcessServiceAsyncStub",
    stack: Stack,
    org: Org,
    contender: tuple[str, dict[str, str]],
) -> None:
    # Several processes at once, to make real races likely.
    process_ids = [create(grpc_stub, org, name=f"Run {n}").process_id for n in range(5)]
    finishes = [("completed", {"summary": "first"}), contender]

    outcomes = await asyncio.gather(
        *(
            send(aio_stub, org, process_id, kind, **fields)
            for process_id in process_ids
            for kind, fields in finishes
        ),
        return_exceptions=True,
    )

    for index, process_id in enumerate(process_ids):
        pair = outcomes[2 * index : 2 * index + 2]
        (won,) = [outcome for outcome in pair if isinstance(outcome, pb.UpdateProcessResponse)]
        (lost,) = [outcome for outcome in pair if isinstance(outcome, grpc.aio.AioRpcError)]
        kind, fields = finishes[pair.index(won)]
        assert won.update_type == kind
        assert lost.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert (
            lost.details() == f"process {process_id} has already {kind}; it accepts no more updates"
        )
        process = get(grpc_stub, org, process_id)
        assert (process.status, process.finished_at) == (kind, won.timestamp)
        ending = {f.name: v for f, v in process.ListFields() if f.name in ("summary", "error")}
        assert ending == fields
        assert event_log(stack, process_id) == [
            LoggedEvent(1, kind, None, fields, moment(won.timestamp))
        ]
