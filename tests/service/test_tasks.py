"""Tasks and step deadlines in process, with the clock under the test's control:
the races between completions, updates and timeouts have exactly one winner;
and the rules of completing and listing tasks, which need no Envoy to check."""

import asyncio
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_grpc
from server.domain.processes import utc_now
from server.service.deadlines import DeadlineService
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org


@pytest.fixture
async def approver(server: InProcessServer, org: Org) -> str:
    return await server.token(org.org_id, "tasks:complete", name="alice")


@pytest.fixture
def tasks(channel: grpc.aio.Channel) -> "tasks_grpc.TaskServiceAsyncStub":
    return tasks_grpc.TaskServiceStub(channel)  # typed as the async stub for an aio channel


async def _open_review(
    processes: "pb_grpc.ProcessServiceAsyncStub", org: Org, timeout_seconds: int = 60
) -> tuple[str, str]:
    """A process whose human step is open, with a deadline; its id and its task's."""
    process = await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="deployments",
            name="Gated deploy",
            step_defs=[
                pb.StepDef(
                    key="review", label="Review", human=True, timeout_seconds=timeout_seconds
                )
            ],
        ),
        metadata=org.metadata(),
    )
    await processes.UpdateProcess(
        pb.UpdateProcessRequest(process_id=process.process_id, type="step_started", step="review"),
        metadata=org.metadata(),
    )
    return process.process_id, process.task_ids[0]


async def _events(server: InProcessServer, process_id: str) -> list[str]:
    async with server.database.transaction() as connection:
        rows = await connection.execute(
            text("SELECT type FROM process_events WHERE process_id = :id ORDER BY seq"),
            {"id": process_id},
        )
        return list(rows.scalars())


async def test_racing_deadline_enforcers_time_a_step_out_exactly_once(
    server: InProcessServer, processes: "pb_grpc.ProcessServiceAsyncStub", org: Org
) -> None:
    process_id, _ = await _open_review(processes, org, timeout_seconds=30)
    server.clock.now = utc_now() + timedelta(seconds=31)
    enforcers = [DeadlineService(server.database, server.clock) for _ in range(4)]
    await asyncio.gather(*(enforcer.enforce() for enforcer in enforcers))
    # The server's own enforcer may have come first; together, one timeout.
    assert (await _events(server, process_id)).count("step_timed_out") == 1


async def test_a_step_is_not_timed_out_before_its_deadline(
    server: InProcessServer, processes: "pb_grpc.ProcessServiceAsyncStub", org: Org
) -> None:
    process_id, _ = await _open_review(processes, org, timeout_seconds=30)
    server.clock.now = utc_now() + timedelta(seconds=29)
    await DeadlineService(server.database, server.clock).enforce()
    assert "step_timed_out" not in await _events(server, process_id)


@pytest.mark.parametrize("attempt", range(3))
async def test_a_completion_racing_a_timeout_has_one_winner(
    server: InProcessServer,
    processes: "pb_grpc.ProcessServiceAsyncStub",
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    approver: str,
    attempt: int,
) -> None:
    process_id, task_id = await _open_review(processes, org, timeout_seconds=30)
    server.clock.now = utc_now() + timedelta(seconds=31)

    async def complete() -> grpc.StatusCode:
        try:
            await tasks.CompleteTask(
                tasks_pb.CompleteTaskRequest(task_id=task_id, outcome="approved"),
                metadata=org.metadata(approver),
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    completed, _ = await asyncio.gather(
        complete(), DeadlineService(server.database, server.clock).enforce()
    )
    await DeadlineService(server.database, server.clock).enforce()  # whatever was left
    events = await _events(server, process_id)
    task = await tasks.GetTask(tasks_pb.GetTaskRequest(task_id=task_id), metadata=org.metadata())
    if completed == grpc.StatusCode.OK:
        assert (task.status, events[-1]) == ("completed", "task_completed")
        assert "step_timed_out" not in events
    else:
        assert completed == grpc.StatusCode.FAILED_PRECONDITION
        assert (task.status, events[-1]) == ("expired", "step_timed_out")
        assert "task_completed" not in events


async def test_an_update_refreshes_a_machine_steps_deadline(
    server: InProcessServer, processes: "pb_grpc.ProcessServiceAsyncStub", org: Org
) -> None:
    start = utc_now()
    server.clock.now = start
    process = await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="deployments",
            name="Slow build",
            step_defs=[pb.StepDef(key="build", label="Build", timeout_seconds=30)],
        ),
        metadata=org.metadata(),
    )
    for kind, fields in (("step_started", {}), ("progress", {"percent": 50})):
        await processes.UpdateProcess(
            pb.UpdateProcessRequest(
                process_id=process.process_id,
                type=kind,
                step="build",
                **fields,  # type: ignore[arg-type]
            ),
            metadata=org.metadata(),
        )
        server.clock.now += timedelta(seconds=20)
    # 40 s after the start, but 20 s after the last update: still within 30 s.
    await DeadlineService(server.database, server.clock).enforce()
    assert "step_timed_out" not in await _events(server, process.process_id)
    server.clock.now += timedelta(seconds=11)
    await DeadlineService(server.database, server.clock).enforce()
    assert (await _events(server, process.process_id))[-1] == "step_timed_out"


