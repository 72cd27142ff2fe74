"""Updates the state machine refuses, in process: each is FAILED_PRECONDITION
and leaves everything a reader sees as it was (the refusal rolls back whole).
tests/unit/test_processes.py holds the rule itself; this checks the service
around it. tests/e2e/test_rest_errors.py keeps one case of each through
Envoy, for the REST error's shape."""

from typing import Any

import grpc
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from tests.service.calls import Stub, update
from tests.support.orgs import Org

Snapshot = tuple[pb.Process, pb.ListProcessesResponse]


@pytest.fixture
async def process_id(processes: Stub, org: Org) -> str:
    """A running process: `build` running, `test` completed, `review` and `deploy` pending."""
    steps = [
        pb.StepDef(key="build", label="Build"),
        pb.StepDef(key="test", label="Test"),
        pb.StepDef(key="review", label="Review", human=True),
        pb.StepDef(key="deploy", label="Deploy"),
    ]
    request = pb.CreateProcessRequest(
        namespace="deployments", name="Deploy v2.1.0", step_defs=steps
    )
    created = await processes.CreateProcess(request, metadata=org.metadata())
    await update(processes, org, created.process_id, "step_completed", step="test")
    await update(processes, org, created.process_id, "step_started", step="build")
    return created.process_id


async def snapshot(processes: Stub, org: Org, process_id: str) -> Snapshot:
    """Everything a reader can see: the process, and the organization's list."""
    reader = org.metadata(org.reader)
    got = await processes.GetProcess(pb.GetProcessRequest(process_id=process_id), metadata=reader)
    listed = await processes.ListProcesses(pb.ListProcessesRequest(limit=200), metadata=reader)
    return got, listed


async def refused(processes: Stub, org: Org, process_id: str, body: dict[str, Any]) -> str:
    """Sends an update that must be refused with FAILED_PRECONDITION; returns the message."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await update(processes, org, process_id, body.pop("type"), **body)
    assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION, error.value
    return error.value.details() or ""


@pytest.mark.parametrize(
    "body",
    [
        {"type": "progress", "step": "review", "percent": 10},
        {"type": "step_started", "step": "build"},
        {"type": "step_started", "step": "test"},
        {"type": "step_completed", "step": "test"},
        {"type": "step_failed", "step": "test", "error": "x"},
        {"type": "progress", "step": "test", "message": "x"},
    ],
    ids=[
        "progress-pending",
        "start-running",
        "start-completed",
        "complete-completed",
        "fail-completed",
        "progress-completed",
    ],
)
async def test_a_step_change_not_allowed_in_its_state_is_a_failed_precondition(
    processes: Stub, org: Org, process_id: str, body: dict[str, Any]
) -> None:
    before = await snapshot(processes, org, process_id)

    message = await refused(processes, org, process_id, dict(body))

    assert body["step"] in message
    assert await snapshot(processes, org, process_id) == before


@pytest.mark.parametrize(
    "finish",
    [{"type": "completed", "summary": "done"}, {"type": "failed", "error": "broken"}],
    ids=["completed", "failed"],
)
@pytest.mark.parametrize(
    "body",
    [
        {"type": "step_started", "step": "review"},
        {"type": "step_completed", "step": "build"},
        {"type": "step_failed", "step": "build", "error": "x"},
        {"type": "progress", "step": "build", "percent": 99},
        {"type": "completed", "summary": "again"},
        {"type": "failed", "error": "again"},
    ],
    ids=lambda body: str(body["type"]),
)
async def test_a_finished_process_accepts_no_more_updates(
    processes: Stub, org: Org, process_id: str, finish: dict[str, Any], body: dict[str, Any]
) -> None:
    finishing = dict(finish)
    await update(processes, org, process_id, finishing.pop("type"), **finishing)
    before = await snapshot(processes, org, process_id)

    await refused(processes, org, process_id, dict(body))

    assert await snapshot(processes, org, process_id) == before
