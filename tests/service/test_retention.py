"""Retention in process, over real PostgreSQL: passes of the service's own,
with a clock of their own, delete the finished processes expired at their
time in batches, archived first, and the API reads them as never there:
Get, events, List and its exact totals (status, labels), ListTasks' totals,
and an idempotency key's replay. Running processes stay; two passes at once
share nothing; a pass waits for no call's lock; an archive that cannot be
written deletes nothing.

The processes here finish in the year 2000, long before any other test's,
so that a pass whose cutoff lies in 2000 takes only them.
"""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from prometheus_client import REGISTRY

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_grpc
from server.domain.errors import Unavailable
from server.domain.retention import read_back
from server.service.retention import ArchiveTo, RetentionService
from server.storage.archive import read_lines
from server.storage.database import Database
from server.transport import messages
from tests.service.calls import Stub, update
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org

FINISHED_AT = datetime(2000, 1, 1, tzinfo=UTC)
RETENTION_DAYS = 30
# Just past the cutoff of what finished at FINISHED_AT (plus a test's few seconds).
EXPIRED_AT = FINISHED_AT + timedelta(days=RETENTION_DAYS, minutes=1)
LABELS = {"env": "retention"}


@pytest.fixture
def tasks(channel: grpc.aio.Channel) -> "tasks_grpc.TaskServiceAsyncStub":
    return tasks_grpc.TaskServiceStub(channel)  # typed as the async stub for an aio channel


def retention(
    server: InProcessServer,
    archive: Path | None,
    *,
    at: datetime = EXPIRED_AT,
    batch: int = 2,
    duty_cycle: float = 1,
    database: Database | None = None,
) -> RetentionService:
    return RetentionService(
        database or server.database,
        lambda: at,
        days=RETENTION_DAYS,
        batch_size=batch,
        duty_cycle=duty_cycle,
        archive_to=ArchiveTo(archive, messages.archived) if archive is not None else None,
    )


def files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def rest_json(message: Message) -> dict[str, object]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


async def create(
    server: InProcessServer, processes: Stub, org: Org, name: str, *, key: str | None = None
) -> pb.Process:
    server.clock.now = FINISHED_AT - timedelta(minutes=5)
    return await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="kept",
            name=name,
            labels=LABELS,
            step_defs=[
                pb.StepDef(key="build", label="Build"),
                pb.StepDef(key="review", label="Review", human=True),
            ],
        ),
        metadata=(*org.metadata(), *((("idempotency-key", key),) if key else ())),
    )


async def finished(
    server: InProcessServer, processes: Stub, org: Org, how: str, *, key: str | None = None
) -> pb.Process:
    """A process finished at FINISHED_AT: completed, failed or cancelled."""
    process = await create(server, processes, org, f"Run {how}", key=key)
    server.clock.now = FINISHED_AT - timedelta(minutes=1)
    await update(processes, org, process.process_id, "step_started", step="build")
    await update(processes, org, process.process_id, "step_completed", step="build", data={"n": 1})
    server.clock.now = FINISHED_AT
    if how == "cancelled":
        await processes.CancelProcess(
            pb.CancelProcessRequest(process_id=process.process_id, reason="superseded"),
            metadata=org.metadata(),
        )
    else:
        await update(
            processes,
            org,
            process.process_id,
            how,
            **{"error": "broken"} if how == "failed" else {},
        )
    return process