async def test_a_completion_whose_comment_would_overfill_the_process_is_refused(
    processes: "pb_grpc.ProcessServiceAsyncStub",
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    approver: str,
) -> None:
    """100 human steps, each approved with a 10,000-character comment of
    four-byte characters, once took a process to 4.8 MB (issue 18)."""
    comment = "\U0001d11e" * 10_000  # 40,000 bytes
    process = await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="deployments",
            name="Many gates",
            step_defs=[pb.StepDef(key=f"g{n}", label=f"Gate {n}", human=True) for n in range(20)],
        ),
        metadata=org.metadata(),
    )
    refused = None
    for step, task_id in zip(process.step_defs, process.task_ids, strict=True):
        await processes.UpdateProcess(
            pb.UpdateProcessRequest(
                process_id=process.process_id, type="step_started", step=step.key
            ),
            metadata=org.metadata(),
        )
        request = tasks_pb.CompleteTaskRequest(task_id=task_id, outcome="approved", comment=comment)
        try:
            await tasks.CompleteTask(request, metadata=org.metadata(approver))
        except grpc.aio.AioRpcError as error:
            refused = error
            break
    assert refused is not None, "20 comments of 40,000 bytes fit in 512 KiB"
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (refused.details() or "").startswith("comment: the process would hold")
    task = await tasks.GetTask(tasks_pb.GetTaskRequest(task_id=task_id), metadata=org.metadata())
    assert task.status == "open"
    stored = await processes.GetProcess(
        pb.GetProcessRequest(process_id=process.process_id), metadata=org.metadata()
    )
    assert stored.ByteSize() < 600 * 1024


# --- the rules of completing and listing tasks (moved here from tests/e2e/test_tasks.py,
# which keeps one test per path and shape through Envoy) ---

APPROVER = "alice@acme"
REVIEW_STEPS = [
    pb.StepDef(key="build", label="Build"),
    pb.StepDef(key="review", label="Review", human=True),
    pb.StepDef(key="deploy", label="Deploy"),
]


@pytest.fixture
async def person(server: InProcessServer, org: Org) -> str:
    """A person's token: it may complete tasks, and nothing else beyond reading."""
    return await server.token(org.org_id, "tasks:complete", name=APPROVER)


async def _created(
    processes: "pb_grpc.ProcessServiceAsyncStub", org: Org, namespace: str = "deployments"
) -> pb.Process:
    return await processes.CreateProcess(
        pb.CreateProcessRequest(namespace=namespace, name="Release", step_defs=REVIEW_STEPS),
        metadata=org.metadata(),
    )


async def _reviewed(
    processes: "pb_grpc.ProcessServiceAsyncStub", org: Org, namespace: str = "deployments"
) -> tuple[str, str]:
    """A process whose human step `review` is open; its id and its task's."""
    process = await _created(processes, org, namespace)
    await processes.UpdateProcess(
        pb.UpdateProcessRequest(process_id=process.process_id, type="step_started", step="review"),
        metadata=org.metadata(),
    )
    return process.process_id, process.task_ids[0]


async def _refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    return refused.value


