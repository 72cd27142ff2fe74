"""Unit tests for the tasks of human steps and for step timeouts
(server.domain.tasks, and their part of server.domain.processes): every
transition, the races between a person, the pipeline and the timeout
scanner, and ListTasks parameters."""

import uuid
from collections.abc import Callable
from copy import deepcopy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.domain.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from server.domain.processes import (
    EVENT_FIELDS,
    MAX_DATA_BYTES,
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
    complete_task,
    new_process,
    stored_bytes,
    summary_of,
    time_out,
)
from server.domain.tasks import (
    Completion,
    Outcome,
    Task,
    TaskPosition,
    TaskQuery,
    TaskStatus,
    parse_task_id,
    task_page_token,
    task_query,
)
from server.domain.tokens import Caller, Scope

ORG = "acme"
T0 = datetime(2026, 2, 24, 12, 0, tzinfo=UTC)
STEP_DEFS = (
    StepDef("build", "Build", human=False, timeout_seconds=600),
    StepDef("review", "Review", human=True, timeout_seconds=3600),
    StepDef("deploy", "Deploy", human=False),
)
APPROVE = Completion("approved", "Looks good")
REVIEWER = Caller(ORG, frozenset({Scope.TASKS_COMPLETE}), "release-managers", uuid.uuid4())
PIPELINE = Caller(ORG, frozenset({Scope.PROCESSES_WRITE}), "ci-pipeline", uuid.uuid4())


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def create(step_defs: tuple[StepDef, ...] = STEP_DEFS) -> Process:
    return new_process(
        org_id=ORG,
        namespace="deployments",
        name="Deploy v2.1.0",
        step_defs=step_defs,
        now=T0,
        created_by=PIPELINE,
    )


def update(process: Process, type_: str, now: datetime, **fields: Any) -> Change:
    return apply_update(process, Update(type_, **fields), now, by=PIPELINE)


def task(process: Process, key: str = "review") -> Task:
    found = process.step(key).task
    assert found is not None
    return found


def decide(
    process: Process, completion: Completion = APPROVE, now: datetime | None = None
) -> Change:
    """Completes the review task; at 100 s unless told otherwise."""
    when = now if now is not None else at(100)
    return complete_task(process, task(process).task_id, completion, REVIEWER, when)


def unchanged(process: Process, error: type[DomainError], act: Any) -> DomainError:
    """Asserts that `act()` raises `error` and leaves the process exactly as it was."""
    before = deepcopy(process)
    with pytest.raises(error) as excinfo:
        act()
    assert process == before
    return excinfo.value


@pytest.fixture
def process() -> Process:
    return create()


@pytest.fixture
def opened(process: Process) -> Process:
    """The process with its review step started at 10 s, so its task is open."""
    update(process, "step_started", at(10), step="review", detail="Please review")
    return process


# --- creation ---------------------------------------------------------------------------------


def test_each_human_step_gets_a_pending_task_that_reads_on_its_own(process: Process) -> None:
    review = task(process)
    assert review == Task(
        task_id=review.task_id,
        process_id=process.process_id,
        org_id=ORG,
        namespace="acme.deployments",
        process_name="Deploy v2.1.0",
        step="review",
        label="Review",
        created_at=T0,
    )
    assert review.status is TaskStatus.PENDING
    assert process.step("build").task is None
    assert process.tasks == [review]
    assert process.task_ids == [review.task_id] == [process.step("review").task_id]


def test_a_step_definition_keeps_its_timeout(process: Process) -> None:
    assert [step.timeout_seconds for step in process.steps] == [600, 3600, None]
    assert all(step.deadline_at is None for step in process.steps)


@pytest.mark.parametrize("seconds", [1, 2_592_000])
def test_timeouts_from_one_second_to_thirty_days_are_accepted(seconds: int) -> None:
    created = create((StepDef("build", "Build", human=False, timeout_seconds=seconds),))
    assert created.step("build").timeout_seconds == seconds


@pytest.mark.parametrize("seconds", [0, -1, 2_592_001])
def test_a_timeout_out_of_range_is_refused_naming_the_step_definition(seconds: int) -> None:
    step_defs = (
        StepDef("build", "Build", human=False),
        StepDef("review", "Review", human=True, timeout_seconds=seconds),
    )
    with pytest.raises(InvalidArgument) as excinfo:
        create(step_defs)
    assert excinfo.value.field == "step_defs[1].timeout_seconds"
    assert str(seconds) in excinfo.value.problem


