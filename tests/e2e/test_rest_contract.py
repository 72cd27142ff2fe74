"""The REST contract through Envoy: the documented happy paths and JSON shapes.

Field for field as in the API docs (list-and-get-processes, update-process)
and the comments of protos/htk/processes/v1/process_service.proto. Errors are
in test_rest_errors.py, which reuses the helpers below.
"""

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.orgs import Org
from tests.support.stack import Stack

Json = dict[str, Any]

PROCESSES = "/api/v1/processes"
STEPS: list[Json] = [
    {"key": "build", "label": "Build", "human": False},
    {"key": "test", "label": "Test", "human": False},
    {"key": "review", "label": "Review", "human": True},
    {"key": "deploy", "label": "Deploy", "human": False},
]
PROCESS_KEYS = {
    "process_id",
    "namespace",
    "name",
    "status",
    "step_defs",
    "timeline",
    "task_ids",
    "started_at",
    "seq",
    "created_by",
    "labels",
}
SUMMARY_KEYS = {
    "process_id",
    "namespace",
    "name",
    "status",
    "started_at",
    "step_count",
    "task_ids",
    "created_by",
    "labels",
    "open_task_count",
}
ACK_KEYS = {"process_id", "update_type", "timestamp", "seq"}
_RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
_GRPC_HEADERS = ("grpc-status", "grpc-message")


# --- helpers (also used by test_rest_errors.py) -------------------------------------


def ok(response: httpx.Response) -> Json:
    """The JSON body of a successful REST response, checked to be plain REST."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    for header in _GRPC_HEADERS:
        assert header not in response.headers
    body = response.json()
    assert isinstance(body, dict)
    return body


def moment(text: Any) -> datetime:
    """Parses an RFC 3339 UTC timestamp ("...Z"), failing on any other shape."""
    assert isinstance(text, str) and _RFC3339_UTC.fullmatch(text), text
    return datetime.fromisoformat(text)


def whole_number(value: Any) -> int:
    """A JSON number with an integral value (never a string, never a bool)."""
    assert type(value) in (int, float), f"{value!r} is not a JSON number"
    assert float(value).is_integer(), value
    return int(value)


def create_body(
    namespace: str = "deployments", name: str = "Deploy v2.1.0", steps: list[Json] = STEPS
) -> Json:
    return {"namespace": namespace, "name": name, "step_defs": steps}


def create_process(rest: httpx.Client, org: Org, token: str | None = None, **fields: Any) -> Json:
    return ok(rest.post(PROCESSES, headers=org.auth(token), json=create_body(**fields)))


def get_process(rest: httpx.Client, org: Org, process_id: str) -> Json:
    return ok(rest.get(f"{PROCESSES}/{process_id}", headers=org.auth(org.reader)))


def post_update(
    rest: httpx.Client, org: Org, process_id: str, body: Any, token: str | None = None
) -> httpx.Response:
    """Posts an update as the docs' typical workflow does: raw JSON, no Content-Type."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return rest.post(f"{PROCESSES}/{process_id}/update", headers=org.auth(token), content=content)


def update(
    rest: httpx.Client, org: Org, process_id: str, body: Json, token: str | None = None
) -> datetime:
    """Sends an update that must be accepted; returns the acknowledged timestamp."""
    ack = ok(post_update(rest, org, process_id, body, token))
    assert ack.keys() == ACK_KEYS
    assert ack["process_id"] == process_id
    assert ack["update_type"] == body["type"]
    return moment(ack["timestamp"])


def list_processes(rest: httpx.Client, org: Org, **params: Any) -> Json:
    page = ok(rest.get(PROCESSES, headers=org.auth(org.reader), params=params))
    assert page.keys() == {"processes", "total", "limit", "offset", "next_page_token"}
    for number in ("total", "limit", "offset"):
        assert type(page[number]) is int, page
    for item in page["processes"]:
        optional = {"current_step", "current_step_label", "finished_at", "url"}
        assert SUMMARY_KEYS <= item.keys() <= SUMMARY_KEYS | optional, item
        assert type(item["step_count"]) is int, item
    return page