async def test_a_rejection_fails_the_step_with_the_comment(
    processes: "pb_grpc.ProcessServiceAsyncStub",
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    person: str,
) -> None:
    process_id, task_id = await _reviewed(processes, org)
    done = await tasks.CompleteTask(
        tasks_pb.CompleteTaskRequest(task_id=task_id, outcome="rejected", comment="tests are red"),
        metadata=org.metadata(person),
    )
    assert (done.status, done.outcome) == ("completed", "rejected")
    get = pb.GetProcessRequest(process_id=process_id)
    review = (await processes.GetProcess(get, metadata=org.metadata())).timeline[1]
    assert (review.status, review.error, review.completed_by) == (
        "failed", "rejected: tests are red", APPROVER,
    )  # fmt: skip

    other_id, other_task = await _reviewed(processes, org)
    await tasks.CompleteTask(
        tasks_pb.CompleteTaskRequest(task_id=other_task, outcome="rejected"),
        metadata=org.metadata(person),
    )
    get = pb.GetProcessRequest(process_id=other_id)
    assert (await processes.GetProcess(get, metadata=org.metadata())).timeline[1].error == (
        "rejected"
    )


async def test_a_task_that_is_not_open_cannot_be_completed(
    processes: "pb_grpc.ProcessServiceAsyncStub",
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    person: str,
) -> None:
    process = await _created(processes, org)
    (task_id,) = process.task_ids
    approve = tasks_pb.CompleteTaskRequest(task_id=task_id, outcome="approved")
    refused = await _refusal(tasks.CompleteTask(approve, metadata=org.metadata(person)))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "pending" in (refused.details() or "")

    # The pipeline completing the step itself cancels the task.
    await processes.UpdateProcess(
        pb.UpdateProcessRequest(
            process_id=process.process_id, type="step_completed", step="review"
        ),
        metadata=org.metadata(),
    )
    cancelled = await tasks.GetTask(
        tasks_pb.GetTaskRequest(task_id=task_id), metadata=org.metadata()
    )
    assert cancelled.status == "cancelled"
    refused = await _refusal(tasks.CompleteTask(approve, metadata=org.metadata(person)))
    assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "cancelled" in (refused.details() or "")


async def test_tasks_list_by_status_namespace_and_process_with_exact_totals_and_pages(
    processes: "pb_grpc.ProcessServiceAsyncStub",
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
) -> None:
    opened = [await _reviewed(processes, org, namespace="releases") for _ in range(3)]
    pending = await _created(processes, org, namespace="hotfixes")

    async def listed(**fields: Any) -> tasks_pb.ListTasksResponse:
        request = tasks_pb.ListTasksRequest(**fields)
        return await tasks.ListTasks(request, metadata=org.metadata(org.reader))

    assert (await listed()).total == 4
    assert (await listed(status="open")).total == 3
    assert (await listed(status="pending")).tasks[0].task_id == pending.task_ids[0]
    assert (await listed(namespace="hotfixes")).total == 1
    assert (await listed(namespace=f"{org.org_id}.releases", status="open")).total == 3
    only = await listed(process_id=opened[0][0])
    assert [task.task_id for task in only.tasks] == [opened[0][1]]

    # Newest first, page by page, without repeats or gaps.
    seen: list[str] = []
    page = await listed(limit=2)
    while True:
        seen += [task.task_id for task in page.tasks]
        if not page.next_page_token:
            break
        page = await listed(limit=2, page_token=page.next_page_token)
    assert seen == [pending.task_ids[0], *(task for _, task in reversed(opened))]

    refused = await _refusal(
        tasks.ListTasks(tasks_pb.ListTasksRequest(status="done"), metadata=org.metadata())
    )
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.details() or "").startswith("status: ")


async def test_decided_tasks_list_by_outcome_and_decider_with_exact_totals(
    server: InProcessServer,
    processes: "pb_grpc.ProcessServiceAsyncStub",
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    person: str,
) -> None:
    bob = await server.token(org.org_id, "tasks:complete", name="bob")
    decisions = [
        (person, "approved"),
        (person, "rejected"),
        (bob, "approved"),
        (person, "approved"),
    ]
    decided: list[str] = []
    for token, outcome in decisions:
        _, task_id = await _reviewed(processes, org, namespace="history")
        await tasks.CompleteTask(
            tasks_pb.CompleteTaskRequest(task_id=task_id, outcome=outcome),
            metadata=org.metadata(token),
        )
        decided.append(task_id)
    await _reviewed(processes, org, namespace="history")  # still open

    async def listed(**fields: Any) -> tasks_pb.ListTasksResponse:
        request = tasks_pb.ListTasksRequest(namespace="history", **fields)
        return await tasks.ListTasks(request, metadata=org.metadata(org.reader))

    approved = await listed(status="completed", outcome="approved")
    assert approved.total == 3
    assert [task.task_id for task in approved.tasks] == [decided[3], decided[2], decided[0]]
    by_alice = await listed(completed_by=APPROVER)
    assert (by_alice.total, {task.completed_by for task in by_alice.tasks}) == (3, {APPROVER})
    assert (await listed(outcome="rejected", completed_by=APPROVER)).total == 1
    assert (await listed(completed_by="nobody")).total == 0
    # Only completed tasks have an outcome.
    assert (await listed(status="open", outcome="approved")).total == 0

    # The totals are exact on every page, and the pages join without gaps.
    first = await listed(outcome="approved", limit=2)
    following = await listed(outcome="approved", limit=2, page_token=first.next_page_token)
    assert (first.total, following.total) == (3, 3)
    assert [task.task_id for task in [*first.tasks, *following.tasks]] == [
        task.task_id for task in approved.tasks
    ]

    refused = await _refusal(
        tasks.ListTasks(tasks_pb.ListTasksRequest(outcome="approve"), metadata=org.metadata())
    )
    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.details() or "").startswith("outcome: ")