# --- tasks moved by updates -------------------------------------------------------------------


def test_starting_a_human_step_opens_its_task(process: Process) -> None:
    change = update(process, "step_started", at(10), step="review")

    review = task(process)
    assert (review.status, review.opened_at) == (TaskStatus.OPEN, at(10))
    assert change.step_positions == (1,)
    assert change.tasks == (review,)


def test_progress_on_a_human_step_leaves_its_task_be(opened: Process) -> None:
    before = deepcopy(task(opened))
    change = update(opened, "progress", at(20), step="review", message="Waiting for Ann")

    assert task(opened) == before
    assert change.tasks == ()


def test_updates_of_machine_steps_move_no_task(process: Process) -> None:
    for type_, fields in [
        ("step_started", {}),
        ("progress", {"percent": 50}),
        ("step_completed", {}),
    ]:
        change = update(process, type_, at(10), step="build", **fields)
        assert change.tasks == ()
    assert task(process).status is TaskStatus.PENDING


@pytest.mark.parametrize("started", [True, False], ids=["open", "pending"])
@pytest.mark.parametrize(
    ("type_", "fields"), [("step_completed", {}), ("step_failed", {"error": "skipped"})]
)
def test_a_step_ended_by_an_update_cancels_its_task(
    process: Process, started: bool, type_: str, fields: dict[str, Any]
) -> None:
    if started:
        update(process, "step_started", at(10), step="review")

    change = update(process, type_, at(20), step="review", **fields)

    review = task(process)
    assert review.status is TaskStatus.CANCELLED
    assert (review.completed_at, review.outcome, review.completed_by) == (None, None, None)
    assert change.tasks == (review,)
    assert process.step("review").completed_by is None


@pytest.mark.parametrize(
    "finish", [Update("completed", summary="done"), Update("failed", error="broken")]
)
def test_a_finished_process_cancels_the_tasks_still_waiting(finish: Update) -> None:
    process = create(
        (
            StepDef("approve", "Approve", human=True),
            StepDef("review", "Review", human=True),
            StepDef("sign-off", "Sign off", human=True),
        )
    )
    update(process, "step_started", at(1), step="approve")
    decide_on = task(process, "approve").task_id
    complete_task(process, decide_on, APPROVE, REVIEWER, at(2))
    update(process, "step_started", at(3), step="review")

    change = apply_update(process, finish, at(4), by=PIPELINE)

    approve, review, sign_off = process.tasks
    assert approve.status is TaskStatus.COMPLETED
    assert (review.status, sign_off.status) == (TaskStatus.CANCELLED, TaskStatus.CANCELLED)
    assert change.tasks == (review, sign_off)


@pytest.mark.parametrize(
    ("fail", "status"),
    [
        pytest.param(
            lambda p: decide(p, Completion("rejected", "Not yet")),
            TaskStatus.COMPLETED,
            id="rejected",
        ),
        pytest.param(
            lambda p: update(p, "step_failed", at(20), step="review", error="withdrawn"),
            TaskStatus.CANCELLED,
            id="cancelled",
        ),
        pytest.param(
            lambda p: time_out(p, "review", at(10 + 3600)), TaskStatus.EXPIRED, id="expired"
        ),
    ],
)
def test_starting_a_failed_human_step_again_reopens_its_task_afresh(
    opened: Process, fail: Any, status: TaskStatus
) -> None:
    fail(opened)
    assert task(opened).status is status
    assert opened.step("review").status is StepStatus.FAILED

    change = update(opened, "step_started", at(5000), step="review")

    review = task(opened)
    assert review.status is TaskStatus.OPEN
    assert review.opened_at == at(5000)
    assert (review.completed_at, review.outcome, review.comment, review.completed_by) == (
        None,
        None,
        None,
        None,
    )
    step = opened.step("review")
    assert (step.status, step.error, step.completed_by) == (StepStatus.RUNNING, None, None)
    assert step.deadline_at == at(5000 + 3600)
    assert change.tasks == (review,)


# --- completing a task ------------------------------------------------------------------------