async def totals(
    processes: Stub, tasks: "tasks_grpc.TaskServiceAsyncStub", org: Org
) -> dict[str, int]:
    """Every exact total the API shows of the organization."""
    reader = org.metadata(org.reader)
    shown = {}
    for name, request in {
        "all": pb.ListProcessesRequest(),
        "running": pb.ListProcessesRequest(status="running"),
        "completed": pb.ListProcessesRequest(status="completed"),
        "failed": pb.ListProcessesRequest(status="failed"),
        "cancelled": pb.ListProcessesRequest(status="cancelled"),
        "labelled": pb.ListProcessesRequest(label=["env=retention"]),
        "searched": pb.ListProcessesRequest(search="run"),
        "namespace": pb.ListProcessesRequest(namespace=f"{org.org_id}.kept"),
    }.items():
        shown[name] = (await processes.ListProcesses(request, metadata=reader)).total
    for status in ("", "pending", "cancelled"):
        listed = await tasks.ListTasks(tasks_pb.ListTasksRequest(status=status), metadata=reader)
        shown[f"tasks {status or 'all'}"] = listed.total
    return shown


async def gone(processes: Stub, org: Org, process_id: str) -> bool:
    """Whether Get and the events both answer NOT_FOUND, as for any missing process."""
    reader = org.metadata(org.reader)
    calls = (
        processes.GetProcess(pb.GetProcessRequest(process_id=process_id), metadata=reader),
        processes.ListProcessEvents(
            pb.ListProcessEventsRequest(process_id=process_id), metadata=reader
        ),
    )
    codes = []
    for call in calls:
        try:
            await call
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
            assert error.details() == f"process {process_id} not found"
    assert len(set(codes)) == 1, codes
    return codes[0] is grpc.StatusCode.NOT_FOUND


async def test_expired_processes_are_archived_then_deleted_and_every_total_stays_exact(
    server: InProcessServer,
    processes: Stub,
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    tmp_path: Path,
) -> None:
    expiring = [
        await finished(server, processes, org, "completed", key=f"create-{org.org_id}"),
        await finished(server, processes, org, "failed"),
        await finished(server, processes, org, "cancelled"),
        await finished(server, processes, org, "completed"),
        await finished(server, processes, org, "completed"),
    ]
    # Older than any of them, and never finished.
    running = await create(server, processes, org, "Run forever")
    before = await totals(processes, tasks, org)
    shown = {}
    for process in expiring:
        got = await processes.GetProcess(
            pb.GetProcessRequest(process_id=process.process_id), metadata=org.metadata()
        )
        events = await processes.ListProcessEvents(
            pb.ListProcessEventsRequest(process_id=process.process_id), metadata=org.metadata()
        )
        shown[process.process_id] = (rest_json(got), [rest_json(e) for e in events.events])

    # A minute before the cutoff reaches them: nothing goes.
    assert (
        await retention(server, tmp_path, at=EXPIRED_AT - timedelta(minutes=2)).delete_expired()
        == 0
    )
    assert await retention(server, tmp_path, batch=2).delete_expired() == 5

    for process in expiring:
        assert await gone(processes, org, process.process_id)
    assert not await gone(processes, org, running.process_id)
    after = await totals(processes, tasks, org)
    assert after == {
        "all": before["all"] - 5,
        "running": before["running"],
        "completed": before["completed"] - 3,
        "failed": before["failed"] - 1,
        "cancelled": before["cancelled"] - 1,
        "labelled": before["labelled"] - 5,
        "searched": before["searched"] - 5,
        "namespace": before["namespace"] - 5,
        "tasks all": before["tasks all"] - 5,
        "tasks pending": before["tasks pending"],
        "tasks cancelled": before["tasks cancelled"] - 5,
    }
    assert after == {**after, "all": 1, "running": 1, "completed": 0, "tasks pending": 1}
    # The create's key went with its process: the same request again creates anew.
    again = await create(server, processes, org, "Run completed", key=f"create-{org.org_id}")
    assert again.process_id != expiring[0].process_id

    (archive_file,) = files(tmp_path)
    assert archive_file.name == "2000-01-31.jsonl.gz"
    records = read_back(read_lines(archive_file))
    assert {r["process"]["process_id"]: (r["process"], r["events"]) for r in records} == shown
    assert {r["archived_at"] for r in records} == {"2000-01-31T00:01:00Z"}


