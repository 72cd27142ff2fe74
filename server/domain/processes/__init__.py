"""Processes, their steps and the tasks of their human steps: plain Python
without I/O, in one room per concept.

- `limits`: validation and limits, the protos' declared bounds and the server's own;
- `model`: a process and its steps, how one is created, how lists of them are asked for;
- `updates`: the update record a client sends, and the events logged of it;
- `lifecycle`: the state machine that applies an update, a timeout or a cancel;
- `step_tasks`: a person's decision on the task of a human step.

Storage loads a `Process` (with its steps and their tasks); `apply_update`,
`complete_task` or `time_out` changes it in memory (or raises, leaving it
untouched) and returns a `Change` that names what to write back, together
with the event to log. The rest of the server imports from this package,
which names what each room offers to it.
"""

from server.domain.declared import EventType, ProcessStatus, SortOrder, StepStatus, UpdateType
from server.domain.processes.lifecycle import (
    Change,
    apply_update,
    cancel,
    stored_bytes,
    time_out,
)
from server.domain.processes.limits import (
    DATA_TOO_DEEP,
    EVENT_OVERHEAD_BYTES,
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MAX_EVENTS_PAGE_BYTES,
    MAX_PROCESS_BYTES,
    JsonObject,
    validate_org_id,
)
from server.domain.processes.model import (
    ListQuery,
    PagePosition,
    Process,
    ProcessPage,
    ProcessSummary,
    Step,
    StepDef,
    list_query,
    new_process,
    page_token,
    parse_process_id,
    process_page,
    summary_of,
    utc_now,
)
from server.domain.processes.step_tasks import complete_task
from server.domain.processes.updates import (
    EVENT_FIELDS,
    Event,
    EventBatch,
    EventsPage,
    Update,
    check_after_seq,
    event_type,
    events_page,
    validate_reason,
    validate_update,
)

__all__ = [
    "DATA_TOO_DEEP",
    "EVENT_FIELDS",
    "EVENT_OVERHEAD_BYTES",
    "MAX_DATA_BYTES",
    "MAX_DATA_DEPTH",
    "MAX_EVENTS_PAGE_BYTES",
    "MAX_PROCESS_BYTES",
    "Change",
    "Event",
    "EventBatch",
    "EventType",
    "EventsPage",
    "JsonObject",
    "ListQuery",
    "PagePosition",
    "Process",
    "ProcessPage",
    "ProcessStatus",
    "ProcessSummary",
    "SortOrder",
    "Step",
    "StepDef",
    "StepStatus",
    "Update",
    "UpdateType",
    "apply_update",
    "cancel",
    "check_after_seq",
    "complete_task",
    "event_type",
    "events_page",
    "list_query",
    "new_process",
    "page_token",
    "parse_process_id",
    "process_page",
    "stored_bytes",
    "summary_of",
    "time_out",
    "utc_now",
    "validate_org_id",
    "validate_reason",
    "validate_update",
]