def test_approving_completes_the_step_with_the_comment_as_detail(opened: Process) -> None:
    change = decide(opened, Completion("approved", "Looks good"), at(100))

    review = task(opened)
    assert change == Change(
        event=Event(
            seq=2,
            type=EventType.TASK_COMPLETED,
            step="review",
            payload={
                "task_id": str(review.task_id),
                "outcome": "approved",
                "comment": "Looks good",
                "completed_by": REVIEWER.token_name,
                "completed_by_token_id": str(REVIEWER.token_id),
            },
            recorded_at=at(100),
            actor=REVIEWER.token_name,
        ),
        step_positions=(1,),
        tasks=(review,),
    )
    assert opened.update_count == 2
    assert (review.status, review.completed_at) == (TaskStatus.COMPLETED, at(100))
    assert (review.outcome, review.comment, review.completed_by) == (
        Outcome.APPROVED,
        "Looks good",
        REVIEWER.token_name,
    )
    assert review.completed_by_token_id == REVIEWER.token_id
    assert review.opened_at == at(10)
    step = opened.step("review")
    assert step.status is StepStatus.COMPLETED
    assert (step.started_at, step.completed_at, step.duration_ms) == (at(10), at(100), 90_000)
    assert (step.detail, step.error, step.completed_by) == ("Looks good", None, "release-managers")
    assert step.completed_by_token_id == REVIEWER.token_id
    assert step.deadline_at is None
    assert opened.current_step == "review"
    assert opened.status is ProcessStatus.RUNNING


def test_approving_without_a_comment_keeps_the_start_detail(opened: Process) -> None:
    change = decide(opened, Completion("approved"))

    assert "comment" not in change.event.payload
    assert task(opened).comment is None
    assert opened.step("review").detail == "Please review"


@pytest.mark.parametrize(
    ("comment", "error"), [("Missing changelog", "rejected: Missing changelog"), (None, "rejected")]
)
def test_rejecting_fails_the_step(opened: Process, comment: str | None, error: str) -> None:
    update(opened, "progress", at(20), step="review", message="Reading the diff")

    change = decide(opened, Completion("rejected", comment), at(100))

    assert change.event.type is EventType.TASK_COMPLETED
    assert change.event.payload["outcome"] == "rejected"
    review = task(opened)
    assert (review.status, review.outcome, review.comment) == (
        TaskStatus.COMPLETED,
        Outcome.REJECTED,
        comment,
    )
    step = opened.step("review")
    assert (step.status, step.error, step.completed_by) == (
        StepStatus.FAILED,
        error,
        REVIEWER.token_name,
    )
    assert step.completed_at == at(100)
    assert step.progress_message == "Reading the diff"  # how far it got, as for step_failed
    assert step.deadline_at is None


def test_the_process_goes_on_after_an_approval(opened: Process) -> None:
    decide(opened)
    change = update(opened, "step_started", at(200), step="deploy")
    assert change.event.seq == 3
    assert opened.current_step == "deploy"


@pytest.mark.parametrize(
    ("get_there", "status"),
    [
        pytest.param(lambda p: None, "pending", id="pending"),
        pytest.param(lambda p: decide(p), "completed", id="completed"),
        pytest.param(
            lambda p: update(p, "step_completed", at(50), step="review"),
            "cancelled",
            id="cancelled",
        ),
        pytest.param(lambda p: time_out(p, "review", at(10 + 3600)), "expired", id="expired"),
    ],
)
def test_only_an_open_task_can_be_completed(process: Process, get_there: Any, status: str) -> None:
    if status != "pending":
        update(process, "step_started", at(10), step="review")
    get_there(process)

    error = unchanged(process, FailedPrecondition, lambda: decide(process, now=at(7200)))

    assert str(error) == (
        f"task {task(process).task_id} is {status}; only an open task can be completed"
    )


@pytest.mark.parametrize(
    ("completion", "problem"),
    [
        (Completion(""), "is required; one of: approved, rejected"),
        (Completion("approve"), "unknown value 'approve'; expected one of: approved, rejected"),
        (Completion("APPROVED"), "unknown value 'APPROVED'; expected one of: approved, rejected"),
    ],
)
def test_an_unknown_outcome_is_refused_naming_outcome(
    opened: Process, completion: Completion, problem: str
) -> None:
    error = unchanged(opened, InvalidArgument, lambda: decide(opened, completion))
    assert isinstance(error, InvalidArgument)
    assert (error.field, error.problem) == ("outcome", problem)


@pytest.mark.parametrize("comment", ["x" * 10_001, "nul\x00byte"])
def test_a_bad_comment_is_refused_naming_comment(opened: Process, comment: str) -> None:
    error = unchanged(
        opened, InvalidArgument, lambda: decide(opened, Completion("approved", comment))
    )
    assert isinstance(error, InvalidArgument)
    assert error.field == "comment"


