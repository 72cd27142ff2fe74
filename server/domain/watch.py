"""What watch streams carry, and which organization-wide changes a watcher asked for.

Plain Python without I/O, like the rest of the domain.
"""

import re
from dataclasses import dataclass
from datetime import datetime

from server.domain.checks import parse_choice, qualify_namespace
from server.domain.errors import InvalidArgument
from server.domain.processes import Event, ProcessStatus, ProcessSummary, check_after_seq

# The header a browser's EventSource sends when it reconnects: the `id:` of
# the last event it got, which is that event's seq.
LAST_EVENT_ID = "Last-Event-ID"
MAX_SEQ = 2**31 - 1  # seq is an int32


@dataclass(frozen=True)
class Heartbeat:
    """Nothing to report, sent so that a quiet stream is told from a dead one."""

    sent_at: datetime


@dataclass(frozen=True)
class ResumePoint:
    """Where a process stream starts: after event `seq`, as the request's `field` gave it."""

    seq: int
    field: str = "after_seq"

    def check(self, last_seq: int | None = None) -> None:
        check_after_seq(self.seq, last_seq, self.field)


def resume_point(after_seq: int | None, last_event_id: str | None) -> ResumePoint | None:
    """Where a watch of a process resumes: after `Last-Event-ID` if given,
    else after `after_seq` if given, else nowhere (it starts with the process).

    Last-Event-ID wins: a browser's EventSource reconnects to the URL it
    first opened, `after_seq` included, and sends the last id it got beside
    it. An empty one is none (an EventSource sends none then)."""
    if last_event_id:
        if not re.fullmatch(r"[0-9]{1,10}", last_event_id) or int(last_event_id) > MAX_SEQ:
            shown = last_event_id if len(last_event_id) <= 20 else last_event_id[:20] + "…"
            raise InvalidArgument(
                LAST_EVENT_ID, f"must be the seq of an event, a whole number, got {shown!r}"
            )
        point = ResumePoint(int(last_event_id), LAST_EVENT_ID)
    elif after_seq is not None:
        point = ResumePoint(after_seq)
    else:
        return None
    point.check()
    return point


@dataclass(frozen=True)
class ProcessChange:
    """One accepted change of an organization's processes."""

    process: ProcessSummary
    # None: the change created the process.
    event: Event | None


@dataclass(frozen=True)
class ChangeFilter:
    """A validated WatchProcesses request: the changes one watcher wants."""

    org_id: str
    namespace: str | None = None
    status: ProcessStatus | None = None

    def matches(self, change: ProcessChange) -> bool:
        """Whether the change belongs to the stream.

        A status matches the process's status before or after the change:
        every change happens to a running process, and the event that
        finishes one takes it to `completed` or `failed`.
        """
        process = change.process
        if self.namespace is not None and process.namespace != self.namespace:
            return False
        if self.status is None or self.status is ProcessStatus.RUNNING:
            return True
        return change.event is not None and change.event.status_after is self.status


def change_filter(org_id: str, *, namespace: str = "", status: str = "") -> ChangeFilter:
    """Validates the filters of an organization-wide watch; "" means "not given"."""
    return ChangeFilter(
        org_id=org_id,
        namespace=qualify_namespace(org_id, namespace) if namespace else None,
        status=parse_choice(ProcessStatus, "status", status) if status else None,
    )