def listed_ids(page: Json) -> list[str]:
    return [item["process_id"] for item in page["processes"]]


def entry(process: Json, step: str) -> Json:
    (found,) = [item for item in process["timeline"] if item["step"] == step]
    assert isinstance(found, dict)
    return found


def pending_entry(step: Json, task_id: str | None = None) -> Json:
    expected = {
        "step": step["key"],
        "label": step["label"],
        "status": "pending",
        "human": step["human"],
    }
    if task_id is not None:
        expected["task_id"] = task_id
    return expected


def duration_ms(step: Json) -> int:
    return (moment(step["completed_at"]) - moment(step["started_at"])) // timedelta(milliseconds=1)


# --- CreateProcess and GetProcess ---------------------------------------------------


def test_a_new_process_is_running_with_all_steps_pending(rest: httpx.Client, org: Org) -> None:
    steps = [
        {"key": "approve", "label": "Approve", "human": True},
        {"key": "build", "label": "Build", "human": False},
        {"key": "sign-off", "label": "Sign-off", "human": True},
    ]
    before = datetime.now(UTC)
    created = create_process(rest, org, steps=steps)

    uuid.UUID(created["process_id"])
    task_ids = created["task_ids"]
    assert len(task_ids) == 2
    assert len({str(uuid.UUID(task_id)) for task_id in task_ids}) == 2
    assert created == {
        "process_id": created["process_id"],
        "namespace": f"{org.org_id}.deployments",
        "name": "Deploy v2.1.0",
        "status": "running",
        "step_defs": steps,
        "timeline": [
            pending_entry(steps[0], task_ids[0]),
            pending_entry(steps[1]),
            pending_entry(steps[2], task_ids[1]),
        ],
        "task_ids": task_ids,
        "started_at": created["started_at"],
        "seq": 0,
        "created_by": created["created_by"],  # the token's name: tests/e2e/test_actors.py
        "labels": {},
    }
    started_at = moment(created["started_at"])
    assert before - timedelta(seconds=5) <= started_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert get_process(rest, org, created["process_id"]) == created


def test_human_defaults_to_false_and_is_always_printed(rest: httpx.Client, org: Org) -> None:
    created = create_process(rest, org, steps=[{"key": "build", "label": "Build"}])

    assert created["step_defs"] == [{"key": "build", "label": "Build", "human": False}]
    assert created["timeline"] == [
        {"step": "build", "label": "Build", "status": "pending", "human": False}
    ]
    assert created["task_ids"] == []


@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        ("deployments", "{org}.deployments"),
        ("{org}.deployments", "{org}.deployments"),
        ("{org}.team.builds", "{org}.team.builds"),
    ],
    ids=["bare-gets-org-prefix", "own-org-kept", "dotted-name-kept"],
)
def test_namespace_is_qualified_with_the_callers_organization(
    rest: httpx.Client, org: Org, namespace: str, expected: str
) -> None:
    created = create_process(rest, org, namespace=namespace.format(org=org.org_id))

    assert created["namespace"] == expected.format(org=org.org_id)
    assert get_process(rest, org, created["process_id"])["namespace"] == created["namespace"]


def test_a_tasks_create_token_may_create_and_update(
    rest: httpx.Client, stack: Stack, org: Org
) -> None:
    token = stack.token(org.org_id, scopes="tasks:create")
    created = create_process(rest, org, token=token)

    update(rest, org, created["process_id"], {"type": "step_started", "step": "build"}, token)

    assert entry(get_process(rest, org, created["process_id"]), "build")["status"] == "running"


# --- UpdateProcess ------------------------------------------------------------------


