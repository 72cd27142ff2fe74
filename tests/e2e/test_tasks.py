"""Human tasks end to end: REST through Envoy and gRPC stubs, on the real stack
(two workers), against PostgreSQL. The rules of rejecting, of tasks that are
not open and of listing tasks are tested in process (tests/service/test_tasks.py)."""

import time
import uuid
from typing import Any

import grpc
import httpx
import psycopg
import pytest

from htk.processes.v1 import process_service_pb2, process_service_pb2_grpc
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_grpc
from tests.e2e.test_rest_contract import PROCESSES, create_process, get_process, ok, update
from tests.support.orgs import Org
from tests.support.stack import Stack
from tests.support.tokens import create_token

TASKS = "/api/v1/tasks"
APPROVER = "alice@acme"
REVIEW_STEPS = [
    {"key": "build", "label": "Build"},
    {"key": "review", "label": "Review", "human": True},
    {"key": "deploy", "label": "Deploy"},
]
TASK_KEYS = {
    "task_id", "process_id", "namespace", "process_name", "step", "label", "status", "created_at",
}  # fmt: skip


@pytest.fixture
def approver(stack: Stack, org: Org) -> str:
    """A person's token: it may complete tasks, and nothing else beyond reading."""
    return create_token(stack.env, org.org_id, "tasks:complete", name=APPROVER)


def _reviewed_process(rest: httpx.Client, org: Org, **overrides: Any) -> tuple[str, str]:
    """A process whose human step `review` is open; returns its id and the task's."""
    process = create_process(rest, org, steps=overrides.pop("steps", REVIEW_STEPS), **overrides)
    update(rest, org, process["process_id"], {"type": "step_started", "step": "review"})
    (task_id,) = process["task_ids"]
    return process["process_id"], task_id


def _complete(
    rest: httpx.Client, org: Org, token: str, task_id: str, body: Any, **headers: str
) -> httpx.Response:
    return rest.post(f"{TASKS}/{task_id}/complete", headers=org.auth(token) | headers, json=body)


def _events(stack: Stack, process_id: str) -> list[tuple[str, dict[str, Any]]]:
    with psycopg.connect(stack.database_url) as connection:
        rows = connection.execute(
            "SELECT type, payload FROM process_events WHERE process_id = %s ORDER BY seq",
            (process_id,),
        ).fetchall()
    return [(kind, payload) for kind, payload in rows]


