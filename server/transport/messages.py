"""Conversions between protobuf messages and domain objects."""

import json
import math
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import webhook_service_pb2 as webhooks_pb
from server.domain.errors import InvalidArgument
from server.domain.processes import (
    Event,
    JsonObject,
    ListQuery,
    Process,
    ProcessPage,
    ProcessSummary,
    Step,
    StepDef,
    Update,
    summary_of,
)
from server.domain.retention import ArchivedProcess
from server.domain.tasks import Completion, Task, TaskPage, TaskQuery
from server.domain.tokens import Caller
from server.domain.watch import Heartbeat, ProcessChange
from server.domain.webhooks import Delivery, DeliveryPage, Webhook

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    _set_time(stamp, moment)
    return stamp


def _set_time(stamp: timestamp_pb2.Timestamp, moment: datetime) -> None:
    """Sets `stamp` as `FromDatetime` would from an aware datetime, by timedelta
    arithmetic: a Get builds some twenty, a List a hundred, and FromDatetime's
    time tuple costs several times more. (Naive datetimes never get here: the
    database, the clock and the domain give aware ones, and subtracting would
    refuse one.)"""
    since = moment - _EPOCH
    stamp.seconds = since.days * 86400 + since.seconds
    stamp.nanos = since.microseconds * 1000


def _text(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


def _struct(data: JsonObject | None) -> struct_pb2.Struct | None:
    if data is None:
        return None
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


def step_defs(request: pb.CreateProcessRequest) -> list[StepDef]:
    return [
        StepDef(
            key=d.key,
            label=d.label,
            human=d.human,
            timeout_seconds=d.timeout_seconds if d.HasField("timeout_seconds") else None,
        )
        for d in request.step_defs
    ]


def update(request: pb.UpdateProcessRequest) -> Update:
    return Update(
        type=request.type,
        step=request.step if request.HasField("step") else None,
        detail=request.detail if request.HasField("detail") else None,
        data=_data(request.data) if request.HasField("data") else None,
        error=request.error if request.HasField("error") else None,
        message=request.message if request.HasField("message") else None,
        percent=request.percent if request.HasField("percent") else None,
        summary=request.summary if request.HasField("summary") else None,
    )


def _data(data: struct_pb2.Struct) -> JsonObject:
    """`data` as the JSON object it holds, read from the Struct directly: what
    `json_format.MessageToDict` gives, at a fraction of its cost."""
    fields = data.fields
    return {key: _json_value(fields[key]) for key in fields}


def _json_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):  # JSON cannot hold NaN and Infinity
            raise InvalidArgument("data", "numbers must be finite (no NaN or Infinity)")
        return _whole_number_as_int(number)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _data(value.struct_value)
    if kind == "list_value":
        return [_json_value(item) for item in value.list_value.values]
    return None  # null_value, or a Value with nothing set, which JSON writes as null


def _whole_number_as_int(number: float) -> int | float:
    """A Struct holds every number as a double; whole ones (exact in a double)
    become ints again, so `data` is measured as JSON writes it (`0`, not `0.0`)."""
    return int(number) if number.is_integer() and abs(number) <= 2**53 else number


def _whole_numbers_as_ints(value: Any) -> Any:
    """`_whole_number_as_int` throughout a JSON value."""
    if isinstance(value, float):
        return _whole_number_as_int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_as_ints(item) for item in value]
    return value


def caller(authenticated: Caller) -> pb.Caller:
    return pb.Caller(
        organization=authenticated.org_id,
        token_name=authenticated.token_name,
        scopes=sorted(authenticated.scopes),
    )


def process(process: Process) -> pb.Process:
    """The message of a process. Its steps' messages are built in place, in
    their repeated fields, and so are its times: one built apart would be
    copied in. A Get is mostly this."""
    message = pb.Process(
        process_id=str(process.process_id),
        namespace=process.namespace,
        name=process.name,
        status=process.status.value,
        current_step=process.current_step,
        task_ids=[str(task_id) for task_id in process.task_ids],
        summary=process.summary,
        error=process.error,
        seq=process.update_count,
        reason=process.reason,
        created_by=process.created_by,
        labels=process.labels,
        url=process.url,
    )
    add_step_def = message.step_defs.add
    add_entry = message.timeline.add
    for step in process.steps:
        add_step_def(
            key=step.key, label=step.label, human=step.human, timeout_seconds=step.timeout_seconds
        )
        _timeline_entry(step, add_entry)
    if process.started_at is not None:
        _set_time(message.started_at, process.started_at)
    if process.finished_at is not None:
        _set_time(message.finished_at, process.finished_at)
    return message


