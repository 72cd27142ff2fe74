"""ProcessService in process: the servicer, guards, services and storage over
real PostgreSQL, with the clock under the test's control."""

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import text

from htk.processes.v1 import process_service_pb2 as pb
from server.domain.processes import MAX_EVENTS_PAGE_BYTES
from server.storage import processes as storage_processes
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


async def _progress_log(processes: Stub, org: Org, count: int, message: str) -> str:
    """A finished process whose log holds a start, `count` progress events
    carrying `message`, and its completion."""
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    for _ in range(count):
        await update(processes, org, process.process_id, "progress", step="build", message=message)
    await update(processes, org, process.process_id, "completed")
    return process.process_id


async def _pages(processes: Stub, org: Org, process_id: str) -> list[list[int]]:
    """The seqs of each page of the log, paged on `after_seq` until a page is empty."""
    pages: list[list[int]] = []
    after_seq = 0
    for _ in range(100):
        page = await processes.ListProcessEvents(
            pb.ListProcessEventsRequest(process_id=process_id, after_seq=after_seq, limit=1000),
            metadata=org.metadata(org.reader),
        )
        assert page.ByteSize() < MAX_EVENTS_PAGE_BYTES + 64 * 1024
        if not page.events:
            return pages
        pages.append([event.seq for event in page.events])
        after_seq = page.events[-1].seq
    raise AssertionError("paging did not end")


async def test_an_event_page_is_cut_at_its_byte_budget_and_paging_gets_every_event_once(
    processes: Stub, org: Org
) -> None:
    # 40 events of 20,000 bytes each (10,000 two-byte characters): about 800 KB.
    process_id = await _progress_log(processes, org, 40, "é" * 10_000)
    pages = await _pages(processes, org, process_id)
    assert len(pages) > 1
    assert all(len(page) < 42 for page in pages)
    assert [seq for page in pages for seq in page] == list(range(1, 43))


async def test_a_page_always_holds_its_first_event_and_watch_catch_up_reads_on(
    processes: Stub, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even an event larger than the budget alone makes progress: a budget of
    one byte makes one event a page, and a watch catching up reads page after page."""
    monkeypatch.setattr(storage_processes, "MAX_EVENTS_PAGE_BYTES", 1)
    process_id = await _progress_log(processes, org, 5, "half way")
    assert await _pages(processes, org, process_id) == [[seq] for seq in range(1, 8)]
    watched = processes.WatchProcess(
        pb.WatchProcessRequest(process_id=process_id, after_seq=0),
        metadata=org.metadata(org.reader),
    )
    assert [message.event.seq async for message in watched] == list(range(1, 8))


async def test_a_write_failing_in_its_commits_round_trip_rolls_the_whole_update_back(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    """An Update's write travels with its COMMIT. An event row planted where
    the update's event goes makes that write fail there: the call fails, the
    idempotency key's claim and the process's change roll back together, and
    the connections serve the next calls."""
    process = await create(processes, org, "build")
    planted = text(
        "INSERT INTO process_events (process_id, seq, type, payload, recorded_at)"
        " VALUES (:id, 1, 'step_started', '{}', now())"
    )
    async with server.database.transaction() as connection:
        await connection.execute(planted, {"id": process.process_id})
    keyed = (*org.metadata(), ("idempotency-key", "start-build"))
    request = pb.UpdateProcessRequest(
        process_id=process.process_id, type="step_started", step="build"
    )
    # More than the pool's connections, so each of them goes through a failed commit.
    for _ in range(6):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await processes.UpdateProcess(request, metadata=keyed)
        assert failed.value.code() == grpc.StatusCode.INTERNAL

    unchanged = await processes.GetProcess(
        pb.GetProcessRequest(process_id=process.process_id), metadata=org.metadata()
    )
    assert (unchanged.seq, unchanged.timeline[0].status) == (0, "pending")

    async with server.database.transaction() as connection:
        await connection.execute(
            text("DELETE FROM process_events WHERE process_id = :id"), {"id": process.process_id}
        )
    applied = await processes.UpdateProcess(request, metadata=keyed)
    assert applied.seq == 1
    replayed = await processes.UpdateProcess(request, metadata=keyed)
    assert replayed == applied
    started = await processes.GetProcess(
        pb.GetProcessRequest(process_id=process.process_id), metadata=org.metadata()
    )
    assert (started.seq, started.timeline[0].status) == (1, "running")
