"""ProcessService in process: the servicer, guards, services and storage over
real PostgreSQL, with the clock under the test's control."""

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import text

from htk.processes.v1 import process_service_pb2 as pb
from tests.service.calls import Stub, create, update
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_times_come_from_the_services_clock(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    server.clock.now = START
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    server.clock.now = START + timedelta(seconds=90)
    await update(processes, org, process.process_id, "step_completed", step="build")
    await update(processes, org, process.process_id, "completed")

    stored = await processes.GetProcess(
        pb.GetProcessRequest(process_id=process.process_id), metadata=org.metadata()
    )
    assert stored.started_at.ToDatetime(UTC) == START
    assert stored.finished_at.ToDatetime(UTC) == START + timedelta(seconds=90)
    (build,) = stored.timeline
    assert (build.status, build.duration_ms) == ("completed", 90_000)


async def test_concurrent_updates_are_all_applied_and_logged(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    await asyncio.gather(
        *(
            update(processes, org, process.process_id, "progress", step="build", percent=percent)
            for percent in range(1, 41)
        )
    )
    async with server.database.transaction() as connection:
        logged = (
            (
                await connection.execute(
                    text("SELECT seq FROM process_events WHERE process_id = :id ORDER BY seq"),
                    {"id": process.process_id},
                )
            )
            .scalars()
            .all()
        )
    assert logged == list(range(1, 42))  # the start and 40 progress updates, none lost


async def test_an_idempotent_retry_replays_the_first_response(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    request = pb.CreateProcessRequest(
        namespace="deployments", name="Once", step_defs=[pb.StepDef(key="a", label="A")]
    )
    metadata = (*org.metadata(), ("idempotency-key", "deploy-42"))
    first, again = [await processes.CreateProcess(request, metadata=metadata) for _ in range(2)]
    assert first == again
    page = await processes.ListProcesses(pb.ListProcessesRequest(), metadata=org.metadata())
    assert page.total == 1

    request.name = "Another"
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await processes.CreateProcess(request, metadata=metadata)
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_another_organizations_process_is_not_found(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await create(processes, org, "build")
    stranger = await server.new_org("other")
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await processes.GetProcess(
            pb.GetProcessRequest(process_id=process.process_id), metadata=stranger.metadata()
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