def _timeline_entry(
    step: Step, make: Callable[..., pb.TimelineEntry] = pb.TimelineEntry
) -> pb.TimelineEntry:
    """The timeline's entry of `step`, made by `make` (a repeated field's
    `add`, to build it in place)."""
    entry = make(
        step=step.key,
        label=step.label,
        status=step.status.value,
        human=step.human,
        task_id=str(step.task.task_id) if step.task is not None else None,
        detail=step.detail,
        progress_message=step.progress_message,
        progress_percent=step.progress_percent,
        error=step.error,
        completed_by=step.completed_by,
        completed_by_token_id=_text(step.completed_by_token_id),
    )
    if step.started_at is not None:
        _set_time(entry.started_at, step.started_at)
    if step.completed_at is not None:
        _set_time(entry.completed_at, step.completed_at)
    if (duration := step.duration_ms) is not None:
        entry.duration_ms = duration
    if step.data is not None:
        entry.data.SetInParent()  # an empty object is still an object
        entry.data.update(step.data)
    return entry


def _summary(
    summary: ProcessSummary, make: Callable[..., pb.ProcessSummary] = pb.ProcessSummary
) -> pb.ProcessSummary:
    """The message of a list's item, made by `make`: a list passes its repeated
    field's `add`, which builds the item in place (one made apart would be
    copied in), and its times are set in place for the same reason. A List
    makes fifty of these: this is most of its CPU in Python."""
    message = make(
        process_id=str(summary.process_id),
        namespace=summary.namespace,
        name=summary.name,
        status=summary.status,
        current_step=summary.current_step,
        step_count=summary.step_count,
        task_ids=[str(task_id) for task_id in summary.task_ids],
        created_by=summary.created_by,
        labels=summary.labels,
        url=summary.url,
        current_step_label=summary.current_step_label,
        open_task_count=summary.open_task_count,
    )
    _set_time(message.started_at, summary.started_at)
    if summary.finished_at is not None:
        _set_time(message.finished_at, summary.finished_at)
    return message


def process_page(page: ProcessPage, query: ListQuery) -> pb.ListProcessesResponse:
    response = pb.ListProcessesResponse(
        total=page.total,
        limit=query.limit,
        offset=query.offset,
        next_page_token=page.next_page_token or "",
    )
    for summary in page.processes:
        _summary(summary, response.processes.add)
    return response


def acknowledgement(process_id: str, event: Event) -> pb.UpdateProcessResponse:
    return pb.UpdateProcessResponse(
        process_id=process_id,
        update_type=event.type.value,
        timestamp=_timestamp(event.recorded_at),
        seq=event.seq,
    )


def task(task: Task, make: Callable[..., tasks_pb.Task] = tasks_pb.Task) -> tasks_pb.Task:
    """The message of a task, made by `make`: ListTasks passes its repeated
    field's `add`, as a List does (see `_summary`)."""
    message = make(
        task_id=str(task.task_id),
        process_id=str(task.process_id),
        namespace=task.namespace,
        process_name=task.process_name,
        step=task.step,
        label=task.label,
        status=task.status,
        outcome=task.outcome,
        comment=task.comment,
        completed_by=task.completed_by,
        completed_by_token_id=_text(task.completed_by_token_id),
    )
    _set_time(message.created_at, task.created_at)
    if task.opened_at is not None:
        _set_time(message.opened_at, task.opened_at)
    if task.completed_at is not None:
        _set_time(message.completed_at, task.completed_at)
    return message


def task_page(page: TaskPage, query: TaskQuery) -> tasks_pb.ListTasksResponse:
    response = tasks_pb.ListTasksResponse(
        total=page.total,
        limit=query.limit,
        offset=query.offset,
        next_page_token=page.next_page_token or "",
    )
    for item in page.tasks:
        task(item, response.tasks.add)
    return response


def completion(request: tasks_pb.CompleteTaskRequest) -> Completion:
    return Completion(
        outcome=request.outcome,
        comment=request.comment if request.HasField("comment") else None,
    )


