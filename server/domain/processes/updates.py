"""The update record and the event log: what a client sends to change a
process, the shapes each type of update takes, and the events logged of it."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.domain.checks import check_text, one_of, parse_choice
from server.domain.declared import EventType, ProcessStatus, UpdateType
from server.domain.errors import InvalidArgument
from server.domain.processes.limits import (
    DEFAULT_EVENTS_PAGE_SIZE,
    MAX_EVENTS_PAGE_SIZE,
    MAX_PERCENT,
    MAX_REASON_LENGTH,
    MAX_UPDATE_TEXT_LENGTH,
    MIN_PERCENT,
    JsonObject,
    check_data,
)

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
    EventType.CANCELLED: frozenset({"reason"}),
}
# How each event that finishes a process leaves it.
_FINISHING: dict["UpdateType | EventType", ProcessStatus] = {
    UpdateType.COMPLETED: ProcessStatus.COMPLETED,
    UpdateType.FAILED: ProcessStatus.FAILED,
    EventType.CANCELLED: ProcessStatus.CANCELLED,
}


def event_type(name: str) -> "UpdateType | EventType":
    """The type of a logged event, by its name: a client's update, or htk's own.

    (EventType declares every word of ProcessEvent.type, an update's too; a
    logged update reads back as its UpdateType, which equals its EventType.)"""
    return UpdateType(name) if name in UpdateType.__members__.values() else EventType(name)


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
    if update.percent is not None and not MIN_PERCENT <= update.percent <= MAX_PERCENT:
        raise InvalidArgument(
            "percent", f"must be between {MIN_PERCENT} and {MAX_PERCENT}, got {update.percent}"
        )
    for name, max_length in MAX_UPDATE_TEXT_LENGTH.items():
        check_text(name, sent.get(name), max_length)
    if update.data is not None:
        check_data(update.data)
    return update_type


def validate_reason(reason: str | None) -> None:
    """Checks a cancel's optional reason, which is bounded like an update's `error`."""
    if reason is not None and not reason.strip():
        raise InvalidArgument("reason", "must not be blank; leave it out to give none")
    check_text("reason", reason, MAX_REASON_LENGTH)


@dataclass(frozen=True)
class Event:
    """An accepted change, as appended to the process's event log."""

    seq: int
    type: UpdateType | EventType
    step: str | None
    payload: JsonObject
    recorded_at: datetime
    # Who caused it: the name of the calling token, or SYSTEM_ACTOR for what
    # htk does by itself. None only for events logged before htk recorded it.
    actor: str | None

    @property
    def finishes_process(self) -> bool:
        return self.type in _FINISHING

    @property
    def status_after(self) -> ProcessStatus:
        """The process's status once the event applied; only a running process
        takes events, so that was its status before."""
        return _FINISHING.get(self.type, ProcessStatus.RUNNING)


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