def test_the_documented_typical_workflow(rest: httpx.Client, org: Org) -> None:
    process = create_process(rest, org)
    process_id = process["process_id"]
    review_task = process["task_ids"][0]

    def step_states() -> tuple[Json, dict[str, Json]]:
        current = get_process(rest, org, process_id)
        assert current.keys() == PROCESS_KEYS | {"current_step"}
        assert current["status"] == "running"
        return current, {item["step"]: item for item in current["timeline"]}

    started = update(
        rest,
        org,
        process_id,
        {"type": "step_started", "step": "build", "detail": "Building Docker image..."},
    )
    current, steps = step_states()
    assert current["current_step"] == "build"
    assert steps["build"] == {
        "step": "build",
        "label": "Build",
        "status": "running",
        "human": False,
        "started_at": steps["build"]["started_at"],
        "detail": "Building Docker image...",
    }
    assert moment(steps["build"]["started_at"]) == started
    assert steps["test"] == pending_entry(STEPS[1])

    update(
        rest,
        org,
        process_id,
        {"type": "progress", "step": "build", "message": "Compiling...", "percent": 50},
    )
    current, steps = step_states()
    assert current["current_step"] == "build"
    assert steps["build"] == {
        "step": "build",
        "label": "Build",
        "status": "running",
        "human": False,
        "started_at": steps["build"]["started_at"],
        "detail": "Building Docker image...",
        "progress_message": "Compiling...",
        "progress_percent": 50,
    }
    assert type(steps["build"]["progress_percent"]) is int

    completed = update(
        rest,
        org,
        process_id,
        {
            "type": "step_completed",
            "step": "build",
            "detail": "Build successful",
            "data": {"image_tag": "v2.1.0-abc123"},
        },
    )
    current, steps = step_states()
    assert current["current_step"] == "build"
    build = steps["build"]
    assert build == {
        "step": "build",
        "label": "Build",
        "status": "completed",
        "human": False,
        "started_at": build["started_at"],
        "completed_at": build["completed_at"],
        "duration_ms": build["duration_ms"],
        "detail": "Build successful",
        "data": {"image_tag": "v2.1.0-abc123"},
    }
    assert moment(build["started_at"]) == started
    assert moment(build["completed_at"]) == completed
    assert whole_number(build["duration_ms"]) == duration_ms(build) >= 0

    update(rest, org, process_id, {"type": "step_started", "step": "test"})
    current, steps = step_states()
    assert current["current_step"] == "test"
    assert steps["test"] == {
        "step": "test",
        "label": "Test",
        "status": "running",
        "human": False,
        "started_at": steps["test"]["started_at"],
    }
    assert steps["build"] == build

    update(rest, org, process_id, {"type": "step_completed", "step": "test"})
    update(rest, org, process_id, {"type": "step_completed", "step": "review"})
    update(rest, org, process_id, {"type": "step_started", "step": "deploy"})
    update(rest, org, process_id, {"type": "step_completed", "step": "deploy"})
    current, steps = step_states()
    assert current["current_step"] == "deploy"
    assert [item["status"] for item in current["timeline"]] == ["completed"] * 4
    assert steps["review"]["task_id"] == review_task

    finished = update(rest, org, process_id, {"type": "completed", "summary": "All done!"})
    final = get_process(rest, org, process_id)
    assert final.keys() == PROCESS_KEYS | {"current_step", "finished_at", "summary"}
    assert final == current | {
        "status": "completed",
        "finished_at": final["finished_at"],
        "summary": "All done!",
        "seq": current["seq"] + 1,
    }
    assert moment(final["finished_at"]) == finished


def test_update_with_a_json_content_type_as_in_the_request_example(
    rest: httpx.Client, org: Org
) -> None:
    process_id = create_process(rest, org)["process_id"]

    response = rest.post(
        f"{PROCESSES}/{process_id}/update",
        headers=org.auth() | {"Content-Type": "application/json"},
        content=b'{ "type": "step_started", "step": "build" }',
    )

    ack = ok(response)
    assert ack == {
        "process_id": process_id,
        "update_type": "step_started",
        "timestamp": ack["timestamp"],
        "seq": 1,
    }
    assert entry(get_process(rest, org, process_id), "build")["started_at"] == ack["timestamp"]


