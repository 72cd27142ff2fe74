"""Who did what, read back through the API: each event's actor (in the event
pages and both watch streams) and each process's created_by (Get and List)."""

from datetime import timedelta

import grpc
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_grpc
from server.domain.errors import InvalidArgument
from server.domain.processes import utc_now
from server.domain.tokens import parse_scopes
from server.service.deadlines import DeadlineService
from server.service.tokens import TokenService
from tests.service.calls import Stub
from tests.service.test_watch import read_until, rest_of, watch_org
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org


@pytest.fixture
def tasks(channel: grpc.aio.Channel) -> "tasks_grpc.TaskServiceAsyncStub":
    return tasks_grpc.TaskServiceStub(channel)  # typed as the async stub for an aio channel


async def _pipeline(server: InProcessServer, org: Org) -> str:
    return await server.token(org.org_id, "processes:write", name="ci-pipeline")


async def test_get_and_list_name_the_token_that_created_the_process(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    pipeline = await _pipeline(server, org)
    created = await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="deployments", name="Deploy", step_defs=[pb.StepDef(key="b", label="B")]
        ),
        metadata=org.metadata(pipeline),
    )
    assert created.created_by == "ci-pipeline"
    read = pb.GetProcessRequest(process_id=created.process_id)
    assert (await processes.GetProcess(read, metadata=org.metadata(org.reader))).created_by == (
        "ci-pipeline"
    )
    listed = await processes.ListProcesses(pb.ListProcessesRequest(), metadata=org.metadata())
    assert [summary.created_by for summary in listed.processes] == ["ci-pipeline"]


async def test_every_event_names_who_caused_it_in_pages_and_in_the_replayed_watch(
    server: InProcessServer,
    processes: Stub,
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
) -> None:
    pipeline = await _pipeline(server, org)
    alice = await server.token(org.org_id, "tasks:complete", name="alice")
    created = await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="deployments",
            name="Gated deploy",
            step_defs=[
                pb.StepDef(key="build", label="Build", timeout_seconds=30),
                pb.StepDef(key="review", label="Review", human=True),
            ],
        ),
        metadata=org.metadata(pipeline),
    )
    process_id = created.process_id

    async def update(kind: str, step: str | None = None) -> None:
        request = pb.UpdateProcessRequest(process_id=process_id, type=kind, step=step)
        await processes.UpdateProcess(request, metadata=org.metadata(pipeline))

    await update("step_started", step="build")
    server.clock.now = utc_now() + timedelta(seconds=31)
    await DeadlineService(server.database, server.clock).enforce()
    server.clock.now = None
    await update("step_started", step="review")
    await tasks.CompleteTask(
        tasks_pb.CompleteTaskRequest(task_id=created.task_ids[0], outcome="approved"),
        metadata=org.metadata(alice),
    )
    await update("completed")
    expected = [
        ("step_started", "ci-pipeline"),
        ("step_timed_out", "htk"),
        ("step_started", "ci-pipeline"),
        ("task_completed", "alice"),
        ("completed", "ci-pipeline"),
    ]

    page = await processes.ListProcessEvents(
        pb.ListProcessEventsRequest(process_id=process_id), metadata=org.metadata(org.reader)
    )
    assert [(event.type, event.actor) for event in page.events] == expected
    replayed = await rest_of(
        processes.WatchProcess(
            pb.WatchProcessRequest(process_id=process_id, after_seq=0), metadata=org.metadata()
        )
    )
    assert [(message.event.type, message.event.actor) for message in replayed] == expected


async def test_the_organization_stream_names_who_caused_each_change(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    pipeline = await _pipeline(server, org)
    call = await watch_org(processes, org)
    created = await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="deployments", name="Deploy", step_defs=[pb.StepDef(key="b", label="B")]
        ),
        metadata=org.metadata(pipeline),
    )
    await processes.UpdateProcess(
        pb.UpdateProcessRequest(process_id=created.process_id, type="step_started", step="b"),
        metadata=org.metadata(pipeline),
    )
    received = await read_until(call, lambda messages: len(messages) == 2)
    call.cancel()
    assert [message.process.created_by for message in received] == ["ci-pipeline"] * 2
    assert not received[0].HasField("event")  # the creation
    assert received[1].event.actor == "ci-pipeline"


async def test_no_token_may_be_named_as_htk_itself(server: InProcessServer, org: Org) -> None:
    tokens = TokenService(server.database, server.clock)
    with pytest.raises(InvalidArgument, match="htk's own name"):
        await tokens.create(org.org_id, "HTK", parse_scopes("processes:write"))
