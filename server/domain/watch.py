"""What watch streams carry, and which organization-wide changes a watcher asked for.

Plain Python without I/O, like the rest of the domain.
"""

from dataclasses import dataclass
from datetime import datetime

from server.domain.checks import parse_choice, qualify_namespace
from server.domain.processes import Event, ProcessStatus, ProcessSummary


@dataclass(frozen=True)
class Heartbeat:
    """Nothing to report, sent so that a quiet stream is told from a dead one."""

    sent_at: datetime


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