def test_progress_keeps_the_latest_message_and_percent(rest: httpx.Client, org: Org) -> None:
    process_id = create_process(rest, org)["process_id"]
    update(rest, org, process_id, {"type": "step_started", "step": "deploy"})

    update(rest, org, process_id, {"type": "progress", "step": "deploy", "percent": 0})
    deploy = entry(get_process(rest, org, process_id), "deploy")
    assert "progress_message" not in deploy
    assert deploy["progress_percent"] == 0

    message = "Deploying to 3/10 instances..."
    update(rest, org, process_id, {"type": "progress", "step": "deploy", "message": message})
    deploy = entry(get_process(rest, org, process_id), "deploy")
    assert (deploy["progress_message"], deploy["progress_percent"]) == (message, 0)

    update(rest, org, process_id, {"type": "progress", "step": "deploy", "percent": 100})
    deploy = entry(get_process(rest, org, process_id), "deploy")
    assert (deploy["progress_message"], deploy["progress_percent"]) == (message, 100)


def test_a_failed_step_records_its_error_and_can_be_started_again(
    rest: httpx.Client, org: Org
) -> None:
    process_id = create_process(rest, org)["process_id"]
    first_start = update(rest, org, process_id, {"type": "step_started", "step": "test"})
    error = "3 tests failed in auth module"

    failed_at = update(
        rest, org, process_id, {"type": "step_failed", "step": "test", "error": error}
    )
    failed = get_process(rest, org, process_id)
    assert failed["status"] == "running"
    assert failed["current_step"] == "test"
    test = entry(failed, "test")
    # A failed run ended, as a completed one does: the timeline shows how long it took.
    assert test == {
        "step": "test",
        "label": "Test",
        "status": "failed",
        "human": False,
        "started_at": test["started_at"],
        "completed_at": test["completed_at"],
        "duration_ms": test["duration_ms"],
        "error": error,
    }
    assert moment(test["started_at"]) == first_start
    assert moment(test["completed_at"]) == failed_at
    assert whole_number(test["duration_ms"]) == duration_ms(test) >= 0

    second_start = update(
        rest, org, process_id, {"type": "step_started", "step": "test", "detail": "Retrying"}
    )
    retried = get_process(rest, org, process_id)
    assert entry(retried, "test") == {
        "step": "test",
        "label": "Test",
        "status": "running",
        "human": False,
        "started_at": entry(retried, "test")["started_at"],
        "detail": "Retrying",
    }
    assert moment(entry(retried, "test")["started_at"]) == second_start > first_start

    update(rest, org, process_id, {"type": "step_completed", "step": "test"})
    assert entry(get_process(rest, org, process_id), "test")["status"] == "completed"


def test_a_step_completed_without_being_started_took_no_time(rest: httpx.Client, org: Org) -> None:
    process = create_process(rest, org)
    process_id = process["process_id"]

    completed = update(rest, org, process_id, {"type": "step_completed", "step": "review"})

    review = entry(get_process(rest, org, process_id), "review")
    assert review == {
        "step": "review",
        "label": "Review",
        "status": "completed",
        "human": True,
        "task_id": process["task_ids"][0],
        "started_at": review["started_at"],
        "completed_at": review["completed_at"],
        "duration_ms": 0,
    }
    assert moment(review["started_at"]) == moment(review["completed_at"]) == completed