async def test_without_an_archive_folder_expired_processes_are_deleted_alone(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await finished(server, processes, org, "completed")
    assert await retention(server, None).delete_expired() == 1
    assert await gone(processes, org, process.process_id)


async def test_two_passes_at_once_never_take_the_same_process(
    server: InProcessServer, processes: Stub, org: Org, tmp_path: Path
) -> None:
    expiring = [await finished(server, processes, org, "completed") for _ in range(12)]
    passes = [retention(server, tmp_path, batch=1) for _ in range(3)]
    deleted = await asyncio.gather(*(each.delete_expired() for each in passes))
    # Until the pass's lock was free again, a second pass found it taken and stopped.
    assert sum(deleted) == 12, deleted
    lines = [line for path in files(tmp_path) for line in read_lines(path)]
    assert len(lines) == 12
    assert {r["process"]["process_id"] for r in read_back(lines)} == {
        p.process_id for p in expiring
    }


async def test_a_pass_rests_between_its_batches_in_proportion_to_their_work(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    # A backlog is worked off at a share of the time, leaving the calls the
    # CPU between batches: three full batches, each followed by a rest of 49
    # times its work at a duty cycle of 2%. Each batch's work includes its
    # delete, which the batch histogram times, so the pass lasts at least 49
    # times those deletes; without the rests it would last a few times them.
    for _ in range(3):
        await finished(server, processes, org, "completed")
    deletes = "htk_retention_batch_duration_seconds_sum"
    deletes_before = REGISTRY.get_sample_value(deletes) or 0.0
    began = asyncio.get_running_loop().time()
    assert await retention(server, None, batch=1, duty_cycle=0.02).delete_expired() == 3
    lasted = asyncio.get_running_loop().time() - began
    deleting = (REGISTRY.get_sample_value(deletes) or 0.0) - deletes_before
    assert deleting > 0
    assert lasted >= 49 * deleting, (lasted, deleting)


async def test_a_pass_skips_a_process_a_call_holds_and_takes_it_next_time(
    server: InProcessServer, processes: Stub, org: Org, database_url: str, tmp_path: Path
) -> None:
    held, free = [await finished(server, processes, org, "completed") for _ in range(2)]
    async with await psycopg.AsyncConnection.connect(database_url) as call:
        await call.execute(
            "SELECT FROM processes WHERE process_id = %s FOR UPDATE", (held.process_id,)
        )
        # No wait for the lock: a wait would outlast this bound by seconds (lock_timeout).
        async with asyncio.timeout(4):
            assert await retention(server, tmp_path).delete_expired() == 1
        assert await gone(processes, org, free.process_id)
        assert not await gone(processes, org, held.process_id)
    assert await retention(server, tmp_path).delete_expired() == 1
    assert await gone(processes, org, held.process_id)


async def test_an_archive_that_cannot_be_written_deletes_nothing(
    server: InProcessServer, processes: Stub, org: Org, tmp_path: Path
) -> None:
    process = await finished(server, processes, org, "completed")
    not_a_folder = tmp_path / "archive"
    not_a_folder.write_text("a file")
    with pytest.raises(Unavailable, match="the archive could not be written"):
        await retention(server, not_a_folder).delete_expired()
    assert not await gone(processes, org, process.process_id)
    assert await retention(server, tmp_path / "ok").delete_expired() == 1


async def test_a_pass_runs_on_a_pool_of_one_connection(
    server: InProcessServer, processes: Stub, org: Org, database_url: str, tmp_path: Path
) -> None:
    # HTK_DB_POOL_SIZE=1: the pass's lock has a connection of its own, so the
    # batches (and the worker's calls) still find the pooled one.
    process = await finished(server, processes, org, "completed")
    lone = Database(database_url, pool_size=1)
    try:
        async with asyncio.timeout(8):  # the pool's timeout (10 s) would fail first
            assert await retention(server, tmp_path, database=lone).delete_expired() == 1
    finally:
        await lone.close()
    assert await gone(processes, org, process.process_id)
