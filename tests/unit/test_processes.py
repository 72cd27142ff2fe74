"""Unit tests for server.domain.processes: creation, update validation, the step
state machine, current_step and list parameters."""

import uuid
from collections.abc import Sequence
from copy import deepcopy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from server.domain.checks import qualify_namespace
from server.domain.errors import FailedPrecondition, InvalidArgument
from server.domain.processes import (
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MAX_PROCESS_BYTES,
    Change,
    Event,
    ListQuery,
    Process,
    ProcessStatus,
    SortOrder,
    Step,
    StepDef,
    StepStatus,
    Update,
    UpdateType,
    apply_update,
    list_query,
    new_process,
    stored_bytes,
    validate_update,
)
from server.domain.tasks import TaskStatus
from server.domain.tokens import Caller, Scope

ORG = "acme"
T0 = datetime(2026, 2, 24, 12, 0, tzinfo=UTC)
# UTC is timezone.utc (ruff UP017)
PIPELINE = Caller(ORG, frozenset({Scope.PROCESSES_WRITE}), "ci-pipeline", uuid.uuid4())
STEP_DEFS = (
    StepDef("build", "Build", human=False),
    StepDef("test", "Test", human=False),
    StepDef("review", "Review", human=True),
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def create(
    *,
    name: str = "Deploy v2.1.0",
    namespace: str = "deployments",
    step_defs: Sequence[StepDef] = STEP_DEFS,
) -> Process:
    return new_process(
        org_id=ORG, namespace=namespace, name=name, step_defs=step_defs, now=T0, created_by=PIPELINE
    )


def steps(count: int) -> list[StepDef]:
    return [StepDef(f"s{index}", f"Step {index}", human=False) for index in range(count)]


def apply(process: Process, type_: str, now: datetime | None = None, **fields: Any) -> Change:
    """Applies an update; unless told otherwise, each update comes one second after the last."""
    when = now if now is not None else at(process.update_count + 1)
    return apply_update(process, Update(type_, **fields), when, by=PIPELINE)


def drive(process: Process, key: str, status: StepStatus) -> None:
    """Brings a pending step into `status` through accepted updates."""
    if status is not StepStatus.PENDING:
        apply(process, "step_started", step=key)
    if status is StepStatus.COMPLETED:
        apply(process, "step_completed", step=key)
    elif status is StepStatus.FAILED:
        apply(process, "step_failed", step=key, error="boom")


def reject(process: Process, update: Update, error: type[Exception]) -> Exception:
    """Asserts the update is rejected with `error` and leaves the process exactly as it was."""
    before = deepcopy(process)
    with pytest.raises(error) as excinfo:
        apply_update(process, update, at(60), by=PIPELINE)
    assert process == before
    return excinfo.value


@pytest.fixture
def process() -> Process:
    return create()


# --- creation ---------------------------------------------------------------------------------


def test_new_process_is_running_with_all_steps_pending(process: Process) -> None:
    assert process.org_id == ORG
    assert process.namespace == "acme.deployments"
    assert process.name == "Deploy v2.1.0"
    assert process.status is ProcessStatus.RUNNING
    assert process.started_at == T0
    assert (process.finished_at, process.summary, process.error) == (None, None, None)
    assert process.update_count == 0
    assert process.current_step is None
    assert [(s.key, s.label, s.human) for s in process.steps] == [
        ("build", "Build", False),
        ("test", "Test", False),
        ("review", "Review", True),
    ]
    for step in process.steps:
        assert step.status is StepStatus.PENDING
        assert (step.started_at, step.completed_at, step.duration_ms) == (None, None, None)
        assert (step.detail, step.data, step.error) == (None, None, None)
        assert (step.progress_message, step.progress_percent) == (None, None)


def test_only_human_steps_get_task_ids_listed_in_step_order() -> None:
    process = create(
        step_defs=[
            StepDef("approve", "Approve", human=True),
            StepDef("build", "Build", human=False),
            StepDef("sign_off", "Sign off", human=True),
        ]
    )
    approve, build, sign_off = process.steps
    assert isinstance(approve.task_id, uuid.UUID)
    assert isinstance(sign_off.task_id, uuid.UUID)
    assert approve.task_id != sign_off.task_id
    assert build.task_id is None
    assert process.task_ids == [approve.task_id, sign_off.task_id]


def test_each_process_gets_its_own_ids() -> None:
    first, second = create(), create()
    assert first.process_id != second.process_id
    assert first.task_ids != second.task_ids


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"name": ""}, "name", id="empty name"),
        pytest.param({"name": "   "}, "name", id="blank name"),
        pytest.param({"name": "x" * 201}, "name", id="name over 200 chars"),
        pytest.param({"namespace": ""}, "namespace", id="empty namespace"),
        pytest.param({"namespace": "other.deployments"}, "namespace", id="foreign namespace"),
        pytest.param({"step_defs": []}, "step_defs", id="no steps"),
        pytest.param({"step_defs": steps(201)}, "step_defs", id="201 steps"),
        pytest.param(
            {"step_defs": [StepDef("a", "A", False), StepDef("a", "B", False)]},
            "step_defs[1].key",
            id="duplicate key",
        ),
        *(
            pytest.param(
                {"step_defs": [StepDef("a", "A", False), StepDef(key, "B", False)]},
                "step_defs[1].key",
                id=f"bad key {key!r}",
            )
            for key in ["", "has space", "-leading-dash", "_leading", "ümlaut", "k" * 65]
        ),
        *(
            pytest.param(
                {"step_defs": [StepDef("a", "A", False), StepDef("b", label, False)]},
                "step_defs[1].label",
                id=f"bad label {label[:5]!r}",
            )
            for label in ["", "  ", "l" * 201]
        ),
    ],
)
def test_new_process_rejects_invalid_request(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        create(**overrides)
    assert excinfo.value.field == field


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"name": "x" * 200}, id="200-char name"),
        pytest.param({"step_defs": steps(1)}, id="1 step"),
        pytest.param({"step_defs": steps(200)}, id="200 steps"),
        pytest.param({"step_defs": [StepDef("k" * 64, "l" * 200, False)]}, id="longest key+label"),
        pytest.param({"step_defs": [StepDef("9a_b.c-D", "X", False)]}, id="all key chars"),
    ],
)
def test_new_process_accepts_values_at_the_limits(overrides: dict[str, Any]) -> None:
    process = create(**overrides)
    expected_defs = overrides.get("step_defs", STEP_DEFS)
    assert [step.key for step in process.steps] == [d.key for d in expected_defs]
    assert process.name == overrides.get("name", "Deploy v2.1.0")


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        ("deployments", "acme.deployments"),
        ("acme.deployments", "acme.deployments"),
        ("acme.eu.prod", "acme.eu.prod"),
    ],
)
def test_qualify_namespace_places_names_in_the_callers_org(namespace: str, expected: str) -> None:
    assert qualify_namespace(ORG, namespace) == expected
    assert create(namespace=namespace).namespace == expected