def test_a_malformed_decision_is_refused_before_the_state_is_looked_at(process: Process) -> None:
    # The task is pending, but the request is wrong in itself: that is what the caller hears.
    error = unchanged(process, InvalidArgument, lambda: decide(process, Completion("maybe")))
    assert isinstance(error, InvalidArgument)
    assert error.field == "outcome"


def test_a_task_of_another_process_is_not_found(opened: Process) -> None:
    other = uuid.uuid4()
    error = unchanged(
        opened, NotFound, lambda: complete_task(opened, other, APPROVE, REVIEWER, at(100))
    )
    assert str(error) == f"task {other} not found"


# --- step timeouts ----------------------------------------------------------------------------


def test_starting_a_step_with_a_timeout_sets_its_deadline(process: Process) -> None:
    update(process, "step_started", at(10), step="build")
    update(process, "step_started", at(10), step="deploy")

    assert process.step("build").deadline_at == at(610)
    assert process.step("deploy").deadline_at is None


def test_progress_moves_a_machine_steps_deadline_on(process: Process) -> None:
    update(process, "step_started", at(10), step="build")
    update(process, "progress", at(500), step="build", percent=80)

    assert process.step("build").deadline_at == at(1100)


def test_a_human_steps_deadline_runs_from_when_its_task_opened(opened: Process) -> None:
    update(opened, "progress", at(3000), step="review", message="Still reading")

    assert opened.step("review").deadline_at == at(10 + 3600)


@pytest.mark.parametrize(
    ("type_", "fields"), [("step_completed", {}), ("step_failed", {"error": "x"})]
)
def test_a_step_that_ends_has_no_deadline(
    process: Process, type_: str, fields: dict[str, Any]
) -> None:
    update(process, "step_started", at(10), step="build")
    update(process, type_, at(20), step="build", **fields)

    assert process.step("build").deadline_at is None
    assert time_out(process, "build", at(10_000)) is None


@pytest.mark.parametrize("finish", [Update("completed"), Update("failed", error="broken")])
def test_a_finished_process_has_no_deadlines(opened: Process, finish: Update) -> None:
    update(opened, "step_started", at(20), step="build")

    change = apply_update(opened, finish, at(30), by=PIPELINE)

    assert change.step_positions == (0, 1, 2)
    assert all(step.deadline_at is None for step in opened.steps)
    # The running steps were stopped with it (tests/unit/test_finishing.py).
    assert opened.step("build").status is StepStatus.CANCELLED
    assert time_out(opened, "build", at(10_000)) is None
    assert time_out(opened, "review", at(10_000)) is None


def test_a_step_is_not_timed_out_before_its_deadline(process: Process) -> None:
    update(process, "step_started", at(10), step="build")
    before = deepcopy(process)

    assert time_out(process, "build", at(609.999)) is None
    assert process == before


def test_a_machine_step_times_out_at_its_deadline(process: Process) -> None:
    update(process, "step_started", at(10), step="build")
    update(process, "progress", at(20), step="build", percent=30)

    change = time_out(process, "build", at(620))

    error = "timed out after 600 s without an update"
    assert change == Change(
        event=Event(
            seq=3,
            type=EventType.STEP_TIMED_OUT,
            step="build",
            payload={"error": error, "timeout_seconds": 600},
            recorded_at=at(620),
            actor="htk",
        ),
        step_positions=(0,),
        tasks=(),
    )
    step = process.step("build")
    assert (step.status, step.error, step.deadline_at) == (StepStatus.FAILED, error, None)
    assert (step.started_at, step.completed_at) == (at(10), at(620))
    assert step.progress_percent == 30
    assert process.update_count == 3
    assert process.status is ProcessStatus.RUNNING
    assert process.current_step == "build"


def test_a_human_step_that_times_out_expires_its_task(opened: Process) -> None:
    change = time_out(opened, "review", at(3610))

    assert change is not None
    review = task(opened)
    assert review.status is TaskStatus.EXPIRED
    assert (review.completed_at, review.outcome, review.completed_by) == (None, None, None)
    assert change.tasks == (review,)
    assert opened.step("review").error == "timed out after 3600 s without an update"


def test_a_step_without_a_timeout_never_times_out(process: Process) -> None:
    update(process, "step_started", at(10), step="deploy")
    assert time_out(process, "deploy", at(10**8)) is None


