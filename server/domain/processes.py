"""Processes and their steps: validation and the state machine.

Plain Python without I/O. Storage loads a `Process`, `apply_update` changes it
in memory (or raises, leaving it untouched), and storage writes the result
back together with the event that `apply_update` returns.
"""

import base64
import enum
import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from server.domain.errors import FailedPrecondition, InvalidArgument, NotFound

MAX_NAME_LENGTH = 200
MAX_LABEL_LENGTH = 200
MAX_STEPS = 100
MAX_TEXT_LENGTH = 10_000  # detail, error, message, summary
MAX_DATA_BYTES = 64 * 1024  # `data` as compact JSON
_STEP_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ORG_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_NAMESPACE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,98}[A-Za-z0-9])?")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_PAGE_TOKEN_LENGTH = 200
DEFAULT_EVENTS_PAGE_SIZE = 100
MAX_EVENTS_PAGE_SIZE = 1000

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


class SortOrder(enum.StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"


def _one_of(enum_type: type[enum.StrEnum]) -> str:
    return ", ".join(member.value for member in enum_type)


E = TypeVar("E", bound=enum.StrEnum)


def parse_choice(enum_type: type[E], field_name: str, value: str) -> E:
    try:
        return enum_type(value)
    except ValueError:
        raise InvalidArgument(
            field_name, f"unknown value {value!r}; expected one of: {_one_of(enum_type)}"
        ) from None


def validate_org_id(org_id: str) -> str:
    if not _ORG_ID.fullmatch(org_id):
        raise InvalidArgument(
            "org", "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )
    return org_id


def qualify_namespace(org_id: str, namespace: str) -> str:
    """Returns `<org>.<name>` for a bare `<name>` or for a name already in the org.

    The part before the first dot is the organization, so a namespace that
    names another organization is rejected rather than silently re-homed.
    """
    if not namespace:
        raise InvalidArgument("namespace", "is required")
    owner, dot, name = namespace.partition(".")
    if not dot:
        owner, name = org_id, namespace
    elif owner != org_id:
        raise InvalidArgument(
            "namespace",
            f"{namespace!r} is outside your organization; use {org_id}.<name> or a bare <name>",
        )
    if not _NAMESPACE_NAME.fullmatch(name):
        raise InvalidArgument(
            "namespace",
            "the name after the organization must be 1-100 letters, digits, '_', '-' or '.', "
            "starting and ending with a letter or digit",
        )
    return f"{owner}.{name}"


def _check_text(field_name: str, value: str | None, max_length: int = MAX_TEXT_LENGTH) -> None:
    if value is None:
        return
    if len(value) > max_length:
        raise InvalidArgument(field_name, f"must be at most {max_length} characters")
    # PostgreSQL text cannot hold NUL; refusing it here keeps it a 400.
    if "\x00" in value:
        raise InvalidArgument(field_name, "must not contain NUL characters")


def _check_data(data: JsonObject) -> None:
    try:
        encoded = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise InvalidArgument("data", "numbers must be finite (no NaN or Infinity)") from None
    if len(encoded.encode()) > MAX_DATA_BYTES:
        raise InvalidArgument("data", f"must be at most {MAX_DATA_BYTES} bytes of JSON")
    for text in _strings_in(data):
        _check_text("data", text, max_length=MAX_DATA_BYTES)


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
        filters = json.dumps([self.status, self.namespace, self.search, self.sort])
        return hashlib.sha256(filters.encode()).hexdigest()[:16]


def page_token(query: ListQuery, last: "ProcessSummary") -> str:
    """The token for the page after the one ending with `last`.

    Not signed: a forged token can only choose where a listing of the
    caller's own organization starts.
    """
    position = [query.filters_fingerprint(), last.started_at.isoformat(), str(last.process_id)]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _page_position(query: ListQuery, token: str) -> PagePosition:
    malformed = InvalidArgument("page_token", "malformed; pass a next_page_token unchanged")
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise malformed
    try:
        padded = token + "=" * (-len(token) % 4)
        fingerprint, started_at, process_id = json.loads(base64.urlsafe_b64decode(padded))
        position = PagePosition(datetime.fromisoformat(started_at), uuid.UUID(process_id))
    except (ValueError, TypeError, AttributeError):
        raise malformed from None
    if position.started_at.tzinfo is None:
        raise malformed
    if fingerprint != query.filters_fingerprint():
        raise InvalidArgument(
            "page_token", "was issued for other filters or sort order; keep them unchanged"
        )
    return position


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
    if limit is None:
        limit = DEFAULT_PAGE_SIZE
    elif not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
    if offset is None:
        offset = 0
    elif offset < 0:
        raise InvalidArgument("offset", f"must be 0 or more, got {offset}")
    _check_text("search", search, MAX_NAME_LENGTH)
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
    if offset:
        raise InvalidArgument("offset", "cannot be combined with page_token; leave it out")
    return replace(query, after=_page_position(query, page_token))


@dataclass(frozen=True)
class StepDef:
    key: str
    label: str
    human: bool


@dataclass
class Step:
    """One step of a process: its definition and the state of its latest run."""

    key: str
    label: str
    human: bool
    task_id: uuid.UUID | None
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
    def task_ids(self) -> list[uuid.UUID]:
        return [step.task_id for step in self.steps if step.task_id is not None]

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        known = ", ".join(step.key for step in self.steps)
        raise InvalidArgument("step", f"{key!r} is not a step of this process (steps: {known})")


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
    """The page to return from up to `query.limit + 1` matches read in sort
    order: the extra one only tells that another page follows."""
    shown = matches[: query.limit]
    more = len(matches) > query.limit
    return ProcessPage(
        processes=shown,
        total=total,
        next_page_token=page_token(query, shown[-1]) if more else None,
    )


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
    *, org_id: str, namespace: str, name: str, step_defs: Sequence[StepDef], now: datetime
) -> Process:
    """Validates a creation request and returns the new, running process."""
    if not name.strip():
        raise InvalidArgument("name", "is required")
    _check_text("name", name, MAX_NAME_LENGTH)
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
        _check_text(f"{where}.label", step_def.label, MAX_LABEL_LENGTH)
    return Process(
        process_id=uuid.uuid4(),
        org_id=org_id,
        namespace=qualified,
        name=name,
        started_at=now,
        steps=[
            Step(
                key=step_def.key,
                label=step_def.label,
                human=step_def.human,
                task_id=uuid.uuid4() if step_def.human else None,
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


# For each type: (the fields it requires, the fields it also accepts).
_FIELDS: dict[UpdateType, tuple[frozenset[str], frozenset[str]]] = {
    UpdateType.STEP_STARTED: (frozenset({"step"}), frozenset({"detail"})),
    UpdateType.STEP_COMPLETED: (frozenset({"step"}), frozenset({"detail", "data"})),
    UpdateType.STEP_FAILED: (frozenset({"step", "error"}), frozenset()),
    UpdateType.PROGRESS: (frozenset({"step"}), frozenset({"message", "percent"})),
    UpdateType.COMPLETED: (frozenset(), frozenset({"summary"})),
    UpdateType.FAILED: (frozenset({"error"}), frozenset()),
}


def validate_update(update: Update) -> UpdateType:
    """Checks the update's shape (not the process's state) and returns its type."""
    if not update.type:
        raise InvalidArgument("type", f"is required; one of: {_one_of(UpdateType)}")
    update_type = parse_choice(UpdateType, "type", update.type)
    sent = update.sent_fields()
    required, optional = _FIELDS[update_type]
    if missing := sorted(required - sent.keys()):
        raise InvalidArgument(missing[0], f"is required for type {update_type.value!r}")
    if extra := sorted(sent.keys() - required - optional):
        raise InvalidArgument(extra[0], f"does not apply to type {update_type.value!r}")
    if update_type is UpdateType.PROGRESS and update.message is None and update.percent is None:
        raise InvalidArgument("message", "a progress update needs a message, a percent or both")
    if update.percent is not None and not 0 <= update.percent <= 100:
        raise InvalidArgument("percent", f"must be between 0 and 100, got {update.percent}")
    for name in ("step", "detail", "error", "message", "summary"):
        _check_text(name, sent.get(name))
    if update.data is not None:
        _check_data(update.data)
    return update_type


@dataclass(frozen=True)
class Event:
    """An accepted update, as appended to the process's event log."""

    seq: int
    type: UpdateType
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


def check_after_seq(after_seq: int, last_seq: int | None = None) -> None:
    """An `after_seq` names an event of the log, or 0 for its start; with the
    process's `last_seq` known, it may not name an event still to come."""
    if after_seq < 0:
        raise InvalidArgument("after_seq", f"must be 0 or more, got {after_seq}")
    if last_seq is not None and after_seq > last_seq:
        raise InvalidArgument(
            "after_seq", f"{after_seq} is past the process's last event ({last_seq})"
        )


@dataclass(frozen=True)
class Change:
    """What an accepted update changed: the event to log and the step it touched."""

    event: Event
    step_position: int | None = None


def apply_update(process: Process, update: Update, now: datetime) -> Change:
    """Applies one update to the process, or raises and leaves it unchanged."""
    update_type = validate_update(update)
    if process.status is not ProcessStatus.RUNNING:
        raise FailedPrecondition(
            f"process {process.process_id} has already {process.status.value}; "
            "it accepts no more updates"
        )
    seq = process.update_count + 1
    position = None
    if update.step is not None:
        step = process.step(update.step)
        position = process.steps.index(step)
        _apply_to_step(step, update_type, update, now, seq)
    else:
        _finish_process(process, update_type, update, now)
    process.update_count = seq
    payload = update.sent_fields()
    payload.pop("step", None)
    return Change(
        event=Event(seq=seq, type=update_type, step=update.step, payload=payload, recorded_at=now),
        step_position=position,
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
        case UpdateType.PROGRESS:
            _require_status(step, {StepStatus.RUNNING}, "report progress")
            if update.message is not None:
                step.progress_message = update.message
            if update.percent is not None:
                step.progress_percent = update.percent
        case UpdateType.STEP_COMPLETED:
            _require_status(step, {StepStatus.PENDING, StepStatus.RUNNING}, "be completed")
            _start_implicitly(step, now, seq)
            step.status = StepStatus.COMPLETED
            step.completed_at = now
            if update.detail is not None:
                step.detail = update.detail
            step.data = update.data
            # Progress describes a run in flight; a completed step has none.
            step.progress_message = None
            step.progress_percent = None
        case UpdateType.STEP_FAILED:
            _require_status(step, {StepStatus.PENDING, StepStatus.RUNNING}, "fail")
            _start_implicitly(step, now, seq)
            step.status = StepStatus.FAILED
            step.error = update.error
        case _:  # pragma: no cover - validate_update only lets step types carry a step
            raise AssertionError(update_type)
    step.changed_seq = seq


def _start_implicitly(step: Step, now: datetime, seq: int) -> None:
    """A step that ends without having been started counts as started now."""
    if step.status is StepStatus.PENDING:
        step.started_at = now
        step.started_seq = seq


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