def test_a_step_failed_without_being_started_counts_as_started_then(
    rest: httpx.Client, org: Org
) -> None:
    process_id = create_process(rest, org)["process_id"]

    failed = update(
        rest, org, process_id, {"type": "step_failed", "step": "build", "error": "no runner"}
    )

    build = entry(get_process(rest, org, process_id), "build")
    assert build == {
        "step": "build",
        "label": "Build",
        "status": "failed",
        "human": False,
        "started_at": build["started_at"],
        "completed_at": build["completed_at"],
        "duration_ms": 0,
        "error": "no runner",
    }
    assert moment(build["started_at"]) == moment(build["completed_at"]) == failed


def test_current_step_is_the_latest_started_running_step_else_the_latest_changed(
    rest: httpx.Client, org: Org
) -> None:
    process_id = create_process(rest, org)["process_id"]

    def current_step() -> str:
        step = get_process(rest, org, process_id)["current_step"]
        (listed,) = list_processes(rest, org)["processes"]
        assert listed["current_step"] == step
        assert isinstance(step, str)
        return step

    update(rest, org, process_id, {"type": "step_started", "step": "build"})
    update(rest, org, process_id, {"type": "step_started", "step": "test"})
    assert current_step() == "test"

    update(rest, org, process_id, {"type": "progress", "step": "build", "percent": 90})
    assert current_step() == "test"

    update(rest, org, process_id, {"type": "step_completed", "step": "review"})
    assert current_step() == "test"

    update(rest, org, process_id, {"type": "step_completed", "step": "test"})
    assert current_step() == "build"

    update(rest, org, process_id, {"type": "step_completed", "step": "build"})
    assert current_step() == "build"

    update(rest, org, process_id, {"type": "step_failed", "step": "deploy", "error": "boom"})
    assert current_step() == "deploy"


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        (
            {"type": "completed", "summary": "Successfully deployed v2.1.0"},
            {"status": "completed", "summary": "Successfully deployed v2.1.0"},
        ),
        ({"type": "completed"}, {"status": "completed"}),
        (
            {"type": "failed", "error": "Deployment failed: timeout waiting for health check"},
            {"status": "failed", "error": "Deployment failed: timeout waiting for health check"},
        ),
    ],
    ids=["completed-with-summary", "completed-without-summary", "failed"],
)
def test_finishing_a_process(rest: httpx.Client, org: Org, finish: Json, expected: Json) -> None:
    process = create_process(rest, org)
    process_id = process["process_id"]

    finished_at = update(rest, org, process_id, finish)

    final = get_process(rest, org, process_id)
    # No step of a finished process reads as still to come: none started, all are skipped.
    skipped = [
        entry | {"status": "skipped", "completed_at": final["finished_at"]}
        for entry in process["timeline"]
    ]
    assert final == process | expected | {
        "finished_at": final["finished_at"],
        "seq": 1,
        "timeline": skipped,
    }
    assert moment(final["finished_at"]) == finished_at
    (listed,) = list_processes(rest, org)["processes"]
    assert listed["status"] == expected["status"]


def test_long_texts_and_large_data_within_the_limits_are_stored(
    rest: httpx.Client, org: Org
) -> None:
    # server/domain/processes/limits.py: texts up to 10,000 characters, data up to 64 KiB of JSON.
    process_id = create_process(rest, org)["process_id"]
    detail = "d" * 10_000
    data = {"log": "x" * 60_000}

    update(
        rest,
        org,
        process_id,
        {"type": "step_completed", "step": "build", "detail": detail, "data": data},
    )

    build = entry(get_process(rest, org, process_id), "build")
    assert (build["detail"], build["data"]) == (detail, data)


# --- ListProcesses ------------------------------------------------------------------


def summary_of(process: Json) -> Json:
    """What a list shows of a process, derived from its GET body."""
    summary = {key: process[key] for key in SUMMARY_KEYS - {"step_count", "open_task_count"}}
    if "current_step" in process:
        summary["current_step"] = process["current_step"]
        (label,) = [s["label"] for s in process["step_defs"] if s["key"] == process["current_step"]]
        summary["current_step_label"] = label
    if "finished_at" in process:
        summary["finished_at"] = process["finished_at"]
    # A task is open exactly while its human step runs.
    waiting = [e for e in process["timeline"] if e["human"] and e["status"] == "running"]
    return summary | {"step_count": len(process["step_defs"]), "open_task_count": len(waiting)}