@pytest.mark.parametrize(
    "namespace", ["", "other.deployments", ".deployments", "acme.", "acme.-x", "bad name"]
)
def test_qualify_namespace_rejects_foreign_or_malformed_namespace(namespace: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        qualify_namespace(ORG, namespace)
    assert excinfo.value.field == "namespace"


# --- update shape -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        (Update("step_started", step="build"), UpdateType.STEP_STARTED),
        (Update("step_started", step="build", detail="Building..."), UpdateType.STEP_STARTED),
        (
            Update("step_completed", step="build", detail="ok", data={"tag": "v2"}),
            UpdateType.STEP_COMPLETED,
        ),
        (Update("step_failed", step="test", error="3 failed"), UpdateType.STEP_FAILED),
        (Update("progress", step="b", message="3/10", percent=30), UpdateType.PROGRESS),
        (Update("progress", step="b", message="compiling"), UpdateType.PROGRESS),
        (Update("progress", step="b", percent=0), UpdateType.PROGRESS),
        (Update("progress", step="b", percent=100), UpdateType.PROGRESS),
        (Update("completed"), UpdateType.COMPLETED),
        (Update("completed", summary="done"), UpdateType.COMPLETED),
        (Update("failed", error="timeout"), UpdateType.FAILED),
    ],
)
def test_validate_update_accepts_documented_shapes(update: Update, expected: UpdateType) -> None:
    assert validate_update(update) is expected


