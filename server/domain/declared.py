"""What the protos declare of request values and callers: words, scopes, limits.

Generated from protos/ by scripts/declared.py (`make generate`); `make
check-generated` fails when it is stale. Change the protos' enums and their
`(htk.processes.v1.values)` options, not this file.
"""

import enum


class ProcessStatus(enum.StrEnum):
    """The words of `Process.status` (see `htk.processes.v1.values`)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(enum.StrEnum):
    """The words of `TimelineEntry.status`. A step goes `pending`, `running`, then `completed` or
    `failed`, and a failed step may be started again. When its process finishes, a step still
    running ends `cancelled` and one never started ends `skipped`.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class SortOrder(enum.StrEnum):
    """The words of `ListProcessesRequest.sort`."""

    NEWEST = "newest"
    OLDEST = "oldest"


class UpdateType(enum.StrEnum):
    """The words of `UpdateProcessRequest.type`: the kinds of change."""

    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"


class EventType(enum.StrEnum):
    """The words of `ProcessEvent.type`: each `UpdateType`, under the same word, and the events htk
    records itself.
    """

    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_FAILED = "step_failed"
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED = "failed"
    TASK_COMPLETED = "task_completed"
    STEP_TIMED_OUT = "step_timed_out"
    CANCELLED = "cancelled"


class TaskStatus(enum.StrEnum):
    """The words a task's `status` takes (see the service)."""

    PENDING = "pending"
    OPEN = "open"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Outcome(enum.StrEnum):
    """The words of a person's decision on a task."""

    APPROVED = "approved"
    REJECTED = "rejected"


class DeliveryStatus(enum.StrEnum):
    """The words of a delivery's `status`."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Scope(enum.StrEnum):
    """A permission beyond reading, which every token of an organization has: each
    scope an RPC's `(htk.processes.v1.access)` names."""

    PROCESSES_WRITE = "processes:write"
    TASKS_CREATE = "tasks:create"
    TASKS_COMPLETE = "tasks:complete"
    TOKENS_MANAGE = "tokens:manage"
    WEBHOOKS_MANAGE = "webhooks:manage"


# htk.processes.v1.ListProcessesRequest
LIST_PROCESSES_REQUEST_SEARCH_MAX_LENGTH = 200
LIST_PROCESSES_REQUEST_LIMIT_MINIMUM = 1
LIST_PROCESSES_REQUEST_LIMIT_MAXIMUM = 200
LIST_PROCESSES_REQUEST_OFFSET_MINIMUM = 0
LIST_PROCESSES_REQUEST_LABEL_MAX_ITEMS = 32

# htk.processes.v1.CreateProcessRequest
CREATE_PROCESS_REQUEST_NAME_MAX_LENGTH = 200
CREATE_PROCESS_REQUEST_STEP_DEFS_MAX_ITEMS = 200
CREATE_PROCESS_REQUEST_LABELS_MAX_ITEMS = 32
CREATE_PROCESS_REQUEST_URL_MAX_LENGTH = 2048

# htk.processes.v1.UpdateProcessRequest
UPDATE_PROCESS_REQUEST_STEP_MAX_LENGTH = 10000
UPDATE_PROCESS_REQUEST_DETAIL_MAX_LENGTH = 10000
UPDATE_PROCESS_REQUEST_ERROR_MAX_LENGTH = 10000
UPDATE_PROCESS_REQUEST_MESSAGE_MAX_LENGTH = 10000
UPDATE_PROCESS_REQUEST_PERCENT_MINIMUM = 0
UPDATE_PROCESS_REQUEST_PERCENT_MAXIMUM = 100
UPDATE_PROCESS_REQUEST_SUMMARY_MAX_LENGTH = 10000

# htk.processes.v1.CancelProcessRequest
CANCEL_PROCESS_REQUEST_REASON_MAX_LENGTH = 10000

# htk.processes.v1.ListProcessEventsRequest
LIST_PROCESS_EVENTS_REQUEST_AFTER_SEQ_MINIMUM = 0
LIST_PROCESS_EVENTS_REQUEST_LIMIT_MINIMUM = 1
LIST_PROCESS_EVENTS_REQUEST_LIMIT_MAXIMUM = 1000

# htk.processes.v1.WatchProcessRequest
WATCH_PROCESS_REQUEST_AFTER_SEQ_MINIMUM = 0

# htk.processes.v1.StartSignInRequest
START_SIGN_IN_REQUEST_REDIRECT_URI_MAX_LENGTH = 2048

# htk.processes.v1.FinishSignInRequest
FINISH_SIGN_IN_REQUEST_CODE_MAX_LENGTH = 4096
FINISH_SIGN_IN_REQUEST_STATE_MAX_LENGTH = 4096
FINISH_SIGN_IN_REQUEST_REDIRECT_URI_MAX_LENGTH = 2048

# htk.processes.v1.SignOutRequest
SIGN_OUT_REQUEST_TOKEN_MAX_LENGTH = 100

# htk.processes.v1.ListTasksRequest
LIST_TASKS_REQUEST_LIMIT_MINIMUM = 1
LIST_TASKS_REQUEST_LIMIT_MAXIMUM = 200
LIST_TASKS_REQUEST_OFFSET_MINIMUM = 0
LIST_TASKS_REQUEST_COMPLETED_BY_MAX_LENGTH = 200

# htk.processes.v1.CompleteTaskRequest
COMPLETE_TASK_REQUEST_COMMENT_MAX_LENGTH = 10000

# htk.processes.v1.CreateTrustPolicyRequest
CREATE_TRUST_POLICY_REQUEST_NAME_MAX_LENGTH = 100
CREATE_TRUST_POLICY_REQUEST_ISSUER_MAX_LENGTH = 2048
CREATE_TRUST_POLICY_REQUEST_AUDIENCE_MAX_LENGTH = 255
CREATE_TRUST_POLICY_REQUEST_SUBJECT_MAX_LENGTH = 255
CREATE_TRUST_POLICY_REQUEST_CLAIMS_MAX_ITEMS = 16
CREATE_TRUST_POLICY_REQUEST_SCOPES_MAX_ITEMS = 8
CREATE_TRUST_POLICY_REQUEST_TOKEN_TTL_SECONDS_MINIMUM = 1
CREATE_TRUST_POLICY_REQUEST_TOKEN_TTL_SECONDS_MAXIMUM = 3600

# htk.processes.v1.ExchangeTokenRequest
EXCHANGE_TOKEN_REQUEST_SUBJECT_TOKEN_MAX_LENGTH = 16384
EXCHANGE_TOKEN_REQUEST_ORGANIZATION_MAX_LENGTH = 100

# htk.processes.v1.CreateWebhookRequest
CREATE_WEBHOOK_REQUEST_URL_MAX_LENGTH = 2048
CREATE_WEBHOOK_REQUEST_EVENTS_MAX_ITEMS = 16
CREATE_WEBHOOK_REQUEST_DESCRIPTION_MAX_LENGTH = 500

# htk.processes.v1.ListWebhookDeliveriesRequest
LIST_WEBHOOK_DELIVERIES_REQUEST_LIMIT_MINIMUM = 1
LIST_WEBHOOK_DELIVERIES_REQUEST_LIMIT_MAXIMUM = 200

# htk.processes.v1.StepDef
STEP_DEF_KEY_MAX_LENGTH = 64
STEP_DEF_LABEL_MAX_LENGTH = 200
STEP_DEF_TIMEOUT_SECONDS_MINIMUM = 1
STEP_DEF_TIMEOUT_SECONDS_MAXIMUM = 2592000