def newest_first(processes: list[Json]) -> list[str]:
    """Ids by started_at, newest first; ties broken by process_id."""
    ordered = sorted(
        processes,
        key=lambda process: (moment(process["started_at"]), uuid.UUID(process["process_id"])),
        reverse=True,
    )
    return [process["process_id"] for process in ordered]


def test_list_defaults_and_item_shape(rest: httpx.Client, org: Org) -> None:
    untouched = create_process(rest, org, name="Nightly build", steps=STEPS[:2])
    touched = create_process(rest, org, namespace="releases")
    update(rest, org, touched["process_id"], {"type": "step_started", "step": "build"})
    touched = get_process(rest, org, touched["process_id"])

    page = list_processes(rest, org)

    assert page == {
        "processes": [summary_of(touched), summary_of(untouched)],
        "total": 2,
        "limit": 50,
        "offset": 0,
        "next_page_token": "",
    }
    assert "current_step" not in page["processes"][1]


def test_list_shows_only_the_callers_organization(
    rest: httpx.Client, stack: Stack, org: Org
) -> None:
    other_id = f"org-{uuid.uuid4().hex[:12]}"
    other = Org(org_id=other_id, writer=stack.token(other_id), reader="")
    theirs = create_process(rest, other)["process_id"]

    assert list_processes(rest, org) == {
        "processes": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
        "next_page_token": "",
    }

    mine = create_process(rest, org)["process_id"]
    assert listed_ids(list_processes(rest, org)) == [mine]
    assert listed_ids(list_processes(rest, other)) == [theirs]


def test_list_filters_by_status(rest: httpx.Client, org: Org) -> None:
    running = create_process(rest, org)["process_id"]
    completed = create_process(rest, org)["process_id"]
    failed = create_process(rest, org)["process_id"]
    update(rest, org, completed, {"type": "completed"})
    update(rest, org, failed, {"type": "failed", "error": "boom"})

    for status, expected in [("running", running), ("completed", completed), ("failed", failed)]:
        page = list_processes(rest, org, status=status)
        assert (listed_ids(page), page["total"]) == ([expected], 1), status
        assert page["processes"][0]["status"] == status


@pytest.mark.parametrize("namespace", ["deployments", "{org}.deployments"], ids=["bare", "full"])
def test_list_filters_by_namespace(rest: httpx.Client, org: Org, namespace: str) -> None:
    deployment = create_process(rest, org, namespace="deployments")["process_id"]
    create_process(rest, org, namespace="builds")
    create_process(rest, org, namespace="deployments-eu")

    page = list_processes(rest, org, namespace=namespace.format(org=org.org_id))

    assert (listed_ids(page), page["total"]) == ([deployment], 1)
    assert page["processes"][0]["namespace"] == f"{org.org_id}.deployments"


@pytest.mark.parametrize(
    ("search", "matches"),
    [
        ("deploy", ["Deploy v2.1.0", "Redeploy 100% done"]),
        ("DEPLOY", ["Deploy v2.1.0", "Redeploy 100% done"]),
        ("V2.1", ["Deploy v2.1.0"]),
        ("%", ["Redeploy 100% done"]),
        ("100%", ["Redeploy 100% done"]),
        ("_", ["build_main"]),
        ("d_m", ["build_main"]),
        ("\\", ["C:\\builds"]),
        ("no such name", []),
    ],
    ids=[
        "substring",
        "ignores-case",
        "ignores-case-of-the-name",
        "percent-literal",
        "percent-suffix-literal",
        "underscore-literal",
        "underscore-not-a-wildcard",
        "backslash-literal",
        "no-match",
    ],
)
def test_list_searches_names(rest: httpx.Client, org: Org, search: str, matches: list[str]) -> None:
    names = ["Deploy v2.1.0", "Redeploy 100% done", "build_main", "buildXmain", "C:\\builds"]
    ids = {create_process(rest, org, name=name)["process_id"]: name for name in names}

    page = list_processes(rest, org, search=search)

    assert sorted(ids[process_id] for process_id in listed_ids(page)) == sorted(matches)
    assert page["total"] == len(matches)