def nested(levels: int, container: type = dict) -> Any:
    """`levels` levels of objects (or of arrays) around a number."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value} if container is dict else [value]
    return value


@pytest.mark.parametrize(
    "data",
    [
        # 2 bytes each in UTF-8, though 6 as the JSON escape `\u00e9`.
        pytest.param({"log": "é" * (MAX_DATA_BYTES // 2 - 10)}, id="UTF-8 bytes, not escapes"),
        pytest.param(nested(MAX_DATA_DEPTH), id="deepest objects"),
        pytest.param({"a": nested(MAX_DATA_DEPTH - 1, list)}, id="deepest arrays"),
    ],
)
def test_data_within_the_limits_is_accepted(data: dict[str, Any]) -> None:
    assert validate_update(Update("step_completed", step="b", data=data))


@pytest.mark.parametrize(
    ("update", "field"),
    [
        pytest.param(Update(""), "type", id="no type"),
        pytest.param(Update("step_skipped", step="build"), "type", id="unknown type"),
        pytest.param(Update("step_started"), "step", id="step_started without step"),
        pytest.param(Update("step_completed"), "step", id="step_completed without step"),
        pytest.param(Update("step_failed", error="x"), "step", id="step_failed without step"),
        pytest.param(Update("progress", percent=5), "step", id="progress without step"),
        pytest.param(Update("step_failed", step="b"), "error", id="step_failed without error"),
        pytest.param(Update("failed"), "error", id="failed without error"),
        pytest.param(Update("progress", step="b"), "message", id="progress without content"),
        pytest.param(Update("step_started", step="b", percent=5), "percent", id="percent"),
        pytest.param(Update("step_started", step="b", data={}), "data", id="data on start"),
        pytest.param(Update("step_failed", step="b", error="x", summary="s"), "summary", id="sum"),
        pytest.param(Update("progress", step="b", percent=5, detail="d"), "detail", id="detail"),
        pytest.param(Update("completed", step="build"), "step", id="step on completed"),
        pytest.param(Update("completed", error="x"), "error", id="error on completed"),
        pytest.param(Update("failed", error="x", summary="s"), "summary", id="summary on failed"),
        pytest.param(Update("progress", step="b", percent=-1), "percent", id="percent -1"),
        pytest.param(Update("progress", step="b", percent=101), "percent", id="percent 101"),
        pytest.param(Update("failed", error="a\x00b"), "error", id="NUL in text"),
        pytest.param(
            Update("step_completed", step="b", data={"log": ["ok", "a\x00"]}), "data", id="NUL"
        ),
        pytest.param(Update("step_completed", step="b", data={"\x00": 1}), "data", id="NUL key"),
        pytest.param(
            Update("step_completed", step="b", data={"x": float("nan")}), "data", id="NaN"
        ),
        pytest.param(
            Update("step_completed", step="b", data={"x": float("inf")}), "data", id="Infinity"
        ),
        pytest.param(Update("failed", error=""), "error", id="empty error"),
        pytest.param(Update("step_failed", step="b", error=" \n\t"), "error", id="blank error"),
        pytest.param(Update("progress", step="b", message=""), "message", id="empty message"),
        pytest.param(
            Update("progress", step="b", message=" ", percent=5), "message", id="blank message"
        ),
        pytest.param(Update("completed", summary="\ud800"), "summary", id="lone surrogate"),
        pytest.param(
            Update("step_completed", step="b", data={"log": "é" * (MAX_DATA_BYTES // 2)}),
            "data",
            id="data over the limit in UTF-8 bytes",
        ),
        pytest.param(
            Update("step_completed", step="b", data=nested(MAX_DATA_DEPTH + 1)),
            "data",
            id="data too deep",
        ),
        pytest.param(
            Update("step_completed", step="b", data={"a": nested(MAX_DATA_DEPTH, list)}),
            "data",
            id="data too deep in a list",
        ),
    ],
)
def test_validate_update_rejects_malformed_update(update: Update, field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        validate_update(update)
    assert excinfo.value.field == field


# --- step state machine -----------------------------------------------------------------------


def test_step_started_runs_a_pending_step(process: Process) -> None:
    change = apply(process, "step_started", now=at(5), step="test", detail="Running tests")

    assert change == Change(
        event=Event(
            seq=1,
            type=UpdateType.STEP_STARTED,
            step="test",
            payload={"detail": "Running tests"},
            recorded_at=at(5),
            actor="ci-pipeline",
        ),
        step_positions=(1,),
    )
    step = process.step("test")
    assert step.status is StepStatus.RUNNING
    assert step.started_at == at(5)
    assert step.detail == "Running tests"
    assert (step.completed_at, step.duration_ms) == (None, None)
    assert process.update_count == 1
    assert process.status is ProcessStatus.RUNNING


def test_progress_keeps_the_value_not_sent(process: Process) -> None:
    drive(process, "build", StepStatus.RUNNING)
    step = process.step("build")

    change = apply(process, "progress", step="build", message="Compiling", percent=10)
    assert change.event.payload == {"message": "Compiling", "percent": 10}
    assert (step.progress_message, step.progress_percent) == ("Compiling", 10)

    apply(process, "progress", step="build", percent=0)
    assert (step.progress_message, step.progress_percent) == ("Compiling", 0)

    apply(process, "progress", step="build", message="Linking")
    assert (step.progress_message, step.progress_percent) == ("Linking", 0)
    assert step.status is StepStatus.RUNNING


def test_step_completed_finishes_a_running_step(process: Process) -> None:
    apply(process, "step_started", now=at(0), step="build", detail="Building")
    apply(process, "progress", now=at(60), step="build", message="Half way", percent=50)

    change = apply(
        process, "step_completed", now=at(120), step="build", detail="Built", data={"tag": "v2"}
    )

    assert change == Change(
        event=Event(
            seq=3,
            type=UpdateType.STEP_COMPLETED,
            step="build",
            payload={"detail": "Built", "data": {"tag": "v2"}},
            recorded_at=at(120),
            actor="ci-pipeline",
        ),
        step_positions=(0,),
    )
    step = process.step("build")
    assert step.status is StepStatus.COMPLETED
    assert (step.started_at, step.completed_at) == (at(0), at(120))
    assert step.duration_ms == 120_000
    assert (step.detail, step.data) == ("Built", {"tag": "v2"})
    assert (step.progress_message, step.progress_percent) == (None, None)


def test_step_completed_without_detail_keeps_the_start_detail(process: Process) -> None:
    apply(process, "step_started", step="build", detail="Building")
    apply(process, "step_completed", step="build")

    step = process.step("build")
    assert (step.detail, step.data) == ("Building", None)


def test_step_completed_on_a_pending_step_counts_as_started_then(process: Process) -> None:
    apply(process, "step_completed", now=at(30), step="review", detail="Approved")

    step = process.step("review")
    assert step.status is StepStatus.COMPLETED
    assert step.started_at == step.completed_at == at(30)
    assert step.duration_ms == 0
    assert step.detail == "Approved"


@pytest.mark.parametrize(
    ("elapsed", "expected_ms"),
    [
        (timedelta(0), 0),
        (timedelta(microseconds=999), 0),
        (timedelta(seconds=1, microseconds=234_567), 1234),
        (timedelta(hours=2), 7_200_000),
        (timedelta(seconds=-3), 0),  # the wall clock stepped back
    ],
)
def test_duration_ms_is_whole_milliseconds(elapsed: timedelta, expected_ms: int) -> None:
    step = Step("s", "S", human=False, started_at=T0, completed_at=T0 + elapsed)
    assert step.duration_ms == expected_ms
    assert type(step.duration_ms) is int


@pytest.mark.parametrize("prior", [StepStatus.PENDING, StepStatus.RUNNING])
def test_step_failed_records_the_error(process: Process, prior: StepStatus) -> None:
    drive(process, "test", prior)
    started_at = process.step("test").started_at
    seq = process.update_count + 1
    now = at(seq)

    change = apply(process, "step_failed", now=now, step="test", error="3 tests failed")

    assert change.event == Event(
        seq=seq,
        type=UpdateType.STEP_FAILED,
        step="test",
        payload={"error": "3 tests failed"},
        recorded_at=now,
        actor="ci-pipeline",
    )
    assert change.step_positions == (1,)
    step = process.step("test")
    assert step.status is StepStatus.FAILED
    assert step.error == "3 tests failed"
    assert step.started_at == (now if prior is StepStatus.PENDING else started_at)
    # A failed run ended too, and the timeline shows how long it took.
    assert step.completed_at == now
    assert step.duration_ms == (0 if prior is StepStatus.PENDING else 1000)
    assert process.status is ProcessStatus.RUNNING


def test_restarting_a_failed_step_clears_the_previous_run(process: Process) -> None:
    apply(process, "step_started", now=at(1), step="test", detail="first try")
    apply(process, "progress", now=at(2), step="test", message="flaky", percent=40)
    apply(process, "step_failed", now=at(3), step="test", error="timeout")

    change = apply(process, "step_started", now=at(10), step="test", detail="second try")

    assert change.event.seq == 4
    step = process.step("test")
    assert step.status is StepStatus.RUNNING
    assert (step.started_at, step.completed_at, step.duration_ms) == (at(10), None, None)
    assert (step.detail, step.data, step.error) == ("second try", None, None)
    assert (step.progress_message, step.progress_percent) == (None, None)


def test_a_restarted_step_can_complete(process: Process) -> None:
    drive(process, "test", StepStatus.FAILED)
    apply(process, "step_started", now=at(100), step="test")
    apply(process, "step_completed", now=at(101), step="test", data={"passed": 12})

    step = process.step("test")
    assert step.status is StepStatus.COMPLETED
    assert (step.duration_ms, step.data, step.error) == (1000, {"passed": 12}, None)


@pytest.mark.parametrize(
    ("status", "update"),
    [
        (StepStatus.RUNNING, Update("step_started", step="build")),
        (StepStatus.COMPLETED, Update("step_started", step="build")),
        (StepStatus.COMPLETED, Update("step_completed", step="build")),
        (StepStatus.FAILED, Update("step_completed", step="build")),
        (StepStatus.COMPLETED, Update("step_failed", step="build", error="x")),
        (StepStatus.FAILED, Update("step_failed", step="build", error="x")),
        (StepStatus.PENDING, Update("progress", step="build", percent=5)),
        (StepStatus.COMPLETED, Update("progress", step="build", percent=5)),
        (StepStatus.FAILED, Update("progress", step="build", message="m")),
    ],
    ids=lambda value: value.value if isinstance(value, StepStatus) else value.type,
)
def test_transition_not_allowed_from_step_status_is_rejected_without_change(
    process: Process, status: StepStatus, update: Update
) -> None:
    drive(process, "build", status)
    reject(process, update, FailedPrecondition)


@pytest.mark.parametrize(
    "update",
    [
        Update("step_started", step="deploy"),
        Update("progress", step="deploy", percent=1),
        Update("step_completed", step="Build"),
        Update("step_failed", step="", error="x"),
    ],
)
def test_update_for_unknown_step_is_rejected_without_change(
    process: Process, update: Update
) -> None:
    drive(process, "build", StepStatus.RUNNING)
    error = reject(process, update, InvalidArgument)
    assert isinstance(error, InvalidArgument)
    assert error.field == "step"


def test_malformed_update_is_rejected_without_change(process: Process) -> None:
    drive(process, "build", StepStatus.RUNNING)
    error = reject(process, Update("progress", step="build", percent=101), InvalidArgument)
    assert isinstance(error, InvalidArgument)
    assert error.field == "percent"


def test_event_seq_counts_accepted_updates_only(process: Process) -> None:
    seqs = [apply(process, "step_started", step="build").event.seq]
    reject(process, Update("step_started", step="build"), FailedPrecondition)
    reject(process, Update("step_started", step="nope"), InvalidArgument)
    seqs.append(apply(process, "step_completed", step="build").event.seq)
    seqs.append(apply(process, "completed").event.seq)

    assert seqs == [1, 2, 3]
    assert process.update_count == 3


# --- finishing the process --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "status", "summary", "error"),
    [
        (Update("completed", summary="Deployed"), ProcessStatus.COMPLETED, "Deployed", None),
        (Update("completed"), ProcessStatus.COMPLETED, None, None),
        (Update("failed", error="health check"), ProcessStatus.FAILED, None, "health check"),
    ],
)
def test_completed_and_failed_finish_the_process(
    process: Process,
    update: Update,
    status: ProcessStatus,
    summary: str | None,
    error: str | None,
) -> None:
    drive(process, "build", StepStatus.RUNNING)

    change = apply_update(process, update, at(90), by=PIPELINE)

    review = process.step("review").task
    assert review is not None
    assert change == Change(
        event=Event(
            seq=2,
            type=UpdateType(update.type),
            step=None,
            payload=update.sent_fields(),
            recorded_at=at(90),
            actor="ci-pipeline",
        ),
        # Every step ends with the process (tests/unit/test_finishing.py).
        step_positions=(0, 1, 2),
        # The human step's task waits for nothing any more (tests/unit/test_tasks.py).
        tasks=(review,),
    )
    assert process.status is status
    assert (process.summary, process.error) == (summary, error)
    assert process.finished_at == at(90)
    assert review.status is TaskStatus.CANCELLED
    assert [step.status for step in process.steps] == [
        StepStatus.CANCELLED,
        StepStatus.SKIPPED,
        StepStatus.SKIPPED,
    ]


FINISHERS = [Update("completed", summary="done"), Update("failed", error="broken")]
EVERY_UPDATE_TYPE = [
    Update("step_started", step="test"),
    Update("step_completed", step="test"),
    Update("step_failed", step="test", error="x"),
    Update("progress", step="build", percent=50),
    Update("completed"),
    Update("failed", error="again"),
]


@pytest.mark.parametrize("finisher", FINISHERS, ids=lambda update: update.type)
@pytest.mark.parametrize("update", EVERY_UPDATE_TYPE, ids=lambda update: update.type)
def test_finished_process_accepts_no_more_updates(
    process: Process, finisher: Update, update: Update
) -> None:
    drive(process, "build", StepStatus.RUNNING)
    apply_update(process, finisher, at(10), by=PIPELINE)

    reject(process, update, FailedPrecondition)


# --- current_step -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("updates", "expected"),
    [
        pytest.param([], None, id="fresh process"),
        pytest.param([("step_started", "build")], "build", id="only running step"),
        pytest.param(
            [("step_started", "test"), ("step_started", "build")],
            "build",
            id="two running: later started wins over position",
        ),
        pytest.param(
            [("step_started", "build"), ("step_started", "test"), ("progress", "build")],
            "test",
            id="two running: later started wins over later changed",
        ),
        pytest.param(
            [("step_started", "build"), ("step_started", "test"), ("step_completed", "test")],
            "build",
            id="running step wins over later completed one",
        ),
        pytest.param(
            [("step_started", "build"), ("step_completed", "build")],
            "build",
            id="none running: last changed",
        ),
        pytest.param(
            [("step_completed", "review"), ("step_completed", "build")],
            "build",
            id="none running: last changed wins over position",
        ),
        pytest.param(
            [("step_started", "build"), ("step_completed", "test"), ("step_failed", "build")],
            "build",
            id="none running: failed last",
        ),
        pytest.param(
            [("step_failed", "build"), ("step_started", "test"), ("step_started", "build")],
            "build",
            id="restarted step is the latest started",
        ),
    ],
)
def test_current_step(
    process: Process, updates: list[tuple[str, str]], expected: str | None
) -> None:
    fields: dict[str, dict[str, Any]] = {"progress": {"percent": 1}, "step_failed": {"error": "x"}}
    for type_, key in updates:
        apply(process, type_, step=key, **fields.get(type_, {}))
    assert process.current_step == expected


# --- list_query -------------------------------------------------------------------------------


def test_list_query_defaults() -> None:
    assert list_query(ORG) == ListQuery(
        org_id=ORG,
        status=None,
        namespace=None,
        search=None,
        sort=SortOrder.NEWEST,
        limit=50,
        offset=0,
    )


def test_list_query_takes_every_filter() -> None:
    query = list_query(
        ORG,
        status="completed",
        namespace="deployments",
        search="deploy",
        sort="oldest",
        limit=10,
        offset=20,
    )
    assert query == ListQuery(
        org_id=ORG,
        status=ProcessStatus.COMPLETED,
        namespace="acme.deployments",
        search="deploy",
        sort=SortOrder.OLDEST,
        limit=10,
        offset=20,
    )


@pytest.mark.parametrize(("limit", "offset"), [(1, 0), (200, 0), (50, 1_000_000)])
def test_list_query_accepts_page_bounds(limit: int, offset: int) -> None:
    query = list_query(ORG, limit=limit, offset=offset)
    assert (query.limit, query.offset) == (limit, offset)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": -1}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "done"}, "status"),
        ({"status": "RUNNING"}, "status"),
        ({"sort": "alphabetical"}, "sort"),
        ({"namespace": "other.deployments"}, "namespace"),
        ({"search": "s" * 201}, "search"),
    ],
)
def test_list_query_rejects_invalid_parameter(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as excinfo:
        list_query(ORG, **params)
    assert excinfo.value.field == field


# --- the size budget of a process ----------------------------------------------------------


def filled(process: Process, *, leave: int) -> None:
    """Completes steps with large data until fewer than `leave` bytes of budget remain."""
    for step in process.steps:
        room = MAX_PROCESS_BYTES - stored_bytes(process) - leave
        if room <= 0:
            return
        size = min(room, MAX_DATA_BYTES) - len('{"log":""}')
        apply(process, "step_completed", step=step.key, data={"log": "x" * size})
    raise AssertionError("not enough steps to fill the process")


@pytest.fixture
def roomy() -> Process:
    return create(step_defs=steps(20))


def test_a_process_takes_updates_up_to_its_budget(roomy: Process) -> None:
    filled(roomy, leave=100)
    spare = MAX_PROCESS_BYTES - stored_bytes(roomy)

    apply(roomy, "step_started", step="s19", detail="d" * spare)

    assert stored_bytes(roomy) == MAX_PROCESS_BYTES


@pytest.mark.parametrize(
    ("update", "field"),
    [
        (Update("step_completed", step="s19", detail="d", data={"log": "x" * 200}), "data"),
        (Update("step_started", step="s19", detail="é" * 100), "detail"),
        (Update("step_failed", step="s19", error="e" * 200), "error"),
        (Update("completed", summary="s" * 200), "summary"),
        (Update("failed", error="e" * 200), "error"),
    ],
    ids=lambda value: getattr(value, "type", ""),
)
def test_an_update_past_the_budget_is_refused_without_change(
    roomy: Process, update: Update, field: str
) -> None:
    filled(roomy, leave=100)

    error = reject(roomy, update, FailedPrecondition)

    assert str(error).startswith(f"{field}: the process would hold")
    assert str(MAX_PROCESS_BYTES) in str(error)


def test_a_full_process_still_takes_updates_that_do_not_grow_it(roomy: Process) -> None:
    filled(roomy, leave=0)
    drive(roomy, "s19", StepStatus.RUNNING)

    apply(roomy, "progress", step="s19", percent=50)
    apply(roomy, "completed")

    assert roomy.status is ProcessStatus.COMPLETED
