"""Who did what: each event's actor and each process's creator, as the domain records them."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from server.domain.errors import InvalidArgument
from server.domain.processes import (
    Process,
    StepDef,
    Update,
    apply_update,
    complete_task,
    new_process,
    time_out,
)
from server.domain.tasks import Completion
from server.domain.tokens import SYSTEM_ACTOR, Caller, Scope, token_name

T0 = datetime(2026, 2, 24, 12, 0, tzinfo=UTC)
PIPELINE = Caller("acme", frozenset({Scope.PROCESSES_WRITE}), "ci-pipeline", uuid.uuid4())
PERSON = Caller("acme", frozenset({Scope.TASKS_COMPLETE}), "alice", uuid.uuid4())


def _process() -> Process:
    return new_process(
        org_id="acme",
        namespace="deployments",
        name="Deploy",
        step_defs=[
            StepDef("build", "Build", human=False, timeout_seconds=60),
            StepDef("review", "Review", human=True),
        ],
        now=T0,
        created_by=PIPELINE,
    )


def test_a_process_records_the_name_and_id_of_the_token_that_created_it() -> None:
    process = _process()
    assert (process.created_by, process.created_by_token_id) == ("ci-pipeline", PIPELINE.token_id)


def test_an_update_is_logged_with_its_senders_name() -> None:
    process = _process()
    change = apply_update(process, Update("step_started", step="build"), T0, by=PIPELINE)
    assert change.event.actor == "ci-pipeline"


def test_a_task_completion_is_logged_with_the_persons_name() -> None:
    process = _process()
    apply_update(process, Update("step_started", step="review"), T0, by=PIPELINE)
    task_id = process.step("review").task_id
    assert task_id is not None
    change = complete_task(process, task_id, Completion("approved", None), PERSON, T0)
    assert change.event.actor == "alice"


def test_a_timeout_is_logged_as_htks_own() -> None:
    process = _process()
    apply_update(process, Update("step_started", step="build"), T0, by=PIPELINE)
    change = time_out(process, "build", T0 + timedelta(seconds=61))
    assert change is not None
    assert change.event.actor == SYSTEM_ACTOR == "htk"


@pytest.mark.parametrize("name", ["htk", "HTK", " Htk ", "\uff48\uff54\uff4b"])  # fullwidth too
def test_no_token_may_take_htks_name(name: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        token_name(name)
    assert raised.value.field == "name"


@pytest.mark.parametrize("name", ["htk-ci", "htk bot", "shtk"])
def test_names_that_only_contain_htk_are_fine(name: str) -> None:
    assert token_name(name) == name