def test_a_timed_out_step_may_run_again(process: Process) -> None:
    update(process, "step_started", at(10), step="build")
    time_out(process, "build", at(610))

    update(process, "step_started", at(700), step="build")

    step = process.step("build")
    assert (step.status, step.error, step.deadline_at) == (StepStatus.RUNNING, None, at(1300))


# --- what a list shows: the current step's label and how many tasks are open -----------------


def shown(process: Process) -> tuple[str | None, int]:
    summary = summary_of(process)
    return summary.current_step_label, summary.open_task_count


def test_a_new_process_shows_no_step_and_no_open_task(process: Process) -> None:
    assert shown(process) == (None, 0)


def test_a_started_human_step_shows_its_label_and_its_open_task(opened: Process) -> None:
    assert shown(opened) == ("Review", 1)


def test_a_decided_task_is_no_longer_open_and_the_next_step_shows(opened: Process) -> None:
    decide(opened)
    assert shown(opened) == ("Review", 0)

    update(opened, "step_started", at(200), step="deploy")
    assert shown(opened) == ("Deploy", 0)


def test_an_expired_task_is_no_longer_open(opened: Process) -> None:
    time_out(opened, "review", at(3610))
    assert shown(opened) == ("Review", 0)


def test_a_cancel_closes_the_open_task_and_shows_where_it_stopped(opened: Process) -> None:
    cancel(opened, "not needed", at(50), by=PIPELINE)
    assert shown(opened) == ("Review", 0)


def test_every_open_task_counts() -> None:
    two_reviews = create((*STEP_DEFS, StepDef("sign-off", "Sign-off", human=True)))
    update(two_reviews, "step_started", at(10), step="review")
    update(two_reviews, "step_started", at(20), step="sign-off")
    assert shown(two_reviews) == ("Sign-off", 2)


# --- races: whichever change is applied second sees the first one's state ---------------------


def test_the_pipeline_completing_the_step_after_a_decision_is_refused(opened: Process) -> None:
    decide(opened)

    error = unchanged(
        opened, FailedPrecondition, lambda: update(opened, "step_completed", at(200), step="review")
    )
    assert str(error) == "step 'review' is completed; it cannot be completed"


def test_a_decision_after_the_pipeline_completed_the_step_is_refused(opened: Process) -> None:
    update(opened, "step_completed", at(50), step="review")

    error = unchanged(opened, FailedPrecondition, lambda: decide(opened, now=at(60)))
    assert "is cancelled; only an open task can be completed" in str(error)


def test_a_decision_after_the_process_finished_is_refused(opened: Process) -> None:
    update(opened, "completed", at(50))

    error = unchanged(opened, FailedPrecondition, lambda: decide(opened, now=at(60)))
    assert "is cancelled" in str(error)


def test_a_timeout_after_a_decision_does_nothing(opened: Process) -> None:
    decide(opened, now=at(3609))
    before = deepcopy(opened)

    assert time_out(opened, "review", at(3610)) is None
    assert opened == before
    assert task(opened).status is TaskStatus.COMPLETED


def test_a_decision_after_a_timeout_is_refused(opened: Process) -> None:
    time_out(opened, "review", at(3610))

    error = unchanged(opened, FailedPrecondition, lambda: decide(opened, now=at(3610)))
    assert "is expired; only an open task can be completed" in str(error)


def test_a_second_worker_timing_out_the_same_step_does_nothing(opened: Process) -> None:
    assert time_out(opened, "review", at(3610)) is not None
    before = deepcopy(opened)

    assert time_out(opened, "review", at(3611)) is None
    assert opened == before


def test_a_timeout_found_due_before_an_update_moved_the_deadline_does_nothing(
    process: Process,
) -> None:
    # The scanner saw the old deadline; the progress update took the lock first.
    update(process, "step_started", at(10), step="build")
    update(process, "progress", at(609), step="build", percent=99)

    assert time_out(process, "build", at(611)) is None
    assert process.step("build").status is StepStatus.RUNNING


@pytest.mark.parametrize("decision_first", [True, False])
def test_a_decision_and_a_timeout_racing_exactly_one_wins(
    opened: Process, decision_first: bool
) -> None:
    due = at(10 + 3600)
    outcomes: list[str] = []
    for contender in ("decision", "timeout") if decision_first else ("timeout", "decision"):
        if contender == "timeout":
            outcomes.append("changed" if time_out(opened, "review", due) else "nothing")
        else:
            try:
                decide(opened, now=due)
                outcomes.append("changed")
            except FailedPrecondition:
                outcomes.append("refused")

    assert outcomes == (["changed", "nothing"] if decision_first else ["changed", "refused"])
    expected = TaskStatus.COMPLETED if decision_first else TaskStatus.EXPIRED
    assert task(opened).status is expected
    assert opened.update_count == 2


