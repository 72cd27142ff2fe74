"""`htk processes events|watch` and `htk tasks list|complete` against the
stack, the live view in a pseudo-terminal."""

import json
import re
import select
import subprocess
from typing import IO

import httpx
import pexpect
import pytest

from tests.support.orgs import Org
from tests.support.stack import HTK, Stack

STEPS = [
    {"key": "build", "label": "Build", "human": False},
    {"key": "review", "label": "Review", "human": True},
]
# Long enough for a loaded machine; a hang past it fails instead of waiting forever.
WAIT_SECONDS = 30


@pytest.fixture
def env(stack: Stack, org: Org) -> dict[str, str]:
    return {"PATH": stack.env["PATH"], "HTK_URL": stack.http_url, "HTK_TOKEN": org.writer}


def create(rest: httpx.Client, org: Org, name: str = "Deploy v2.1.0") -> str:
    response = rest.post(
        "/api/v1/processes",
        json={"namespace": "cli-live", "name": name, "step_defs": STEPS},
        headers=org.auth(),
    )
    assert response.status_code == 200, response.text
    return str(response.json()["process_id"])


def update(rest: httpx.Client, org: Org, process_id: str, **body: object) -> None:
    response = rest.post(f"/api/v1/processes/{process_id}/update", json=body, headers=org.auth())
    assert response.status_code == 200, response.text


def htk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HTK, *args], env=env, capture_output=True, text=True, timeout=60)


def next_line(stream: IO[str]) -> str:
    ready, _, _ = select.select([stream], [], [], WAIT_SECONDS)
    assert ready, f"no line within {WAIT_SECONDS} s"
    return stream.readline()


def test_events_lists_the_log_in_order_and_after_a_sequence_number(
    rest: httpx.Client, org: Org, env: dict[str, str]
) -> None:
    process_id = create(rest, org)
    update(rest, org, process_id, type="step_started", step="build")
    update(rest, org, process_id, type="progress", step="build", percent=40, message="half")

    as_json = htk(env, "processes", "events", process_id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    expected = rest.get(f"/api/v1/processes/{process_id}/events", headers=org.auth()).text
    assert as_json.stdout == expected + "\n"
    events = json.loads(as_json.stdout)["events"]
    assert [event["type"] for event in events] == ["step_started", "progress"]

    table = htk(env, "processes", "events", process_id)
    assert re.search(r"^SEQ\s+TIME\s+TYPE\s+STEP\s+BY", table.stdout, re.M)
    writer = rest.get("/api/v1/caller", headers=org.auth()).json()["token_name"]
    assert re.search(rf"progress\s+build\s+{writer}\s+message=half percent=40", table.stdout)
    later = htk(env, "processes", "events", process_id, "--after-seq", str(events[0]["seq"]))
    assert "step_started" not in later.stdout and "progress" in later.stdout


def test_watch_without_a_terminal_prints_a_line_per_event_and_exits_1_on_failure(
    rest: httpx.Client, org: Org, env: dict[str, str]
) -> None:
    process_id = create(rest, org)
    writer = rest.get("/api/v1/caller", headers=org.auth()).json()["token_name"]
    with subprocess.Popen(
        [HTK, "processes", "watch", process_id, "--exit-status"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as watcher:
        # A failed assertion must not leave the watch running: leaving the
        # block waits for it, which would wait for ever.
        try:
            assert watcher.stdout is not None
            assert next_line(watcher.stdout).endswith("(Deploy v2.1.0): running\n")
            update(rest, org, process_id, type="step_started", step="build", detail="go")
            line = next_line(watcher.stdout)
            assert re.search(rf"step_started  build  by {writer}  detail=go$", line), line
            update(rest, org, process_id, type="failed", error="disk \x1b[2Jfull")
            line = next_line(watcher.stdout)
            assert line.endswith(f"failed  by {writer}  error=disk \\x1b[2Jfull\n"), line
            assert watcher.wait(WAIT_SECONDS) == 1
        finally:
            watcher.kill()


def test_watch_of_a_finished_process_returns_at_once_with_its_status(
    rest: httpx.Client, org: Org, env: dict[str, str]
) -> None:
    process_id = create(rest, org)
    update(rest, org, process_id, type="completed", summary="done")
    watched = htk(env, "processes", "watch", process_id, "--exit-status")
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines()[0].endswith("completed")
    missing = htk(env, "processes", "watch", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_the_live_view_in_a_terminal_shows_progress_changing_and_the_final_status(
    rest: httpx.Client, org: Org, env: dict[str, str]
) -> None:
    process_id = create(rest, org, name="Live view")
    terminal = pexpect.spawn(
        HTK,
        ["processes", "watch", process_id, "--exit-status"],
        env={**env, "TERM": "xterm-256color"},
        dimensions=(30, 140),
        encoding="utf-8",
        timeout=WAIT_SECONDS,
    )
    try:
        terminal.expect("Live view")
        terminal.expect("Build")
        update(rest, org, process_id, type="step_started", step="build")
        update(
            rest, org, process_id, type="progress", step="build", percent=30, message="compiling"
        )
        terminal.expect(" 30%")
        terminal.expect("compiling")
        update(rest, org, process_id, type="progress", step="build", percent=70)
        terminal.expect(" 70%")
        update(rest, org, process_id, type="step_completed", step="build")
        update(rest, org, process_id, type="completed", summary="shipped")
        terminal.expect("100%")
        terminal.expect("completed")
        terminal.expect(pexpect.EOF)
    finally:
        terminal.close()
    assert terminal.exitstatus == 0


def test_a_person_finds_and_approves_an_open_task(
    stack: Stack, rest: httpx.Client, org: Org, env: dict[str, str]
) -> None:
    process_id = create(rest, org)
    update(rest, org, process_id, type="step_completed", step="build")
    update(rest, org, process_id, type="step_started", step="review")
    listing = htk(env, "tasks", "list", "--status", "open", "--process", process_id, "--json")
    assert listing.returncode == 0, listing.stderr
    (task,) = json.loads(listing.stdout)["tasks"]
    table = htk(env, "tasks", "list", "--status", "open")
    assert re.search(rf"^{task['task_id']}\s+open\s+Deploy v2\.1\.0\s+review", table.stdout, re.M)

    pipeline_token = htk(env, "tasks", "complete", task["task_id"], "--approve")
    assert pipeline_token.returncode == 2 and "tasks:complete" in pipeline_token.stderr

    approver = stack.token(org.org_id, scopes="tasks:complete")
    approved = htk(
        {**env, "HTK_TOKEN": approver},
        "tasks",
        "complete",
        task["task_id"],
        "--approve",
        "--comment",
        "LGTM",
    )
    assert approved.returncode == 0, approved.stderr
    assert approved.stderr == f"task {task['task_id']}: approved\n"
    process = rest.get(f"/api/v1/processes/{process_id}", headers=org.auth()).json()
    assert process["timeline"][1]["status"] == "completed"
    again = htk({**env, "HTK_TOKEN": approver}, "tasks", "complete", task["task_id"], "--reject")
    assert again.returncode == 2 and "completed" in again.stderr