def test_list_combines_filters(rest: httpx.Client, org: Org) -> None:
    def make(namespace: str, name: str, finish: bool) -> str:
        process_id: str = create_process(rest, org, namespace=namespace, name=name)["process_id"]
        if finish:
            update(rest, org, process_id, {"type": "completed"})
        return process_id

    wanted = make("deployments", "Deploy api", finish=True)
    running = make("deployments", "Deploy web", finish=False)
    make("builds", "Deploy docs", finish=True)
    make("deployments", "Rollback api", finish=True)

    page = list_processes(
        rest, org, status="completed", namespace="deployments", search="deploy", sort="oldest"
    )
    assert (listed_ids(page), page["total"]) == ([wanted], 1)

    # The query of the docs' curl example.
    page = list_processes(rest, org, status="running", search="deploy", sort="newest", limit=10)
    assert (listed_ids(page), page["total"], page["limit"]) == ([running], 1, 10)


def test_list_sorts_by_start_time_and_pages_without_repeats_or_gaps(
    rest: httpx.Client, org: Org
) -> None:
    created = [create_process(rest, org, name=f"Deploy {index}") for index in range(7)]
    expected = newest_first(created)

    assert listed_ids(list_processes(rest, org)) == expected
    assert listed_ids(list_processes(rest, org, sort="newest")) == expected
    assert listed_ids(list_processes(rest, org, sort="oldest")) == expected[::-1]

    for sort, order in [("newest", expected), ("oldest", expected[::-1])]:
        paged: list[str] = []
        for offset, size in [(0, 3), (3, 3), (6, 1), (7, 0)]:
            page = list_processes(rest, org, sort=sort, limit=3, offset=offset)
            assert (page["total"], page["limit"], page["offset"]) == (7, 3, offset)
            assert len(page["processes"]) == size
            paged += listed_ids(page)
        assert paged == order, sort


def test_list_total_counts_all_matches_regardless_of_paging(rest: httpx.Client, org: Org) -> None:
    for index in range(4):
        create_process(rest, org, name=f"Deploy {index}")
    create_process(rest, org, name="Build")

    page = list_processes(rest, org, search="deploy", limit=1, offset=2)

    assert (len(page["processes"]), page["total"], page["limit"], page["offset"]) == (1, 4, 1, 2)
    assert page["processes"][0]["name"].startswith("Deploy ")


@pytest.mark.parametrize("query", ["search=deploy%20v2", "search=deploy+v2"], ids=["%20", "plus"])
def test_list_search_decodes_a_space_in_the_query(rest: httpx.Client, org: Org, query: str) -> None:
    # httpx, requests, browsers' forms and urllib.parse.urlencode all send a space as "+".
    wanted = create_process(rest, org, name="Deploy v2.1.0")["process_id"]
    create_process(rest, org, name="Deploy v3.0.0")

    page = ok(rest.get(f"{PROCESSES}?{query}", headers=org.auth(org.reader)))

    assert (listed_ids(page), page["total"]) == ([wanted], 1)


def test_the_largest_valid_process_definition_is_accepted(rest: httpx.Client, org: Org) -> None:
    # The proto: 1-200 steps, a name of 1-200 characters; labels are 1-200 characters too.
    steps = [{"key": f"step-{index}", "label": "L" * 200, "human": False} for index in range(200)]

    created = create_process(rest, org, name="N" * 200, steps=steps)

    assert created["step_defs"] == steps
    assert get_process(rest, org, created["process_id"]) == created
