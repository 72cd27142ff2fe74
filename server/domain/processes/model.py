"""A process and its steps as the domain holds them, how one is created, and
how a list of them is asked for and paged."""

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from server.domain.checks import check_text, parse_choice, parse_id, qualify_namespace
from server.domain.declared import ProcessStatus, SortOrder, StepStatus
from server.domain.errors import InvalidArgument, NotFound
from server.domain.paging import (
    DEFAULT_PAGE_SIZE,
    check_window,
    fingerprint,
    make_page_token,
    read_page_token,
    split_page,
)
from server.domain.processes.labels import check_labels, check_url, label_filters
from server.domain.processes.limits import (
    MAX_LABEL_LENGTH,
    MAX_LIST_LIMIT,
    MAX_NAME_LENGTH,
    MAX_SEARCH_LENGTH,
    MAX_STEP_KEY_LENGTH,
    MAX_STEPS,
    MAX_TIMEOUT_SECONDS,
    MIN_TIMEOUT_SECONDS,
    STEP_KEY,
    JsonObject,
)
from server.domain.tasks import Task, TaskStatus
from server.domain.tokens import Caller


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
    # (key, value) pairs, sorted by key, that a process must all carry.
    labels: tuple[tuple[str, str], ...] = ()

    def filters_fingerprint(self) -> str:
        """Identifies the filters and sort order, which a page token must not change."""
        filters: list[str | None] = [self.status, self.namespace, self.search, self.sort]
        # Appended only when given, so that tokens issued before labels existed still read.
        if self.labels:
            filters.append(json.dumps(self.labels))
        return fingerprint(filters)


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
    label: Sequence[str] = (),
) -> ListQuery:
    """Validates list parameters; empty strings and None mean "not given"."""
    limit, offset = check_window(limit, offset, MAX_LIST_LIMIT)
    check_text("search", search, MAX_SEARCH_LENGTH)
    query = ListQuery(
        org_id=org_id,
        status=parse_choice(ProcessStatus, "status", status) if status else None,
        namespace=qualify_namespace(org_id, namespace) if namespace else None,
        search=search or None,
        sort=parse_choice(SortOrder, "sort", sort) if sort else SortOrder.NEWEST,
        limit=limit,
        offset=offset,
        labels=label_filters(label),
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


_RUNNING_OR_STOPPED = frozenset({StepStatus.RUNNING, StepStatus.CANCELLED})


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
    # The reason given with a cancel, if any.
    reason: str | None = None
    # How many updates have been accepted; the next one gets this + 1.
    update_count: int = 0
    # The token that created the process: it may not decide the process's
    # tasks (separation of duties). None for processes created before htk
    # recorded it.
    created_by_token_id: uuid.UUID | None = None
    # That token's name, as it was then; None for processes created before
    # htk recorded it.
    created_by: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    url: str | None = None

    @property
    def current_step(self) -> str | None:
        # A step cancelled by its process's finish was running when it ended,
        # so a finish leaves `current_step` where the process stopped.
        running = [step for step in self.steps if step.status in _RUNNING_OR_STOPPED]
        if running:
            return max(running, key=lambda step: step.started_seq or 0).key
        changed = [step for step in self.steps if step.changed_seq is not None]
        if changed:
            return max(changed, key=lambda step: step.changed_seq or 0).key
        return None

    @property
    def current_step_label(self) -> str | None:
        """The label people read for `current_step`'s key."""
        key = self.current_step
        return self.step(key).label if key is not None else None

    @property
    def open_task_count(self) -> int:
        """How many of its tasks wait for a person."""
        return sum(1 for task in self.tasks if task.status is TaskStatus.OPEN)

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
    # See Process.created_by.
    created_by: str | None
    labels: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    finished_at: datetime | None = None
    # The label people read for current_step's key.
    current_step_label: str | None = None
    # How many of its tasks wait for a person.
    open_task_count: int = 0


def summary_of(process: Process) -> ProcessSummary:
    """A process as a list shows it."""
    return ProcessSummary(
        process_id=process.process_id,
        namespace=process.namespace,
        name=process.name,
        status=process.status,
        current_step=process.current_step,
        started_at=process.started_at,
        step_count=len(process.steps),
        task_ids=process.task_ids,
        created_by=process.created_by,
        labels=process.labels,
        url=process.url,
        finished_at=process.finished_at,
        current_step_label=process.current_step_label,
        open_task_count=process.open_task_count,
    )


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
    return parse_id("process", text)


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
    created_by: Caller,
    labels: Mapping[str, str] | None = None,
    url: str | None = None,
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
        if not STEP_KEY.fullmatch(step_def.key):
            raise InvalidArgument(
                f"{where}.key",
                f"must be 1-{MAX_STEP_KEY_LENGTH} letters, digits, '_', '-' or '.',"
                " starting with a letter or digit",
            )
        if step_def.key in seen:
            raise InvalidArgument(f"{where}.key", f"{step_def.key!r} is defined twice")
        seen.add(step_def.key)
        if not step_def.label.strip():
            raise InvalidArgument(f"{where}.label", "is required")
        check_text(f"{where}.label", step_def.label, MAX_LABEL_LENGTH)
        timeout = step_def.timeout_seconds
        if timeout is not None and not MIN_TIMEOUT_SECONDS <= timeout <= MAX_TIMEOUT_SECONDS:
            raise InvalidArgument(
                f"{where}.timeout_seconds",
                f"must be between {MIN_TIMEOUT_SECONDS} and {MAX_TIMEOUT_SECONDS}"
                f" ({MAX_TIMEOUT_SECONDS // 86400} days), got {timeout}",
            )
    checked_labels = check_labels(labels or {})
    checked_url = check_url(url)
    process_id = uuid.uuid4()
    return Process(
        process_id=process_id,
        org_id=org_id,
        namespace=qualified,
        name=name,
        started_at=now,
        created_by_token_id=created_by.token_id,
        created_by=created_by.token_name,
        labels=checked_labels,
        url=checked_url,
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