# --- the invariant that ties a task to its step, under every sequence of changes --------------

# What can happen to a process with a human step with a timeout. Every
# sequence of up to six is tried: few enough to run in a moment, enough for a
# task to pass through each state and come back, e.g. reopened after an expiry
# and then decided.
ACTIONS: list[tuple[str, Any]] = [
    ("update", Update("step_started", step="review")),
    ("update", Update("progress", step="review", percent=50)),
    ("update", Update("step_completed", step="review")),
    ("update", Update("step_failed", step="review", error="x")),
    ("update", Update("completed")),
    ("decide", Completion("approved", "ok")),
    ("decide", Completion("rejected")),
    ("time_out", "review"),
]


def _act(process: Process, action: tuple[str, Any], now: datetime) -> Change | None:
    kind, argument = action
    if kind == "update":
        return apply_update(process, argument, now, by=PIPELINE)
    if kind == "decide":
        return complete_task(process, task(process).task_id, argument, REVIEWER, now)
    return time_out(process, argument, now)


def _check_invariants(process: Process) -> None:
    review, step = task(process), process.step("review")
    running = process.status is ProcessStatus.RUNNING
    if not running:
        assert review.status not in {TaskStatus.PENDING, TaskStatus.OPEN}
    elif step.status is StepStatus.PENDING:
        assert review.status is TaskStatus.PENDING
    elif step.status is StepStatus.RUNNING:
        assert review.status is TaskStatus.OPEN
        assert review.opened_at == step.started_at
    elif step.status is StepStatus.COMPLETED:
        assert review.status in {TaskStatus.COMPLETED, TaskStatus.CANCELLED}
    else:
        assert review.status in {TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
    assert (step.completed_by is not None) == (review.status is TaskStatus.COMPLETED)
    assert (step.deadline_at is not None) == (running and step.status is StepStatus.RUNNING)


def test_a_task_always_agrees_with_its_step() -> None:
    _explore(create(), [])


def _explore(process: Process, done: list[tuple[str, Any]]) -> None:
    """Tries every action on (a copy of) the process, and so on to a depth of
    six, checking the invariants after each change."""
    for action in ACTIONS:
        path = [*done, action]
        after = deepcopy(process)
        try:
            # Two hours apart: by the next action, a running step is past its deadline.
            change = _act(after, action, at(len(path) * 7200))
        except FailedPrecondition:
            change = None
        if change is None:
            # Refused, or nothing to do: nothing changes, and so nothing new
            # follows from here.
            assert after == process, path
            continue
        assert change.event.seq == after.update_count == process.update_count + 1, path
        # The change names exactly the tasks it moved, for storage to write.
        moved = [task for task, was in zip(after.tasks, process.tasks, strict=True) if task != was]
        assert list(change.tasks) == moved, path
        _check_invariants(after)
        if len(path) < 6:
            _explore(after, path)


# --- ListTasks parameters ---------------------------------------------------------------------


def test_a_task_query_defaults_to_the_newest_fifty() -> None:
    assert task_query(ORG) == TaskQuery(org_id=ORG, limit=50, offset=0)


def test_a_task_query_reads_every_filter() -> None:
    process_id = uuid.uuid4()
    query = task_query(
        ORG, status="open", namespace="deployments", process_id=str(process_id), limit=10, offset=5
    )
    assert query == TaskQuery(
        org_id=ORG,
        status=TaskStatus.OPEN,
        namespace="acme.deployments",
        process_id=process_id,
        limit=10,
        offset=5,
    )


def test_a_task_query_filters_the_history_by_outcome_and_decider() -> None:
    query = task_query(ORG, status="completed", outcome="rejected", completed_by="alice")
    assert (query.outcome, query.completed_by) == (Outcome.REJECTED, "alice")
    # The counters know totals per status only: these are counted.
    assert query.counted
    assert not task_query(ORG, status="completed").counted
    # Only completed tasks have an outcome or a decider: the status filter goes.
    assert query.status_filter is None
    assert task_query(ORG, status="open", completed_by="alice").status_filter is TaskStatus.OPEN
    assert task_query(ORG, status="completed").status_filter is TaskStatus.COMPLETED


def test_a_page_token_issued_before_the_history_filters_still_continues(process: Process) -> None:
    # Tokens made without outcome and decider fingerprint as they always did.
    token = task_page_token(task_query(ORG, status="open"), task(process))
    assert task_query(ORG, status="open", page_token=token).after is not None
    with pytest.raises(InvalidArgument):
        task_query(ORG, status="open", outcome="approved", page_token=token)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"outcome": "approve"}, "outcome", id="unknown outcome"),
        pytest.param({"completed_by": "a" * 201}, "completed_by", id="decider too long"),
        pytest.param({"completed_by": "al\x00ice"}, "completed_by", id="decider with NUL"),
        pytest.param({"status": "done"}, "status", id="unknown status"),
        pytest.param({"status": "OPEN"}, "status", id="status is lowercase"),
        pytest.param({"namespace": "globex.deployments"}, "namespace", id="other org"),
        pytest.param({"process_id": "not-a-uuid"}, "process_id", id="malformed process id"),
        pytest.param({"limit": 0}, "limit", id="limit 0"),
        pytest.param({"limit": 201}, "limit", id="limit 201"),
        pytest.param({"offset": -1}, "offset", id="negative offset"),
        pytest.param({"page_token": "garbage!"}, "page_token", id="malformed token"),
    ],
)
def test_bad_task_query_parameters_are_refused_by_name(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        task_query(ORG, **params)
    assert excinfo.value.field == field


def test_a_task_page_token_continues_after_the_last_task(process: Process) -> None:
    first = task_query(ORG, status="pending", limit=1)
    last = task(process)

    following = task_query(ORG, status="pending", limit=20, page_token=task_page_token(first, last))

    assert following.after == TaskPosition(last.created_at, last.task_id)
    assert following.limit == 20


def test_a_task_page_token_is_bound_to_its_filters(process: Process) -> None:
    token = task_page_token(task_query(ORG, status="pending"), task(process))

    with pytest.raises(InvalidArgument) as excinfo:
        task_query(ORG, status="open", page_token=token)
    assert str(excinfo.value) == "page_token: was issued for other filters; keep them unchanged"
    with pytest.raises(InvalidArgument) as excinfo:
        task_query(ORG, status="pending", offset=3, page_token=token)
    assert excinfo.value.field == "offset"


def test_a_task_id_that_is_no_uuid_names_no_task() -> None:
    with pytest.raises(NotFound) as excinfo:
        parse_task_id("review")
    assert str(excinfo.value) == "task 'review' not found"
    task_id = uuid.uuid4()
    assert parse_task_id(str(task_id)) == task_id


# --- the task's own transitions ---------------------------------------------------------------

# Restated from the module docstring's diagram, independently of its table.
ALLOWED = {
    TaskStatus.PENDING: {"open", "cancel"},
    TaskStatus.OPEN: {"complete", "cancel", "expire"},
    TaskStatus.COMPLETED: {"open"},
    TaskStatus.CANCELLED: {"open"},
    TaskStatus.EXPIRED: {"open"},
}
MOVES: dict[str, tuple[Callable[[Task], None], TaskStatus]] = {
    "open": (lambda t: t.open(at(1)), TaskStatus.OPEN),
    "cancel": (lambda t: t.cancel(), TaskStatus.CANCELLED),
    "expire": (lambda t: t.expire(), TaskStatus.EXPIRED),
    "complete": (
        lambda t: t.complete(Outcome.APPROVED, None, REVIEWER, at(1)),
        TaskStatus.COMPLETED,
    ),
}


@pytest.mark.parametrize("status", list(TaskStatus))
@pytest.mark.parametrize("move", list(MOVES))
def test_a_task_moves_only_along_its_diagram(
    process: Process, status: TaskStatus, move: str
) -> None:
    subject = replace(task(process), status=status)
    act, target = MOVES[move]
    if move in ALLOWED[status]:
        act(subject)
        assert subject.status is target
    elif move == "complete":
        # The caller's mistake, and told as such.
        with pytest.raises(FailedPrecondition):
            act(subject)
    else:
        # No change to a process asks this of a task: it would be a bug.
        with pytest.raises(AssertionError):
            act(subject)


# --- separation of duties ---------------------------------------------------------------------


def _caller(token_id: uuid.UUID) -> Caller:
    """A token with both a pipeline's and a person's scopes."""
    scopes = frozenset({Scope.PROCESSES_WRITE, Scope.TASKS_COMPLETE})
    return Caller(ORG, scopes, "ci-and-approver", token_id)


def test_the_token_that_created_the_process_cannot_complete_its_task(opened: Process) -> None:
    error = unchanged(
        opened,
        FailedPrecondition,
        lambda: complete_task(
            opened, task(opened).task_id, APPROVE, _caller(PIPELINE.token_id), at(100)
        ),
    )
    assert "separation of duties" in str(error)
    assert task(opened).status is TaskStatus.OPEN


def test_the_token_that_started_the_step_cannot_complete_its_task(process: Process) -> None:
    starter = _caller(uuid.uuid4())
    apply_update(process, Update("step_started", step="review"), at(10), by=starter)
    assert process.step("review").started_by_token_id == starter.token_id
    error = unchanged(
        process,
        FailedPrecondition,
        lambda: complete_task(process, task(process).task_id, APPROVE, starter, at(100)),
    )
    assert "separation of duties" in str(error)


def test_a_token_with_both_scopes_completes_a_task_it_did_not_drive(opened: Process) -> None:
    other = _caller(uuid.uuid4())
    complete_task(opened, task(opened).task_id, APPROVE, other, at(100))
    assert (task(opened).completed_by_token_id, opened.step("review").completed_by_token_id) == (
        other.token_id,
        other.token_id,
    )


def test_starting_the_step_again_forgets_who_decided_its_last_run(opened: Process) -> None:
    decide(opened, Completion("rejected", "no"))
    update(opened, "step_started", at(200), step="review")
    review = opened.step("review")
    assert (review.completed_by, review.completed_by_token_id) == (None, None)
    assert task(opened).completed_by_token_id is None


# --- the process's budget ---------------------------------------------------------------------


def _full(leave: int) -> Process:
    """A process with an open review task and `leave` bytes of room."""
    process = create(
        step_defs=(
            *(StepDef(f"s{index}", f"S{index}", human=False) for index in range(12)),
            StepDef("review", "Review", human=True, timeout_seconds=3600),
        )
    )
    update(process, "step_started", at(1), step="review")
    for index in range(12):
        room = MAX_PROCESS_BYTES - stored_bytes(process) - leave
        if room <= 0:
            break
        size = min(room, MAX_DATA_BYTES) - len('{"log":""}')
        update(process, "step_completed", at(2), step=f"s{index}", data={"log": "x" * size})
    assert stored_bytes(process) == MAX_PROCESS_BYTES - leave
    return process


@pytest.mark.parametrize("outcome", ["approved", "rejected"])
def test_a_completion_whose_comment_does_not_fit_is_refused_naming_comment(outcome: str) -> None:
    process = _full(leave=100)
    completion = Completion(outcome, "é" * 100)
    error = unchanged(
        process,
        FailedPrecondition,
        lambda: complete_task(process, task(process).task_id, completion, REVIEWER, at(100)),
    )
    assert str(error).startswith("comment: ")
    assert str(MAX_PROCESS_BYTES) in str(error)


def test_a_completion_that_fits_the_last_bytes_is_taken() -> None:
    # The review's error already has room for its timeout's 40 bytes
    # ("timed out after 3600 s without an update"): a rejection grows past them.
    process = _full(leave=10)
    rejection = Completion("rejected", "n" * 40)  # "rejected: " + 40 = 50 bytes
    complete_task(process, task(process).task_id, rejection, REVIEWER, at(9))
    assert stored_bytes(process) == MAX_PROCESS_BYTES


def test_a_timeout_never_takes_a_full_process_past_its_budget() -> None:
    process = _full(leave=0)
    change = time_out(process, "review", at(1 + 3600))
    assert change is not None and process.step("review").status is StepStatus.FAILED
    assert stored_bytes(process) == MAX_PROCESS_BYTES


def test_every_event_payload_carries_only_the_keys_its_type_lists(opened: Process) -> None:
    changes = [
        update(opened, "progress", at(11), step="review", message="m", percent=5),
        decide(opened, Completion("rejected", "no")),
        update(opened, "step_started", at(200), step="build", detail="go"),
        time_out(opened, "build", at(200 + 600)),
        update(opened, "step_completed", at(900), step="deploy", detail="d", data={"a": 1}),
        update(opened, "completed", at(901), summary="ok"),
    ]
    for change in changes:
        assert change is not None
        assert change.event.payload.keys() <= EVENT_FIELDS[change.event.type], change.event