def event(event: Event) -> pb.ProcessEvent:
    # Field by field: a stored key the message lacks must not fail the read
    # of every page and stream that holds the event (domain EVENT_FIELDS
    # lists the keys; tests/unit hold this mapping to that list).
    payload = event.payload
    return pb.ProcessEvent(
        seq=event.seq,
        type=event.type.value,
        timestamp=_timestamp(event.recorded_at),
        step=event.step,
        detail=payload.get("detail"),
        data=_struct(payload.get("data")),
        error=payload.get("error"),
        message=payload.get("message"),
        percent=payload.get("percent"),
        summary=payload.get("summary"),
        outcome=payload.get("outcome"),
        comment=payload.get("comment"),
        completed_by=payload.get("completed_by"),
        completed_by_token_id=payload.get("completed_by_token_id"),
        task_id=payload.get("task_id"),
        timeout_seconds=payload.get("timeout_seconds"),
        reason=payload.get("reason"),
        actor=event.actor,
    )


def archived(archived_process: Process, events: Sequence[Event]) -> ArchivedProcess:
    """A process and its whole event log as GetProcess and ListProcessEvents
    answer over REST, for the archive of what retention deletes."""
    return ArchivedProcess(
        process=_rest_json(process(archived_process)),
        events=[_rest_json(event(logged)) for logged in events],
    )


def _rest_json(message: Message) -> dict[str, Any]:
    """A message as Envoy's transcoder prints it (server/edge/envoy.yaml):
    field names as declared, zero values included, and whole numbers of a
    Struct without a fraction, as its C++ printer writes them."""
    return _whole_numbers_as_ints(  # type: ignore[no-any-return]
        json_format.MessageToDict(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
    )


def _heartbeat(heartbeat: Heartbeat) -> pb.Heartbeat:
    return pb.Heartbeat(time=_timestamp(heartbeat.sent_at))


def process_watch(item: Process | Event | Heartbeat) -> pb.WatchProcessResponse:
    match item:
        case Process():
            return pb.WatchProcessResponse(process=process(item))
        case Event():
            return pb.WatchProcessResponse(event=event(item))
        case Heartbeat():
            return pb.WatchProcessResponse(heartbeat=_heartbeat(item))


def process_watch_error(status: status_pb2.Status) -> pb.WatchProcessResponse:
    return pb.WatchProcessResponse(error=status)


def organization_watch(item: ProcessChange | Heartbeat) -> pb.WatchProcessesResponse:
    match item:
        case ProcessChange():
            return pb.WatchProcessesResponse(
                process=_summary(item.process),
                event=event(item.event) if item.event is not None else None,
            )
        case Heartbeat():
            return pb.WatchProcessesResponse(heartbeat=_heartbeat(item))


def organization_watch_error(status: status_pb2.Status) -> pb.WatchProcessesResponse:
    return pb.WatchProcessesResponse(error=status)


def webhook_message(
    event_type: str, happened_at: datetime, subject: Process, logged: Event | None
) -> bytes:
    """A webhook's message (Standard Webhooks' `type`, `timestamp`, `data`),
    its parts printed as the REST API prints them: the process summary, and
    the event, its step and the step's task where there is one."""
    data: dict[str, Any] = {"process": _rest_json(_summary(summary_of(subject)))}
    if logged is not None:
        data["event"] = _rest_json(event(logged))
        if logged.step is not None:
            step = subject.step(logged.step)
            data["step"] = _rest_json(_timeline_entry(step))
            if step.task is not None:
                data["task"] = _rest_json(task(step.task))
    message = {"type": event_type, "timestamp": happened_at.isoformat(), "data": data}
    return json.dumps(message, separators=(",", ":")).encode()


def webhook(found: Webhook) -> webhooks_pb.Webhook:
    return webhooks_pb.Webhook(
        webhook_id=str(found.webhook_id),
        url=found.url,
        events=found.events,
        namespace=found.namespace,
        description=found.description,
        enabled=found.enabled,
        created_at=_timestamp(found.created_at),
        secret=found.secret,
    )


def delivery(found: Delivery) -> webhooks_pb.WebhookDelivery:
    return webhooks_pb.WebhookDelivery(
        delivery_id=str(found.delivery_id),
        event_type=found.event_type,
        process_id=str(found.process_id),
        status=found.status.value,
        attempts=found.attempts,
        last_status_code=found.last_status_code,
        last_error=found.last_error,
        # A pending delivery's time is when its next attempt is due (or its
        # lease of one under way ends); an ended one has none.
        next_attempt_at=_timestamp(found.next_attempt_at) if found.status == "pending" else None,
        created_at=_timestamp(found.created_at),
        delivered_at=_timestamp(found.delivered_at),
    )


def delivery_page(page: DeliveryPage) -> webhooks_pb.ListWebhookDeliveriesResponse:
    return webhooks_pb.ListWebhookDeliveriesResponse(
        deliveries=[delivery(found) for found in page.deliveries],
        next_page_token=page.next_page_token or "",
    )