async def test_a_listed_process_shows_its_step_label_open_tasks_and_finish(
    processes: "pb_grpc.ProcessServiceAsyncStub",
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    person: str,
) -> None:
    process_id, task_id = await _reviewed(processes, org, namespace="glance")
    listing = pb.ListProcessesRequest(namespace="glance")

    (waiting,) = (await processes.ListProcesses(listing, metadata=org.metadata())).processes
    assert (waiting.current_step, waiting.current_step_label) == ("review", "Review")
    assert waiting.open_task_count == 1
    assert not waiting.HasField("finished_at")

    await tasks.CompleteTask(
        tasks_pb.CompleteTaskRequest(task_id=task_id, outcome="rejected"),
        metadata=org.metadata(person),
    )
    await processes.UpdateProcess(
        pb.UpdateProcessRequest(process_id=process_id, type="failed", error="rejected"),
        metadata=org.metadata(),
    )
    (ended,) = (await processes.ListProcesses(listing, metadata=org.metadata())).processes
    assert ended.open_task_count == 0
    assert ended.HasField("finished_at")
    assert ended.finished_at.ToDatetime() >= ended.started_at.ToDatetime()


async def test_a_listed_process_keeps_its_step_label_and_open_tasks_right_as_it_moves(
    server: InProcessServer,
    processes: "pb_grpc.ProcessServiceAsyncStub",
    tasks: "tasks_grpc.TaskServiceAsyncStub",
    org: Org,
    person: str,
) -> None:
    created = await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="moving",
            name="Release",
            step_defs=[
                pb.StepDef(key="build", label="Build"),
                pb.StepDef(key="review", label="Review", human=True),
                pb.StepDef(key="sign-off", label="Sign-off", human=True, timeout_seconds=30),
            ],
        ),
        metadata=org.metadata(),
    )
    process_id = created.process_id

    async def shown() -> tuple[str | None, int]:
        listing = pb.ListProcessesRequest(namespace="moving")
        (listed,) = (await processes.ListProcesses(listing, metadata=org.metadata())).processes
        label = listed.current_step_label if listed.HasField("current_step_label") else None
        return label, listed.open_task_count

    async def update(type_: str, step: str) -> None:
        request = pb.UpdateProcessRequest(process_id=process_id, type=type_, step=step)
        await processes.UpdateProcess(request, metadata=org.metadata())

    assert await shown() == (None, 0)
    await update("step_started", "build")
    assert await shown() == ("Build", 0)
    await update("step_completed", "build")
    await update("step_started", "review")
    assert await shown() == ("Review", 1)
    await update("step_started", "sign-off")
    assert await shown() == ("Sign-off", 2)

    await tasks.CompleteTask(
        tasks_pb.CompleteTaskRequest(task_id=created.task_ids[0], outcome="approved"),
        metadata=org.metadata(person),
    )
    assert await shown() == ("Sign-off", 1)

    # A clock of its own: the server's enforcer, on the real time, never
    # finds the step due, so this one alone times it out.
    late = utc_now() + timedelta(seconds=31)
    assert await DeadlineService(server.database, lambda: late).enforce() >= 1
    assert await shown() == ("Sign-off", 0)

    await update("step_started", "sign-off")
    assert await shown() == ("Sign-off", 1)
    await processes.CancelProcess(
        pb.CancelProcessRequest(process_id=process_id), metadata=org.metadata()
    )
    assert await shown() == ("Sign-off", 0)
