"""Processes, their steps and the tasks of their human steps: validation and
the state machine.

Plain Python without I/O. Storage loads a `Process` (with its steps and their
tasks); `apply_update`, `complete_task` or `time_out` changes it in memory (or
raises, leaving it untouched) and returns a `Change` that names what to write
back, together with the event to log.
"""

import enum
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from server.domain.checks import check_text, one_of, parse_choice, qualify_namespace
from server.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from server.domain.paging import (
    DEFAULT_PAGE_SIZE,
    check_window,
    fingerprint,
    make_page_token,
    read_page_token,
    split_page,
)
from server.domain.tasks import Completion, Outcome, Task, validate_completion
from server.domain.tokens import Caller

# Text lengths count characters (Unicode code points); byte sizes count UTF-8.
MAX_NAME_LENGTH = 200
MAX_LABEL_LENGTH = 200
MAX_STEPS = 100
MAX_DATA_BYTES = 64 * 1024  # `data` as compact JSON
MAX_TIMEOUT_SECONDS = 30 * 24 * 60 * 60
# Levels of objects and arrays in `data`, itself included. Protobuf decoders
# stop at 100 levels of messages by default, and each level of JSON costs up
# to three of them in a google.protobuf.Struct (Struct, map entry, Value):
# 20 levels stay well clear of that in a request and in a Process alike.
MAX_DATA_DEPTH = 20
# All the text and data one process holds (see `stored_bytes`). Whatever is
# accepted must be served: as JSON Envoy escapes a character into at most 6
# bytes, and protobuf encodes a one-byte JSON number in at most 11, so a
# process within this budget reads back in about 3 MiB either way, inside
# gRPC's default 4 MiB message limit and Envoy's response buffer
# (envoy/envoy.yaml, max_response_body_size).
MAX_PROCESS_BYTES = 512 * 1024
_STEP_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ORG_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
DEFAULT_EVENTS_PAGE_SIZE = 100
MAX_EVENTS_PAGE_SIZE = 1000
# What one read of the event log returns at most, besides its first event
# (which always comes, so that paging makes progress): the events' payloads
# as PostgreSQL writes them in JSON, plus EVENT_OVERHEAD_BYTES each. JSON
# through Envoy escapes a character into at most 6 bytes, and protobuf
# encodes a one-byte JSON number in at most 11, so a page reads back in
# under 3 MiB either way: inside gRPC's default 4 MiB message limit and
# Envoy's response buffer (envoy/envoy.yaml, max_response_body_size). A
# single event holds far less (its texts and `data` are bounded).
MAX_EVENTS_PAGE_BYTES = 256 * 1024
# An event's own fields beside its payload (seq, type, step, timestamp), as
# the page's byte budget counts them.
EVENT_OVERHEAD_BYTES = 128

JsonObject = dict[str, Any]


class ProcessStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class UpdateType(enum.StrEnum):
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"


class EventType(enum.StrEnum):
    """What htk itself logs to a process's events, besides clients' updates."""

    TASK_COMPLETED = "task_completed"
    STEP_TIMED_OUT = "step_timed_out"


# For each type: (the fields it requires, the fields it also accepts).
_FIELDS: dict[UpdateType, tuple[frozenset[str], frozenset[str]]] = {
    UpdateType.STEP_STARTED: (frozenset({"step"}), frozenset({"detail"})),
    UpdateType.STEP_COMPLETED: (frozenset({"step"}), frozenset({"detail", "data"})),
    UpdateType.STEP_FAILED: (frozenset({"step", "error"}), frozenset()),
    UpdateType.PROGRESS: (frozenset({"step"}), frozenset({"message", "percent"})),
    UpdateType.COMPLETED: (frozenset(), frozenset({"summary"})),
    UpdateType.FAILED: (frozenset({"error"}), frozenset()),
}


# The payload keys each type of event may carry, besides its step: what an
# update carried (but its step), or what htk records of its own events. Every
# key has a field of its own in the API's ProcessEvent, which transport fills
# explicitly; a key that is not listed here would never be shown.
EVENT_FIELDS: dict["UpdateType | EventType", frozenset[str]] = {
    **{
        update_type: (required | optional) - {"step"}
        for update_type, (required, optional) in _FIELDS.items()
    },
    EventType.TASK_COMPLETED: frozenset(
        {"task_id", "outcome", "comment", "completed_by", "completed_by_token_id"}
    ),
    EventType.STEP_TIMED_OUT: frozenset({"error", "timeout_seconds"}),
}