def test_a_person_approves_a_human_step_and_the_process_goes_on(
    rest: httpx.Client, stack: Stack, org: Org, approver: str
) -> None:
    process = create_process(rest, org, steps=REVIEW_STEPS)
    process_id, (task_id,) = process["process_id"], process["task_ids"]
    pending = ok(rest.get(f"{TASKS}/{task_id}", headers=org.auth(org.reader)))
    assert pending.keys() == TASK_KEYS
    assert (pending["status"], pending["step"], pending["label"]) == ("pending", "review", "Review")
    assert pending["process_name"] == process["name"]

    update(rest, org, process_id, {"type": "step_started", "step": "review"})
    inbox = ok(rest.get(TASKS, params={"status": "open"}, headers=org.auth(approver)))
    assert [task["task_id"] for task in inbox["tasks"]] == [task_id]
    assert (inbox["total"], inbox["limit"], inbox["offset"], inbox["next_page_token"]) == (
        1, 50, 0, "",
    )  # fmt: skip
    assert "opened_at" in inbox["tasks"][0]

    done = ok(_complete(rest, org, approver, task_id, {"outcome": "approved", "comment": "LGTM"}))
    assert done.keys() == TASK_KEYS | {
        "opened_at",
        "completed_at",
        "outcome",
        "comment",
        "completed_by",
        "completed_by_token_id",
    }
    assert (done["status"], done["outcome"], done["comment"], done["completed_by"]) == (
        "completed", "approved", "LGTM", APPROVER,
    )  # fmt: skip

    review = get_process(rest, org, process_id)["timeline"][1]
    assert (review["status"], review["detail"], review["completed_by"]) == (
        "completed", "LGTM", APPROVER,
    )  # fmt: skip
    # Read back as users read it: through the API.
    events = ok(rest.get(f"{PROCESSES}/{process_id}/events", headers=org.auth(org.reader)))
    last = events["events"][-1]
    assert {key: value for key, value in last.items() if key not in ("seq", "timestamp")} == {
        "type": "task_completed",
        "step": "review",
        "task_id": task_id,
        "outcome": "approved",
        "comment": "LGTM",
        "completed_by": APPROVER,
        "completed_by_token_id": done["completed_by_token_id"],
        "actor": APPROVER,
    }
    # The pipeline carries on.
    update(rest, org, process_id, {"type": "step_started", "step": "deploy"})
    update(rest, org, process_id, {"type": "completed"})
    assert get_process(rest, org, process_id)["status"] == "completed"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"outcome": "maybe"}, "outcome"), ({}, "outcome"), ({"outcome": "approved", "x": 1}, "x")],
)
def test_a_bad_completion_is_invalid_and_changes_nothing(
    rest: httpx.Client, org: Org, approver: str, body: dict[str, Any], field: str
) -> None:
    _, task_id = _reviewed_process(rest, org)
    refused = _complete(rest, org, approver, task_id, body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == 3
    assert refused.json()["message"].startswith(f"{field}: ")
    assert ok(rest.get(f"{TASKS}/{task_id}", headers=org.auth()))["status"] == "open"


def test_a_pipelines_token_cannot_approve_its_own_gate(rest: httpx.Client, org: Org) -> None:
    _, task_id = _reviewed_process(rest, org)
    for token in (org.writer, org.reader):
        refused = _complete(rest, org, token, task_id, {"outcome": "approved"})
        assert refused.status_code == 403, refused.text
        assert "tasks:complete" in refused.json()["message"]


def test_no_token_completes_the_task_of_a_process_it_created_or_a_step_it_started(
    rest: httpx.Client, stack: Stack, org: Org, approver: str, grpc_channel: grpc.Channel
) -> None:
    """Separation of duties: holding both scopes does not let a pipeline approve its own gate."""
    both = "processes:write,tasks:complete"
    creator = create_token(stack.env, org.org_id, both)
    starter = create_token(stack.env, org.org_id, both)
    process = create_process(rest, org, creator, steps=REVIEW_STEPS)
    process_id, (task_id,) = process["process_id"], process["task_ids"]
    update(rest, org, process_id, {"type": "step_started", "step": "review"}, starter)
    for token in (creator, starter):
        refused = _complete(rest, org, token, task_id, {"outcome": "approved"})
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "separation of duties" in refused.json()["message"]
        with pytest.raises(grpc.RpcError) as refused_grpc:
            tasks_grpc.TaskServiceStub(grpc_channel).CompleteTask(
                tasks_pb.CompleteTaskRequest(task_id=task_id, outcome="rejected"),
                metadata=org.metadata(token),
            )
        assert refused_grpc.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "separation of duties" in (refused_grpc.value.details() or "")
    assert ok(rest.get(f"{TASKS}/{task_id}", headers=org.auth()))["status"] == "open"
    done = ok(_complete(rest, org, approver, task_id, {"outcome": "approved"}))
    approver_id = done["completed_by_token_id"]
    assert (done["completed_by"], done["status"]) == (APPROVER, "completed")
    review = get_process(rest, org, process_id)["timeline"][1]
    assert (review["completed_by"], review["completed_by_token_id"]) == (APPROVER, approver_id)
    assert approver_id in stack.htk("token", "list", "--org", org.org_id).stdout


def test_another_organizations_task_is_not_found(
    rest: httpx.Client, stack: Stack, org: Org
) -> None:
    _, task_id = _reviewed_process(rest, org)
    stranger = stack.new_org("other")
    stranger_approver = create_token(stack.env, stranger.org_id, "tasks:complete", name="eve")
    missing = str(uuid.uuid4())
    for path in (f"{TASKS}/{task_id}", f"{TASKS}/{missing}"):
        response = rest.get(path, headers=stranger.auth())
        assert response.status_code == 404
        assert (
            response.json()["message"].startswith("task ")
            and "not found" in response.json()["message"]
        )
    refused = _complete(rest, stranger, stranger_approver, task_id, {"outcome": "approved"})
    assert refused.status_code == 404
    listed = ok(rest.get(TASKS, headers=stranger.auth()))
    assert listed["total"] == 0


def test_a_retried_completion_with_its_key_replays_the_first_answer(
    rest: httpx.Client, stack: Stack, org: Org, approver: str
) -> None:
    process_id, task_id = _reviewed_process(rest, org)
    body = {"outcome": "approved"}
    first = ok(_complete(rest, org, approver, task_id, body, **{"Idempotency-Key": "approve-1"}))
    again = ok(_complete(rest, org, approver, task_id, body, **{"Idempotency-Key": "approve-1"}))
    assert first == again
    assert [kind for kind, _ in _events(stack, process_id)].count("task_completed") == 1
    conflict = _complete(
        rest, org, approver, task_id, {"outcome": "rejected"}, **{"Idempotency-Key": "approve-1"}
    )
    assert conflict.status_code == 409


def test_tasks_over_grpc(
    grpc_channel: grpc.Channel, rest: httpx.Client, stack: Stack, org: Org
) -> None:
    process_id, task_id = _reviewed_process(rest, org)
    approver = create_token(stack.env, org.org_id, "tasks:complete", name="bob")
    stub = tasks_grpc.TaskServiceStub(grpc_channel)
    auth = (("authorization", f"Bearer {approver}"),)
    inbox = stub.ListTasks(tasks_pb.ListTasksRequest(process_id=process_id), metadata=auth)
    assert [task.task_id for task in inbox.tasks] == [task_id]
    done = stub.CompleteTask(
        tasks_pb.CompleteTaskRequest(task_id=task_id, outcome="approved"), metadata=auth
    )
    assert (done.status, done.completed_by, done.HasField("comment")) == ("completed", "bob", False)
    with pytest.raises(grpc.RpcError) as again:
        stub.CompleteTask(
            tasks_pb.CompleteTaskRequest(task_id=task_id, outcome="approved"), metadata=auth
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stub.GetTask(tasks_pb.GetTaskRequest(task_id=task_id), metadata=auth) == done


def _wait_for(condition: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def test_a_silent_step_times_out_once_on_a_two_worker_stack(
    rest: httpx.Client, stack: Stack, org: Org
) -> None:
    assert len(stack.workers()) == 2
    steps = [
        {"key": "build", "label": "Build", "timeout_seconds": 1},
        {"key": "review", "label": "Review", "human": True, "timeout_seconds": 2},
    ]
    process = create_process(rest, org, steps=steps)
    process_id, (task_id,) = process["process_id"], process["task_ids"]
    assert [d["timeout_seconds"] for d in process["step_defs"]] == [1, 2]
    update(rest, org, process_id, {"type": "step_started", "step": "build"})
    update(rest, org, process_id, {"type": "step_started", "step": "review"})

    def failed_steps() -> list[dict[str, Any]] | None:
        timeline = get_process(rest, org, process_id)["timeline"]
        return timeline if all(step["status"] == "failed" for step in timeline) else None

    build, review = _wait_for(failed_steps)
    assert build["error"] == "timed out after 1 s without an update"
    assert review["error"] == "timed out after 2 s without an update"
    assert ok(rest.get(f"{TASKS}/{task_id}", headers=org.auth()))["status"] == "expired"
    time.sleep(1.5)  # further rounds of both workers must not time them out again
    events = [(kind, payload) for kind, payload in _events(stack, process_id)]
    assert [kind for kind, _ in events].count("step_timed_out") == 2
    assert get_process(rest, org, process_id)["status"] == "running"
    ok(rest.get(f"{PROCESSES}/{process_id}", headers=org.auth()))


def test_decided_tasks_list_by_outcome_and_decider_over_rest_and_grpc(
    grpc_channel: grpc.Channel, rest: httpx.Client, stack: Stack, org: Org, approver: str
) -> None:
    decided = {}
    for outcome in ("approved", "rejected"):
        _, task_id = _reviewed_process(rest, org)
        ok(_complete(rest, org, approver, task_id, {"outcome": outcome}))
        decided[outcome] = task_id
    waiting, _ = _reviewed_process(rest, org)

    query = {"outcome": "rejected", "completed_by": APPROVER}
    rejected = ok(rest.get(TASKS, params=query, headers=org.auth(org.reader)))
    assert ([task["task_id"] for task in rejected["tasks"]], rejected["total"]) == (
        [decided["rejected"]], 1,
    )  # fmt: skip
    stub = tasks_grpc.TaskServiceStub(grpc_channel)
    by_approver = stub.ListTasks(
        tasks_pb.ListTasksRequest(completed_by=APPROVER), metadata=org.metadata(org.reader)
    )
    assert (by_approver.total, {task.completed_by for task in by_approver.tasks}) == (2, {APPROVER})

    refused = rest.get(TASKS, params={"outcome": "maybe"}, headers=org.auth(org.reader))
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("outcome: ")

    # A list shows which runs wait for a person, at which step, by its label.
    (listed,) = [
        summary
        for summary in ok(rest.get(PROCESSES, headers=org.auth(org.reader)))["processes"]
        if summary["process_id"] == waiting
    ]
    assert (listed["current_step_label"], listed["open_task_count"]) == ("Review", 1)
    assert "finished_at" not in listed


def test_a_listed_process_shows_its_step_label_and_open_tasks_over_rest_and_grpc_as_it_moves(
    rest: httpx.Client,
    grpc_stub: process_service_pb2_grpc.ProcessServiceStub,
    org: Org,
    approver: str,
) -> None:
    steps = [*REVIEW_STEPS, {"key": "sign-off", "label": "Sign-off", "human": True}]
    process = create_process(rest, org, namespace="moving", steps=steps)
    process_id, (review_task, _) = process["process_id"], process["task_ids"]

    def shown() -> tuple[str | None, int]:
        (over_rest,) = ok(
            rest.get(PROCESSES, params={"namespace": "moving"}, headers=org.auth(org.reader))
        )["processes"]
        request = process_service_pb2.ListProcessesRequest(namespace="moving")
        (over_grpc,) = grpc_stub.ListProcesses(request, metadata=org.metadata(org.reader)).processes
        label = over_grpc.current_step_label if over_grpc.HasField("current_step_label") else None
        assert (over_rest.get("current_step_label"), over_rest["open_task_count"]) == (
            label, over_grpc.open_task_count,
        )  # fmt: skip
        return label, over_grpc.open_task_count

    assert shown() == (None, 0)
    update(rest, org, process_id, {"type": "step_started", "step": "review"})
    assert shown() == ("Review", 1)
    update(rest, org, process_id, {"type": "step_started", "step": "sign-off"})
    assert shown() == ("Sign-off", 2)
    ok(_complete(rest, org, approver, review_task, {"outcome": "approved"}))
    assert shown() == ("Sign-off", 1)
    ok(rest.post(f"{PROCESSES}/{process_id}/cancel", headers=org.auth(), json={}))
    assert shown() == ("Sign-off", 0)
