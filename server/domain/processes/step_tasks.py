"""Tasks on steps: a person decides the task of a human step, which ends the
step as an update would, under the same budget and separation of duties."""

import uuid
from dataclasses import replace
from datetime import datetime

from server.domain.declared import EventType, Outcome
from server.domain.errors import FailedPrecondition
from server.domain.processes.lifecycle import (
    Change,
    check_budget,
    complete_step,
    fail_step,
    step_bytes,
)
from server.domain.processes.limits import JsonObject
from server.domain.processes.model import Process
from server.domain.processes.updates import Event
from server.domain.tasks import Completion, validate_completion
from server.domain.tokens import Caller


def complete_task(
    process: Process, task_id: uuid.UUID, completion: Completion, by: Caller, now: datetime
) -> Change:
    """A person decides an open task: `approved` completes its step, `rejected`
    fails it. Raises, leaving the process unchanged, if the task is not open
    (an update or a timeout has ended its step first), if `by` created the
    process or started the step, or if the comment does not fit the process."""
    outcome = validate_completion(completion)
    step = process.step_of_task(task_id)
    task = step.task
    assert task is not None  # step_of_task found the step by its task
    # An open task's step is running in a running process (finishing cancels
    # the open tasks), so the task's status is the first precondition.
    task.require_open()
    if by.token_id in (process.created_by_token_id, step.started_by_token_id):
        raise FailedPrecondition(
            "separation of duties: the token that created the process or started the step"
            f" cannot complete its task; the step {step.key!r} needs another person's token"
        )
    seq = process.update_count + 1
    decided = replace(step)
    if outcome is Outcome.APPROVED:
        complete_step(decided, now, seq, detail=completion.comment, data=None)
    else:
        reason = f"rejected: {completion.comment}" if completion.comment else "rejected"
        fail_step(decided, now, seq, error=reason)
    check_budget(process, step_bytes(decided) - step_bytes(step), "comment")
    vars(step).update(vars(decided))
    task.complete(outcome, completion.comment, by, now)
    step.completed_by = by.token_name
    step.completed_by_token_id = by.token_id
    step.changed_seq = seq
    process.update_count = seq
    payload: JsonObject = {"task_id": str(task_id), "outcome": outcome.value}
    if completion.comment is not None:
        payload["comment"] = completion.comment
    payload["completed_by"] = by.token_name
    payload["completed_by_token_id"] = str(by.token_id)
    return Change(
        event=Event(
            seq, EventType.TASK_COMPLETED, step.key, payload, recorded_at=now, actor=by.token_name
        ),
        step_positions=(process.steps.index(step),),
        tasks=(task,),
    )
