"""The tasks of human steps: their state machine, decisions and listing.

Each human step of a process is backed by one task, created with the process.
A task's state follows its step's, and every change to it is part of a change
to its process (`server.domain.processes`: `apply_update`, `complete_task`,
`time_out`), applied under the process's row lock; the transitions below only
keep the task's own fields right:

    pending --open--> open --complete--> completed
       |               |---cancel---> cancelled
       |               '---expire---> expired
       '---cancel---> cancelled
    completed, cancelled, expired --open--> open   (the failed step started again)
"""

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from server.domain.checks import check_text, one_of, parse_choice, parse_id, qualify_namespace
from server.domain.declared import (
    COMPLETE_TASK_REQUEST_COMMENT_MAX_LENGTH,
    LIST_TASKS_REQUEST_COMPLETED_BY_MAX_LENGTH,
    LIST_TASKS_REQUEST_LIMIT_MAXIMUM,
)

# The words of a task's status and outcome, declared by the protos; offered
# here beside the task they describe.
from server.domain.declared import Outcome as Outcome
from server.domain.declared import TaskStatus as TaskStatus
from server.domain.errors import FailedPrecondition, InvalidArgument
from server.domain.paging import (
    DEFAULT_PAGE_SIZE,
    check_window,
    fingerprint,
    make_page_token,
    read_page_token,
    split_page,
)
from server.domain.tokens import Caller

# The statuses each status may move to.
_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.OPEN, TaskStatus.CANCELLED}),
    TaskStatus.OPEN: frozenset({TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}),
    TaskStatus.COMPLETED: frozenset({TaskStatus.OPEN}),
    TaskStatus.CANCELLED: frozenset({TaskStatus.OPEN}),
    TaskStatus.EXPIRED: frozenset({TaskStatus.OPEN}),
}


@dataclass
class Task:
    """The task of one human step, with copies of what a list shows of its
    process and step (which never change), so that it reads on its own."""

    task_id: uuid.UUID
    process_id: uuid.UUID
    org_id: str
    namespace: str
    process_name: str
    step: str
    label: str
    created_at: datetime
    status: TaskStatus = TaskStatus.PENDING
    opened_at: datetime | None = None
    completed_at: datetime | None = None
    outcome: Outcome | None = None
    comment: str | None = None
    # Who decided: the token's name, and its id, which stays unique after
    # the token is revoked and its name given to another.
    completed_by: str | None = None
    completed_by_token_id: uuid.UUID | None = None

    def open(self, now: datetime) -> None:
        """Its step started: the task waits for a person, having forgotten any
        earlier decision (the event log keeps it)."""
        self._move(TaskStatus.OPEN)
        self.opened_at = now
        self.completed_at = None
        self.outcome = None
        self.comment = None
        self.completed_by = None
        self.completed_by_token_id = None

    def cancel(self) -> None:
        """Its step ended without it, or its process finished first."""
        self._move(TaskStatus.CANCELLED)

    def expire(self) -> None:
        """Its step timed out."""
        self._move(TaskStatus.EXPIRED)

    def require_open(self) -> None:
        """Refuses to decide a task that does not wait for a person."""
        if self.status is not TaskStatus.OPEN:
            raise FailedPrecondition(
                f"task {self.task_id} is {self.status.value}; only an open task can be completed"
            )

    def complete(self, outcome: Outcome, comment: str | None, by: Caller, now: datetime) -> None:
        """A person decided."""
        self.require_open()
        self._move(TaskStatus.COMPLETED)
        self.completed_at = now
        self.outcome = outcome
        self.comment = comment
        self.completed_by = by.token_name
        self.completed_by_token_id = by.token_id

    @property
    def is_active(self) -> bool:
        """Whether the task waits, or will wait, for a person."""
        return self.status in {TaskStatus.PENDING, TaskStatus.OPEN}

    def _move(self, status: TaskStatus) -> None:
        # Each change to a process moves its tasks only where its steps allow;
        # anything else is a bug, not a caller's mistake.
        if status not in _TRANSITIONS[self.status]:
            raise AssertionError(f"task {self.task_id}: {self.status.value} -> {status.value}")
        self.status = status


@dataclass(frozen=True)
class Completion:
    """A CompleteTask request's decision, as sent (a comment not sent is None)."""

    outcome: str
    comment: str | None = None


