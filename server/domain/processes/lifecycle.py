"""The state machine of a process and its steps: an update, a step's timeout
or a cancel, applied in memory or refused, leaving the process untouched.
However a process finishes, every one of its steps has ended with it.

Every change returns a `Change` that names what to write back, together with
the event to log. No accepted change takes a process past MAX_PROCESS_BYTES.
"""

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from server.domain.declared import EventType, ProcessStatus, StepStatus, UpdateType
from server.domain.errors import FailedPrecondition
from server.domain.processes.limits import MAX_PROCESS_BYTES, JsonObject, json_bytes, text_bytes
from server.domain.processes.model import Process, Step
from server.domain.processes.updates import Event, Update, validate_reason, validate_update
from server.domain.tasks import Task
from server.domain.tokens import SYSTEM_ACTOR, Caller


@dataclass(frozen=True)
class Change:
    """What an accepted change did: the event to log, and the steps (by
    position) and tasks whose state it changed, to be written back."""

    event: Event
    step_positions: tuple[int, ...] = ()
    tasks: tuple[Task, ...] = ()


def apply_update(process: Process, update: Update, now: datetime, *, by: Caller) -> Change:
    """Applies one update, sent with the token of `by`, to the process, or
    raises and leaves it unchanged."""
    update_type = validate_update(update)
    _require_running(process, "it accepts no more updates")
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
            changed.started_by_token_id = by.token_id
        check_budget(process, step_bytes(changed) - step_bytes(step), _largest_field(update))
        vars(step).update(vars(changed))
        positions = (position,)
        # Progress leaves a task as it is; every other step update moves it.
        if step.task is not None and update_type is not UpdateType.PROGRESS:
            tasks = (step.task,)
    else:
        check_budget(process, text_bytes(update.summary, update.error), _largest_field(update))
        if update_type is UpdateType.COMPLETED:
            process.summary = update.summary
            positions, tasks = _finish(process, ProcessStatus.COMPLETED, now)
        else:
            process.error = update.error
            positions, tasks = _finish(process, ProcessStatus.FAILED, now)
    process.update_count = seq
    payload = update.sent_fields()
    payload.pop("step", None)
    return Change(
        event=Event(
            seq=seq,
            type=update_type,
            step=update.step,
            payload=payload,
            recorded_at=now,
            actor=by.token_name,
        ),
        step_positions=positions,
        tasks=tasks,
    )


def cancel(process: Process, reason: str | None, now: datetime, *, by: Caller) -> Change:
    """Stops a running process for good, on behalf of `by`, or raises and
    leaves it unchanged: it ends `cancelled` as a finished one does, with the
    reason given."""
    validate_reason(reason)
    _require_running(process, "it cannot be cancelled")
    check_budget(process, text_bytes(reason), "reason")
    process.reason = reason
    positions, tasks = _finish(process, ProcessStatus.CANCELLED, now)
    process.update_count += 1
    payload: JsonObject = {"reason": reason} if reason is not None else {}
    return Change(
        event=Event(
            process.update_count,
            EventType.CANCELLED,
            None,
            payload,
            recorded_at=now,
            actor=by.token_name,
        ),
        step_positions=positions,
        tasks=tasks,
    )