def event_type(name: str) -> "UpdateType | EventType":
    """The type of a logged event, by its name: a client's update, or htk's own."""
    return UpdateType(name) if name in UpdateType.__members__.values() else EventType(name)


class SortOrder(enum.StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"


def validate_org_id(org_id: str) -> str:
    if not _ORG_ID.fullmatch(org_id):
        raise InvalidArgument(
            "org", "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )
    return org_id


def _check_data(data: JsonObject) -> None:
    if _nests_deeper(data, MAX_DATA_DEPTH):
        raise InvalidArgument("data", DATA_TOO_DEEP)
    for text in _strings_in(data):
        check_text("data", text, max_length=MAX_DATA_BYTES)
    try:
        size = _json_bytes(data)
    except ValueError:
        raise InvalidArgument("data", "numbers must be finite (no NaN or Infinity)") from None
    if size > MAX_DATA_BYTES:
        raise InvalidArgument(
            "data", f"must be at most {MAX_DATA_BYTES} bytes of JSON (UTF-8), got {size}"
        )


DATA_TOO_DEEP = f"must nest at most {MAX_DATA_DEPTH} levels of objects and arrays"


def _nests_deeper(value: Any, levels: int) -> bool:
    """Whether `value` holds more than `levels` levels of objects and arrays."""
    if isinstance(value, dict):
        children: Iterable[Any] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels == 0 or any(_nests_deeper(child, levels - 1) for child in children)


def _json_bytes(value: Any) -> int:
    """The size of `value` as compact JSON in UTF-8, as `data` is measured."""
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return len(compact.encode())


def _strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON value, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)


@dataclass(frozen=True)
class PagePosition:
    """Where a page ended, in sort order: its last process's start time and id."""

    started_at: datetime
    process_id: uuid.UUID


@dataclass(frozen=True)
class ListQuery:
    """A validated ListProcesses request of one organization."""

    org_id: str
    status: ProcessStatus | None = None
    namespace: str | None = None
    search: str | None = None
    sort: SortOrder = SortOrder.NEWEST
    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    # Set by a page token: the page starts right after this position.
    after: PagePosition | None = None

    def filters_fingerprint(self) -> str:
        """Identifies the filters and sort order, which a page token must not change."""
        return fingerprint([self.status, self.namespace, self.search, self.sort])


def page_token(query: ListQuery, last: "ProcessSummary") -> str:
    """The token for the page after the one ending with `last`."""
    return make_page_token(query.filters_fingerprint(), last.started_at, last.process_id)


def list_query(
    org_id: str,
    *,
    status: str = "",
    namespace: str = "",
    search: str = "",
    sort: str = "",
    limit: int | None = None,
    offset: int | None = None,
    page_token: str = "",
) -> ListQuery:
    """Validates list parameters; empty strings and None mean "not given"."""
    limit, offset = check_window(limit, offset)
    check_text("search", search, MAX_NAME_LENGTH)
    query = ListQuery(
        org_id=org_id,
        status=parse_choice(ProcessStatus, "status", status) if status else None,
        namespace=qualify_namespace(org_id, namespace) if namespace else None,
        search=search or None,
        sort=parse_choice(SortOrder, "sort", sort) if sort else SortOrder.NEWEST,
        limit=limit,
        offset=offset,
    )
    if not page_token:
        return query
    after = read_page_token(
        page_token,
        offset=offset,
        filters_fingerprint=query.filters_fingerprint(),
        filters="filters or sort order",
    )
    return replace(query, after=PagePosition(*after))


@dataclass(frozen=True)
class StepDef:
    key: str
    label: str
    human: bool
    timeout_seconds: int | None = None


@dataclass
class Step:
    """One step of a process: its definition and the state of its latest run."""

    key: str
    label: str
    human: bool
    # The task of a human step, None for the others.
    task: Task | None = None
    timeout_seconds: int | None = None
    status: StepStatus = StepStatus.PENDING
    started_at: datetime | None = None
    completed_at: datetime | None = None
    detail: str | None = None
    data: JsonObject | None = None
    error: str | None = None
    progress_message: str | None = None
    progress_percent: int | None = None
    # Sequence numbers of the updates that last started / last changed the
    # step: they order steps for `current_step` without comparing clocks.
    started_seq: int | None = None
    changed_seq: int | None = None
    # The name and id of the token that completed the step's task, if that
    # decided the run.
    completed_by: str | None = None
    completed_by_token_id: uuid.UUID | None = None
    # The token whose update started the step's latest run: it may not decide
    # the run's task (separation of duties). None before htk recorded it.
    started_by_token_id: uuid.UUID | None = None
    # When the step times out unless an update comes first: set while a step
    # with a timeout runs in a running process, None otherwise, so that
    # storage can index the steps due.
    deadline_at: datetime | None = None

    @property
    def task_id(self) -> uuid.UUID | None:
        return self.task.task_id if self.task is not None else None

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.completed_at is None:
            return None
        # Clamped: a wall clock stepped back must not make a negative duration.
        return max(0, (self.completed_at - self.started_at) // timedelta(milliseconds=1))


@dataclass
class Process:
    process_id: uuid.UUID
    org_id: str
    namespace: str
    name: str
    started_at: datetime
    steps: list[Step]
    status: ProcessStatus = ProcessStatus.RUNNING
    finished_at: datetime | None = None
    summary: str | None = None
    error: str | None = None
    # How many updates have been accepted; the next one gets this + 1.
    update_count: int = 0
    # The token that created the process: it may not decide the process's
    # tasks (separation of duties). None for processes created before htk
    # recorded it.
    created_by_token_id: uuid.UUID | None = None

    @property
    def current_step(self) -> str | None:
        running = [step for step in self.steps if step.status is StepStatus.RUNNING]
        if running:
            return max(running, key=lambda step: step.started_seq or 0).key
        changed = [step for step in self.steps if step.changed_seq is not None]
        if changed:
            return max(changed, key=lambda step: step.changed_seq or 0).key
        return None

    @property
    def tasks(self) -> list[Task]:
        """The tasks of the human steps, in step order."""
        return [step.task for step in self.steps if step.task is not None]

    @property
    def task_ids(self) -> list[uuid.UUID]:
        return [task.task_id for task in self.tasks]

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        known = ", ".join(step.key for step in self.steps)
        raise InvalidArgument("step", f"{key!r} is not a step of this process (steps: {known})")

    def step_of_task(self, task_id: uuid.UUID) -> Step:
        for step in self.steps:
            if step.task_id == task_id:
                return step
        raise NotFound(f"task {task_id} not found")


@dataclass(frozen=True)
class ProcessSummary:
    """A process as a list shows it: no step definitions, no timeline."""

    process_id: uuid.UUID
    namespace: str
    name: str
    status: ProcessStatus
    current_step: str | None
    started_at: datetime
    step_count: int
    task_ids: list[uuid.UUID]


@dataclass(frozen=True)
class ProcessPage:
    processes: list[ProcessSummary]
    total: int
    # The token for the next page; None on the last page.
    next_page_token: str | None


def process_page(query: ListQuery, matches: list[ProcessSummary], total: int) -> ProcessPage:
    """The page to return from up to `query.limit + 1` matches read in sort order."""
    shown, last = split_page(matches, query.limit)
    next_token = page_token(query, last) if last is not None else None
    return ProcessPage(processes=shown, total=total, next_page_token=next_token)


def parse_process_id(text: str) -> uuid.UUID:
    """Reads a process id; text that is no UUID names no process, hence NotFound."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound(f"process {text!r} not found") from None


def utc_now() -> datetime:
    """The current time, to the millisecond as the API shows it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_process(
    *,
    org_id: str,
    namespace: str,
    name: str,
    step_defs: Sequence[StepDef],
    now: datetime,
    created_by: uuid.UUID,
) -> Process:
    """Validates a creation request and returns the new, running process."""
    if not name.strip():
        raise InvalidArgument("name", "is required")
    check_text("name", name, MAX_NAME_LENGTH)
    qualified = qualify_namespace(org_id, namespace)
    if not step_defs:
        raise InvalidArgument("step_defs", "at least one step is required")
    if len(step_defs) > MAX_STEPS:
        raise InvalidArgument("step_defs", f"at most {MAX_STEPS} steps are allowed")
    seen: set[str] = set()
    for index, step_def in enumerate(step_defs):
        where = f"step_defs[{index}]"
        if not _STEP_KEY.fullmatch(step_def.key):
            raise InvalidArgument(
                f"{where}.key",
                "must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit",
            )
        if step_def.key in seen:
            raise InvalidArgument(f"{where}.key", f"{step_def.key!r} is defined twice")
        seen.add(step_def.key)
        if not step_def.label.strip():
            raise InvalidArgument(f"{where}.label", "is required")
        check_text(f"{where}.label", step_def.label, MAX_LABEL_LENGTH)
        timeout = step_def.timeout_seconds
        if timeout is not None and not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
            raise InvalidArgument(
                f"{where}.timeout_seconds",
                f"must be between 1 and {MAX_TIMEOUT_SECONDS} (30 days), got {timeout}",
            )
    process_id = uuid.uuid4()
    return Process(
        process_id=process_id,
        org_id=org_id,
        namespace=qualified,
        name=name,
        started_at=now,
        created_by_token_id=created_by,
        steps=[
            Step(
                key=step_def.key,
                label=step_def.label,
                human=step_def.human,
                timeout_seconds=step_def.timeout_seconds,
                task=Task(
                    task_id=uuid.uuid4(),
                    process_id=process_id,
                    org_id=org_id,
                    namespace=qualified,
                    process_name=name,
                    step=step_def.key,
                    label=step_def.label,
                    created_at=now,
                )
                if step_def.human
                else None,
            )
            for step_def in step_defs
        ],
    )


@dataclass(frozen=True)
class Update:
    """One state change pushed by a client, as sent (fields it did not send are None)."""

    type: str
    step: str | None = None
    detail: str | None = None
    data: JsonObject | None = None
    error: str | None = None
    message: str | None = None
    percent: int | None = None
    summary: str | None = None

    def sent_fields(self) -> dict[str, Any]:
        """The optional fields the client sent, by name."""
        return {
            name: value
            for name, value in vars(self).items()
            if name != "type" and value is not None
        }


def validate_update(update: Update) -> UpdateType:
    """Checks the update's shape (not the process's state) and returns its type."""
    if not update.type:
        raise InvalidArgument("type", f"is required; one of: {one_of(UpdateType)}")
    update_type = parse_choice(UpdateType, "type", update.type)
    sent = update.sent_fields()
    required, optional = _FIELDS[update_type]
    if missing := sorted(required - sent.keys()):
        raise InvalidArgument(missing[0], f"is required for type {update_type.value!r}")
    if extra := sorted(sent.keys() - required - optional):
        raise InvalidArgument(extra[0], f"does not apply to type {update_type.value!r}")
    if update_type is UpdateType.PROGRESS and update.message is None and update.percent is None:
        raise InvalidArgument("message", "a progress update needs a message, a percent or both")
    # Texts that carry the update's point: blank, they would say nothing.
    for name in ("error", "message"):
        if name in sent and not sent[name].strip():
            raise InvalidArgument(name, "must not be blank")
    if update.percent is not None and not 0 <= update.percent <= 100:
        raise InvalidArgument("percent", f"must be between 0 and 100, got {update.percent}")
    for name in ("step", "detail", "error", "message", "summary"):
        check_text(name, sent.get(name))
    if update.data is not None:
        _check_data(update.data)
    return update_type


@dataclass(frozen=True)
class Event:
    """An accepted change, as appended to the process's event log."""

    seq: int
    type: UpdateType | EventType
    step: str | None
    payload: JsonObject
    recorded_at: datetime

    @property
    def finishes_process(self) -> bool:
        return self.type in (UpdateType.COMPLETED, UpdateType.FAILED)

    @property
    def status_after(self) -> ProcessStatus:
        """The process's status once the event applied; only a running process
        takes events, so that was its status before."""
        match self.type:
            case UpdateType.COMPLETED:
                return ProcessStatus.COMPLETED
            case UpdateType.FAILED:
                return ProcessStatus.FAILED
            case _:
                return ProcessStatus.RUNNING


@dataclass(frozen=True)
class EventBatch:
    """Events read from the log in seq order, cut at a count or at
    MAX_EVENTS_PAGE_BYTES, whichever comes first."""

    events: list[Event]
    # Whether the log holds more events after these.
    more: bool


@dataclass(frozen=True)
class EventsPage:
    """A validated ListProcessEvents request: up to `limit` events after `after_seq`."""

    after_seq: int
    limit: int


def events_page(after_seq: int, limit: int | None) -> EventsPage:
    """Validates the paging of an event listing; None means "not given"."""
    check_after_seq(after_seq)
    if limit is None:
        limit = DEFAULT_EVENTS_PAGE_SIZE
    elif not 1 <= limit <= MAX_EVENTS_PAGE_SIZE:
        raise InvalidArgument("limit", f"must be between 1 and {MAX_EVENTS_PAGE_SIZE}, got {limit}")
    return EventsPage(after_seq, limit)


def check_after_seq(after_seq: int, last_seq: int | None = None, field: str = "after_seq") -> None:
    """An `after_seq` names an event of the log, or 0 for its start; with the
    process's `last_seq` known, it may not name an event still to come. The
    error names `field`, where the request gave it."""
    if after_seq < 0:
        raise InvalidArgument(field, f"must be 0 or more, got {after_seq}")
    if last_seq is not None and after_seq > last_seq:
        raise InvalidArgument(field, f"{after_seq} is past the process's last event ({last_seq})")


@dataclass(frozen=True)
class Change:
    """What an accepted change did: the event to log, and the steps (by
    position) and tasks whose state it changed, to be written back."""

    event: Event
    step_positions: tuple[int, ...] = ()
    tasks: tuple[Task, ...] = ()


def apply_update(process: Process, update: Update, now: datetime, *, by: uuid.UUID) -> Change:
    """Applies one update, sent with the token `by`, to the process, or raises
    and leaves it unchanged."""
    update_type = validate_update(update)
    if process.status is not ProcessStatus.RUNNING:
        raise FailedPrecondition(
            f"process {process.process_id} has already {process.status.value}; "
            "it accepts no more updates"
        )
    seq = process.update_count + 1
    positions: tuple[int, ...]
    tasks: tuple[Task, ...] = ()
    if update.step is not None:
        step = process.step(update.step)
        position = process.steps.index(step)
        # Applied to copies first, so that a refusal leaves the process as it was.
        changed = replace(step, task=replace(step.task) if step.task is not None else None)
        _apply_to_step(changed, update_type, update, now, seq)
        if update_type is UpdateType.STEP_STARTED:
            changed.started_by_token_id = by
        _check_budget(process, _step_bytes(changed) - _step_bytes(step), _largest_field(update))
        vars(step).update(vars(changed))
        positions = (position,)
        # Progress leaves a task as it is; every other step update moves it.
        if step.task is not None and update_type is not UpdateType.PROGRESS:
            tasks = (step.task,)
    else:
        _check_budget(process, _text_bytes(update.summary, update.error), _largest_field(update))
        _finish_process(process, update_type, update, now)
        positions, tasks = _stop_waiting(process)
    process.update_count = seq
    payload = update.sent_fields()
    payload.pop("step", None)
    return Change(
        event=Event(seq=seq, type=update_type, step=update.step, payload=payload, recorded_at=now),
        step_positions=positions,
        tasks=tasks,
    )


def complete_task(
    process: Process, task_id: uuid.UUID, completion: Completion, by: Caller, now: datetime
) -> Change:
    """A person decides an open task: `approved` completes its step, `rejected`
    fails it. Raises, leaving the process unchanged, if the task is not open
    (an update or a timeout has ended its step first), if `by` created the
    process or started the step, or if the comment does not fit the process."""
    outcome = validate_completion(completion)
    step = process.step_of_task(task_id)
    task = step.task
    assert task is not None  # step_of_task found the step by its task
    # An open task's step is running in a running process (finishing cancels
    # the open tasks), so the task's status is the first precondition.
    task.require_open()
    if by.token_id in (process.created_by_token_id, step.started_by_token_id):
        raise FailedPrecondition(
            "separation of duties: the token that created the process or started the step"
            f" cannot complete its task; the step {step.key!r} needs another person's token"
        )
    seq = process.update_count + 1
    decided = replace(step)
    if outcome is Outcome.APPROVED:
        _complete_step(decided, now, seq, detail=completion.comment, data=None)
    else:
        reason = f"rejected: {completion.comment}" if completion.comment else "rejected"
        _fail_step(decided, now, seq, error=reason)
    _check_budget(process, _step_bytes(decided) - _step_bytes(step), "comment")
    vars(step).update(vars(decided))
    task.complete(outcome, completion.comment, by, now)
    step.completed_by = by.token_name
    step.completed_by_token_id = by.token_id
    step.changed_seq = seq
    process.update_count = seq
    payload: JsonObject = {"task_id": str(task_id), "outcome": outcome.value}
    if completion.comment is not None:
        payload["comment"] = completion.comment
    payload["completed_by"] = by.token_name
    payload["completed_by_token_id"] = str(by.token_id)
    return Change(
        event=Event(seq, EventType.TASK_COMPLETED, step.key, payload, recorded_at=now),
        step_positions=(process.steps.index(step),),
        tasks=(task,),
    )


def time_out(process: Process, step_key: str, now: datetime) -> Change | None:
    """Fails the step if its deadline has passed, expiring its task.

    None when there is nothing to do (any more): the step has no deadline
    because it ended, or its process did, or its deadline moved on with an
    update. So whichever of several workers comes second, and a worker that
    comes after a completion, changes nothing.
    """
    step = process.step(step_key)
    if step.deadline_at is None or step.deadline_at > now:
        return None
    seq = process.update_count + 1
    error = _timeout_error(step)
    _fail_step(step, now, seq, error=error)
    step.changed_seq = seq
    tasks: tuple[Task, ...] = ()
    if step.task is not None:
        step.task.expire()
        tasks = (step.task,)
    process.update_count = seq
    payload: JsonObject = {"error": error, "timeout_seconds": step.timeout_seconds}
    return Change(
        event=Event(seq, EventType.STEP_TIMED_OUT, step.key, payload, recorded_at=now),
        step_positions=(process.steps.index(step),),
        tasks=tasks,
    )


def stored_bytes(process: Process) -> int:
    """What a process holds, as MAX_PROCESS_BYTES counts it: its texts in UTF-8
    and the `data` of its steps as compact JSON."""
    own = _text_bytes(process.namespace, process.name, process.summary, process.error)
    return own + sum(_step_bytes(step) for step in process.steps)


def _step_bytes(step: Step) -> int:
    # A step with a timeout counts the error its timeout would set even
    # before it is set: a timeout is htk's own write, which cannot be
    # refused, so it must never take a full process past its budget.
    error = _text_bytes(step.error)
    if step.timeout_seconds is not None:
        error = max(error, _text_bytes(_timeout_error(step)))
    texts = _text_bytes(step.key, step.label, step.detail, step.progress_message) + error
    return texts + (_json_bytes(step.data) if step.data is not None else 0)


def _timeout_error(step: Step) -> str:
    return f"timed out after {step.timeout_seconds} s without an update"


def _text_bytes(*texts: str | None) -> int:
    return sum(len(text.encode()) for text in texts if text is not None)


def _largest_field(update: Update) -> str:
    """The update's field that adds the most to its process: the one a refusal names."""
    sent = update.sent_fields()
    for not_stored in ("step", "percent"):
        sent.pop(not_stored, None)
    return max(
        sent, key=lambda name: len(json.dumps(sent[name], ensure_ascii=False)), default="type"
    )


def _check_budget(process: Process, growth: int, field: str) -> None:
    """Refuses a change that would take the process past MAX_PROCESS_BYTES,
    naming `field` as what to send less of.

    A change that does not grow the process is always taken, so that a
    process can still finish when it is full; no accepted change takes it
    past the budget (timeouts have their room reserved, see _step_bytes).
    """
    if growth <= 0:
        return
    size = stored_bytes(process) + growth
    if size <= MAX_PROCESS_BYTES:
        return
    raise FailedPrecondition(
        f"{field}: the process would hold {size} bytes of text and data, over its limit"
        f" of {MAX_PROCESS_BYTES}; send less, or track the rest in a new process"
    )


def _require_status(step: Step, allowed: set[StepStatus], action: str) -> None:
    if step.status not in allowed:
        raise FailedPrecondition(f"step {step.key!r} is {step.status.value}; it cannot {action}")


def _apply_to_step(
    step: Step, update_type: UpdateType, update: Update, now: datetime, seq: int
) -> None:
    match update_type:
        case UpdateType.STEP_STARTED:
            # A failed step may run again; its previous run's results go.
            _require_status(step, {StepStatus.PENDING, StepStatus.FAILED}, "be started")
            step.status = StepStatus.RUNNING
            step.started_at = now
            step.started_seq = seq
            step.completed_at = None
            step.detail = update.detail
            step.data = None
            step.error = None
            step.progress_message = None
            step.progress_percent = None
            step.completed_by = None
            step.completed_by_token_id = None
            step.deadline_at = _deadline(step, now)
            if step.task is not None:
                step.task.open(now)
        case UpdateType.PROGRESS:
            _require_status(step, {StepStatus.RUNNING}, "report progress")
            if update.message is not None:
                step.progress_message = update.message
            if update.percent is not None:
                step.progress_percent = update.percent
            # A person's deadline runs from when their task opened: a
            # pipeline's chatter does not extend it.
            if not step.human:
                step.deadline_at = _deadline(step, now)
        case UpdateType.STEP_COMPLETED:
            _require_status(step, {StepStatus.PENDING, StepStatus.RUNNING}, "be completed")
            _complete_step(step, now, seq, detail=update.detail, data=update.data)
            if step.task is not None:
                step.task.cancel()
        case UpdateType.STEP_FAILED:
            _require_status(step, {StepStatus.PENDING, StepStatus.RUNNING}, "fail")
            _fail_step(step, now, seq, error=update.error)
            if step.task is not None:
                step.task.cancel()
        case _:  # pragma: no cover - validate_update only lets step types carry a step
            raise AssertionError(update_type)
    step.changed_seq = seq


def _deadline(step: Step, now: datetime) -> datetime | None:
    if step.timeout_seconds is None:
        return None
    return now + timedelta(seconds=step.timeout_seconds)


def _complete_step(
    step: Step, now: datetime, seq: int, *, detail: str | None, data: JsonObject | None
) -> None:
    _start_implicitly(step, now, seq)
    step.status = StepStatus.COMPLETED
    step.completed_at = now
    if detail is not None:
        step.detail = detail
    step.data = data
    # Progress describes a run in flight; a completed step has none.
    step.progress_message = None
    step.progress_percent = None
    step.deadline_at = None


def _fail_step(step: Step, now: datetime, seq: int, *, error: str | None) -> None:
    _start_implicitly(step, now, seq)
    step.status = StepStatus.FAILED
    step.error = error
    step.deadline_at = None


def _start_implicitly(step: Step, now: datetime, seq: int) -> None:
    """A step that ends without having been started counts as started now."""
    if step.status is StepStatus.PENDING:
        step.started_at = now
        step.started_seq = seq


def _stop_waiting(process: Process) -> tuple[tuple[int, ...], tuple[Task, ...]]:
    """A finished process waits for nothing: its steps' deadlines go and its
    tasks that still wait are cancelled. Returns the steps and tasks changed."""
    positions = []
    for position, step in enumerate(process.steps):
        if step.deadline_at is not None:
            step.deadline_at = None
            positions.append(position)
    cancelled = tuple(task for task in process.tasks if task.is_active)
    for task in cancelled:
        task.cancel()
    return tuple(positions), cancelled


def _finish_process(
    process: Process, update_type: UpdateType, update: Update, now: datetime
) -> None:
    if update_type is UpdateType.COMPLETED:
        process.status = ProcessStatus.COMPLETED
        process.summary = update.summary
    else:
        process.status = ProcessStatus.FAILED
        process.error = update.error
    process.finished_at = now