def validate_completion(completion: Completion) -> Outcome:
    """Checks the decision's fields (not the task's state) and returns its outcome."""
    if not completion.outcome:
        raise InvalidArgument("outcome", f"is required; one of: {one_of(Outcome)}")
    outcome = parse_choice(Outcome, "outcome", completion.outcome)
    check_text("comment", completion.comment, COMPLETE_TASK_REQUEST_COMMENT_MAX_LENGTH)
    return outcome


def parse_task_id(text: str) -> uuid.UUID:
    return parse_id("task", text)


@dataclass(frozen=True)
class TaskPosition:
    """Where a page ended: its last task's creation time and id."""

    created_at: datetime
    task_id: uuid.UUID


@dataclass(frozen=True)
class TaskQuery:
    """A validated ListTasks request of one organization, newest first."""

    org_id: str
    status: TaskStatus | None = None
    namespace: str | None = None
    process_id: uuid.UUID | None = None
    outcome: Outcome | None = None
    completed_by: str | None = None
    limit: int = DEFAULT_PAGE_SIZE
    offset: int = 0
    # Set by a page token: the page starts right after this position.
    after: TaskPosition | None = None

    def filters_fingerprint(self) -> str:
        process_id = str(self.process_id) if self.process_id is not None else None
        filters: list[str | None] = [self.status, self.namespace, process_id]
        # Appended only when given, so that tokens issued before these
        # filters existed still continue their listings.
        if self.outcome is not None or self.completed_by is not None:
            filters += [self.outcome, self.completed_by]
        return fingerprint(filters)

    @property
    def status_filter(self) -> TaskStatus | None:
        """The status the matches must have beyond the other filters: none
        when an outcome or a decider already implies `completed` (only a
        completed task has either; reopening forgets them), so that the
        query walks the decisions' index, not every completed task."""
        decided = self.outcome is not None or self.completed_by is not None
        return None if decided and self.status is TaskStatus.COMPLETED else self.status

    @property
    def counted(self) -> bool:
        """Whether the total must be counted from the matches: the per-status
        counters know nothing of one process, outcome or decider."""
        return any(
            value is not None for value in (self.process_id, self.outcome, self.completed_by)
        )


@dataclass(frozen=True)
class TaskPage:
    tasks: list[Task]
    total: int
    # The token for the next page; None on the last page.
    next_page_token: str | None


def task_query(
    org_id: str,
    *,
    status: str = "",
    namespace: str = "",
    process_id: str = "",
    outcome: str = "",
    completed_by: str = "",
    limit: int | None = None,
    offset: int | None = None,
    page_token: str = "",
) -> TaskQuery:
    """Validates ListTasks parameters; empty strings and None mean "not given"."""
    limit, offset = check_window(limit, offset, LIST_TASKS_REQUEST_LIMIT_MAXIMUM)
    query = TaskQuery(
        org_id=org_id,
        status=parse_choice(TaskStatus, "status", status) if status else None,
        namespace=qualify_namespace(org_id, namespace) if namespace else None,
        process_id=_process_filter(process_id) if process_id else None,
        outcome=parse_choice(Outcome, "outcome", outcome) if outcome else None,
        completed_by=_decider_filter(completed_by) if completed_by else None,
        limit=limit,
        offset=offset,
    )
    if not page_token:
        return query
    after = read_page_token(
        page_token,
        offset=offset,
        filters_fingerprint=query.filters_fingerprint(),
        filters="filters",
    )
    return replace(query, after=TaskPosition(*after))


def _process_filter(text: str) -> uuid.UUID:
    # A filter, unlike a path, names nothing that could be missing: a
    # malformed id is the caller's mistake.
    try:
        return uuid.UUID(text)
    except ValueError:
        raise InvalidArgument("process_id", f"must be a UUID, got {text!r}") from None


def _decider_filter(name: str) -> str:
    check_text("completed_by", name, LIST_TASKS_REQUEST_COMPLETED_BY_MAX_LENGTH)
    return name


def task_page(query: TaskQuery, matches: list[Task], total: int) -> TaskPage:
    """The page to return from up to `query.limit + 1` matches read newest first."""
    shown, last = split_page(matches, query.limit)
    next_token = task_page_token(query, last) if last is not None else None
    return TaskPage(tasks=shown, total=total, next_page_token=next_token)


def task_page_token(query: TaskQuery, last: Task) -> str:
    """The token for the page after the one ending with `last`."""
    return make_page_token(query.filters_fingerprint(), last.created_at, last.task_id)