def _require_running(process: Process, consequence: str) -> None:
    if process.status is not ProcessStatus.RUNNING:
        raise FailedPrecondition(
            f"process {process.process_id} has already {process.status.value}; {consequence}"
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
    fail_step(step, now, seq, error=error)
    step.changed_seq = seq
    tasks: tuple[Task, ...] = ()
    if step.task is not None:
        step.task.expire()
        tasks = (step.task,)
    process.update_count = seq
    payload: JsonObject = {"error": error, "timeout_seconds": step.timeout_seconds}
    return Change(
        event=Event(
            seq, EventType.STEP_TIMED_OUT, step.key, payload, recorded_at=now, actor=SYSTEM_ACTOR
        ),
        step_positions=(process.steps.index(step),),
        tasks=tasks,
    )


def stored_bytes(process: Process) -> int:
    """What a process holds, as MAX_PROCESS_BYTES counts it: its texts in UTF-8
    and the `data` of its steps as compact JSON."""
    own = text_bytes(
        process.namespace,
        process.name,
        process.summary,
        process.error,
        process.reason,
        process.url,
        *process.labels.keys(),
        *process.labels.values(),
    )
    return own + sum(step_bytes(step) for step in process.steps)


def step_bytes(step: Step) -> int:
    # A step with a timeout counts the error its timeout would set even
    # before it is set: a timeout is htk's own write, which cannot be
    # refused, so it must never take a full process past its budget.
    error = text_bytes(step.error)
    if step.timeout_seconds is not None:
        error = max(error, text_bytes(_timeout_error(step)))
    texts = text_bytes(step.key, step.label, step.detail, step.progress_message) + error
    return texts + (json_bytes(step.data) if step.data is not None else 0)


def _timeout_error(step: Step) -> str:
    return f"timed out after {step.timeout_seconds} s without an update"


def _largest_field(update: Update) -> str:
    """The update's field that adds the most to its process: the one a refusal names."""
    sent = update.sent_fields()
    for not_stored in ("step", "percent"):
        sent.pop(not_stored, None)
    return max(
        sent, key=lambda name: len(json.dumps(sent[name], ensure_ascii=False)), default="type"
    )


def check_budget(process: Process, growth: int, field: str) -> None:
    """Refuses a change that would take the process past MAX_PROCESS_BYTES,
    naming `field` as what to send less of.

    A change that does not grow the process is always taken, so that a
    process can still finish when it is full; no accepted change takes it
    past the budget (timeouts have their room reserved, see step_bytes).
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
            complete_step(step, now, seq, detail=update.detail, data=update.data)
            if step.task is not None:
                step.task.cancel()
        case UpdateType.STEP_FAILED:
            _require_status(step, {StepStatus.PENDING, StepStatus.RUNNING}, "fail")
            fail_step(step, now, seq, error=update.error)
            if step.task is not None:
                step.task.cancel()
        case _:  # pragma: no cover - validate_update only lets step types carry a step
            raise AssertionError(update_type)
    step.changed_seq = seq


def _deadline(step: Step, now: datetime) -> datetime | None:
    if step.timeout_seconds is None:
        return None
    return now + timedelta(seconds=step.timeout_seconds)


def complete_step(
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


def fail_step(step: Step, now: datetime, seq: int, *, error: str | None) -> None:
    _start_implicitly(step, now, seq)
    step.status = StepStatus.FAILED
    # A failed run ended too: its timeline shows how long it took.
    step.completed_at = now
    step.error = error
    step.deadline_at = None


def _start_implicitly(step: Step, now: datetime, seq: int) -> None:
    """A step that ends without having been started counts as started now."""
    if step.status is StepStatus.PENDING:
        step.started_at = now
        step.started_seq = seq


# How a step that had not ended ends when its process finishes.
_ENDED_BY_FINISH = {
    StepStatus.RUNNING: StepStatus.CANCELLED,
    StepStatus.PENDING: StepStatus.SKIPPED,
}


def _finish(
    process: Process, status: ProcessStatus, now: datetime
) -> tuple[tuple[int, ...], tuple[Task, ...]]:
    """Ends the process with `status` at `now`, and with it every step that
    had not ended (nothing of a finished process may read as still going on):
    a running step is cancelled and a pending one skipped, both ending now,
    and the tasks that still wait are cancelled. The steps keep what they
    showed (a cancelled step its progress, to show how far it got) and their
    place for `current_step`. Returns the steps and tasks changed."""
    process.status = status
    process.finished_at = now
    positions = []
    for position, step in enumerate(process.steps):
        if (ended := _ENDED_BY_FINISH.get(step.status)) is not None:
            step.status = ended
            step.completed_at = now
            step.deadline_at = None
            positions.append(position)
    cancelled = tuple(task for task in process.tasks if task.is_active)
    for task in cancelled:
        task.cancel()
    return tuple(positions), cancelled
