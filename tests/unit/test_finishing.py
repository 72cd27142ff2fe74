"""Every run ends cleanly: however a process finishes (`completed`, `failed`
or a cancel), each of its steps has ended, at the finishing time, and no task
waits any more; and a cancel is refused as an update would be."""

import uuid
from collections.abc import Callable
from copy import deepcopy
from datetime import UTC, datetime, timedelta

import pytest

from server.domain.errors import FailedPrecondition, InvalidArgument
from server.domain.processes import (
    MAX_PROCESS_BYTES,
    Change,
    Event,
    EventType,
    Process,
    ProcessStatus,
    StepDef,
    StepStatus,
    Update,
    apply_update,
    cancel,
    new_process,
    stored_bytes,
)
from server.domain.tasks import TaskStatus
from server.domain.tokens import Caller

T0 = datetime(2026, 2, 24, 12, 0, tzinfo=UTC)
PIPELINE = Caller("acme", frozenset(), "ci-pipeline", uuid.uuid4())
# A person who cancels what the pipeline started.
RELEASE_MANAGER = Caller("acme", frozenset(), "alice", uuid.uuid4())
# A step in every state a running process's step can be in, and two human
# steps: one whose task waits for its step to start, one whose task is open.
STEP_DEFS = [
    StepDef("built", "Built", human=False),
    StepDef("broken", "Broken", human=False),
    StepDef("deploy", "Deploy", human=False, timeout_seconds=600),
    StepDef("review", "Review", human=True, timeout_seconds=3600),
    StepDef("smoke", "Smoke", human=False),
    StepDef("signoff", "Sign-off", human=True),
]
FINISHED_AT = T0 + timedelta(seconds=90)
Finish = Callable[[Process], Change]
FINISHES: dict[str, tuple[Finish, ProcessStatus]] = {
    "completed": (
        lambda process: apply_update(process, Update("completed"), FINISHED_AT, by=PIPELINE),
        ProcessStatus.COMPLETED,
    ),
    "failed": (
        lambda process: apply_update(
            process, Update("failed", error="gave up"), FINISHED_AT, by=PIPELINE
        ),
        ProcessStatus.FAILED,
    ),
    "cancelled": (
        lambda process: cancel(process, "superseded", FINISHED_AT, by=RELEASE_MANAGER),
        ProcessStatus.CANCELLED,
    ),
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def process() -> Process:
    """`built` completed, `broken` failed, `deploy` and `review` running with
    progress and deadlines, `smoke` and `signoff` never started."""
    process = new_process(
        org_id="acme",
        namespace="deployments",
        name="Release",
        step_defs=STEP_DEFS,
        now=T0,
        created_by=PIPELINE,
    )
    for seconds, update in enumerate(
        [
            Update("step_started", step="built"),
            Update("step_completed", step="built"),
            Update("step_started", step="broken"),
            Update("step_failed", step="broken", error="flaky"),
            Update("step_started", step="deploy"),
            Update("progress", step="deploy", percent=40, message="3/10 hosts"),
            Update("step_started", step="review"),
        ],
        start=1,
    ):
        apply_update(process, update, at(seconds * 10), by=PIPELINE)
    return process


@pytest.mark.parametrize("finish", FINISHES, ids=str)
def test_every_step_has_ended_when_the_process_finishes(process: Process, finish: str) -> None:
    finisher, status = FINISHES[finish]
    before = deepcopy(process)

    change = finisher(process)

    assert (process.status, process.finished_at) == (status, FINISHED_AT)
    statuses = {step.key: step.status for step in process.steps}
    assert statuses == {
        "built": StepStatus.COMPLETED,
        "broken": StepStatus.FAILED,
        "deploy": StepStatus.CANCELLED,
        "review": StepStatus.CANCELLED,
        "smoke": StepStatus.SKIPPED,
        "signoff": StepStatus.SKIPPED,
    }
    # Only the steps that had not ended changed, and are written back.
    assert change.step_positions == (2, 3, 4, 5)
    for key in ("built", "broken"):
        assert process.step(key) == before.step(key)
    deploy = process.step("deploy")
    assert (deploy.started_at, deploy.completed_at, deploy.duration_ms) == (
        at(50),
        FINISHED_AT,
        40_000,
    )
    # A stopped run keeps how far it got, as a failed one does.
    assert (deploy.progress_message, deploy.progress_percent) == ("3/10 hosts", 40)
    smoke = process.step("smoke")
    assert (smoke.started_at, smoke.completed_at, smoke.duration_ms) == (
        None,
        FINISHED_AT,
        None,
    )
    assert all(step.deadline_at is None for step in process.steps)
    # Where the process stopped: the step last started, not a skipped one.
    assert process.current_step == "review"
    tasks = {step.key: step.task for step in process.steps if step.task is not None}
    assert change.tasks == (tasks["review"], tasks["signoff"])
    assert {task.status for task in tasks.values()} == {TaskStatus.CANCELLED}


def test_a_cancel_logs_its_reason_and_keeps_it_on_the_process(process: Process) -> None:
    change = cancel(process, "superseded by v2.1.1", FINISHED_AT, by=RELEASE_MANAGER)

    assert change.event == Event(
        seq=8,
        type=EventType.CANCELLED,
        step=None,
        payload={"reason": "superseded by v2.1.1"},
        recorded_at=FINISHED_AT,
        actor="alice",
    )
    assert change.event.finishes_process
    assert change.event.status_after is ProcessStatus.CANCELLED
    assert (process.reason, process.update_count) == ("superseded by v2.1.1", 8)
    assert (process.summary, process.error) == (None, None)


def test_a_cancel_without_a_reason_logs_none(process: Process) -> None:
    change = cancel(process, None, FINISHED_AT, by=RELEASE_MANAGER)

    assert change.event.payload == {}
    assert process.reason is None


@pytest.mark.parametrize("finish", FINISHES, ids=str)
def test_a_finished_process_cannot_be_cancelled_and_says_how_it_ended(
    process: Process, finish: str
) -> None:
    finisher, status = FINISHES[finish]
    finisher(process)
    before = deepcopy(process)

    with pytest.raises(FailedPrecondition, match=f"has already {status.value}; it cannot be"):
        cancel(process, None, at(200), by=RELEASE_MANAGER)
    assert process == before


def test_a_cancelled_process_accepts_no_more_updates(process: Process) -> None:
    cancel(process, None, FINISHED_AT, by=RELEASE_MANAGER)
    before = deepcopy(process)

    with pytest.raises(FailedPrecondition, match="has already cancelled; it accepts no more"):
        apply_update(process, Update("completed"), at(200), by=PIPELINE)
    assert process == before


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("", "must not be blank"),
        ("  \n", "must not be blank"),
        ("x" * 10_001, "at most 10000 characters"),
        ("nul \x00", "NUL"),
    ],
    ids=["empty", "blank", "too long", "NUL"],
)
def test_a_bad_reason_is_refused_naming_it(process: Process, reason: str, message: str) -> None:
    before = deepcopy(process)

    with pytest.raises(InvalidArgument, match=message) as refused:
        cancel(process, reason, FINISHED_AT, by=RELEASE_MANAGER)
    assert refused.value.field == "reason"
    assert process == before


def test_a_reason_counts_towards_the_process_budget(process: Process) -> None:
    # A process 100 bytes short of its limit (as many updates would leave it).
    built = process.step("built")
    built.detail = "d" * (MAX_PROCESS_BYTES - stored_bytes(process) - 100)
    before = deepcopy(process)

    with pytest.raises(FailedPrecondition, match=r"^reason: "):
        cancel(process, "r" * 101, FINISHED_AT, by=RELEASE_MANAGER)
    assert process == before
    cancel(process, "r" * 100, FINISHED_AT, by=RELEASE_MANAGER)
    assert stored_bytes(process) == MAX_PROCESS_BYTES


@pytest.mark.parametrize("finish", FINISHES, ids=str)
def test_a_finish_leaves_current_step_where_the_process_stopped(
    process: Process, finish: str
) -> None:
    # A step that changes after the running ones started: it does not become current.
    apply_update(process, Update("step_completed", step="smoke"), at(80), by=PIPELINE)
    assert process.current_step == "review"

    FINISHES[finish][0](process)

    assert process.current_step == "review"
