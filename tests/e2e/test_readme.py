"""The README's session (htk), the clients guide's (curl) and the client guides'
examples (Python, TypeScript, Go, in docs/) work as pasted, against the test stack."""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from server.settings import CHECKOUT
from tests.e2e.conftest import doc_block, outside_env
from tests.support.orgs import Org
from tests.support.stack import Stack, running_stack
from tests.support.webhooks import LOCAL_RECEIVERS


def _json_documents(output: str) -> list[dict[str, Any]]:
    """The JSON documents the curls printed back to back (a stream's `id: `
    lines and `data: ` framing taken off)."""
    # JSON has no raw newline: this is only ever the framing.
    output = re.sub(r"id: [0-9]+\n", "", output)
    output = re.sub(r'(?<!")data: (?=\{)', "", output)
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(output):
        document, position = decoder.raw_decode(output, position)
        documents.append(document)
        while position < len(output) and output[position].isspace():
            position += 1
    return documents


def test_the_curl_session_runs_as_pasted(stack: Stack) -> None:
    script = doc_block(CHECKOUT / "docs" / "clients.md", "readme-session", "bash").replace(
        "localhost:8080", f"127.0.0.1:{stack.env['HTK_HTTP_PORT']}"
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=CHECKOUT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    documents = _json_documents(result.stdout)
    assert [doc.get("update_type") for doc in documents] == [
        "step_started",
        "progress",
        "step_completed",
        "step_started",
        None,  # the list
        None,  # the process
        "step_completed",
        "step_started",
        None,  # the approved task
        "completed",
        None,  # the events after seq 3
        *[None] * 5,  # the same five, streamed
        "step_started",  # the superseded run's build
        None,  # the superseded run, cancelled
    ]
    listed, process, approved = documents[4], documents[5], documents[8]
    history, watched, cancelled = documents[10], documents[11:16], documents[17]
    assert [(event["seq"], event["type"]) for event in history["events"]] == [
        (4, "step_started"),
        (5, "step_completed"),
        (6, "step_started"),
        (7, "task_completed"),
        (8, "completed"),
    ]
    assert [message["event"] for message in watched] == history["events"]
    assert process["process_id"] in [item["process_id"] for item in listed["processes"]]
    assert all(item["labels"]["env"] == "prod" for item in listed["processes"])
    assert process["labels"] == {"env": "prod", "service": "payments"}
    assert process["url"] == "https://ci.example.com/acme/app/runs/42"
    assert process["current_step"] == "test"
    assert process["timeline"][0]["data"] == {"image_tag": "v2.1.0-abc123"}
    assert (approved["status"], approved["outcome"], approved["completed_by"]) == (
        "completed",
        "approved",
        "alice",
    )
    assert approved["task_id"] == process["task_ids"][0]
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "superseded by v2.1.0")
    assert [entry["status"] for entry in cancelled["timeline"]] == ["cancelled", "skipped"]


def _client_env(stack: Stack, token: str | None = None) -> dict[str, str]:
    env = {**stack.env, "HTK_URL": stack.http_url}
    if token:
        env["HTK_TOKEN"] = token
    return env


def _pipeline_and_person(stack: Stack, org: Org) -> dict[str, str]:
    """The examples' environment: a pipeline's token, and a person's to approve
    its gate (the pipeline's may not)."""
    env = _client_env(stack, stack.token(org.org_id, "processes:write"))
    return env | {"HTK_APPROVER_TOKEN": stack.token(org.org_id, "tasks:complete")}


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def make_run_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack with the settings `make run` adds: webhooks may reach this machine."""
    with running_stack(tmp_path_factory.mktemp("make-run"), env=LOCAL_RECEIVERS) as running:
        yield running


def test_the_readme_session_with_htk_alone_runs_as_pasted(make_run_stack: Stack) -> None:
    script = doc_block(CHECKOUT / "README.md", "readme-htk-session", "bash")
    output = _run(["bash", "-euo", "pipefail", "-c", script], CHECKOUT, _client_env(make_run_stack))
    process = json.loads(next(line for line in output.splitlines() if line.startswith("{")))
    assert process["current_step"] == "test"
    assert process["timeline"][0]["data"] == {"image_tag": "v2.1.0-abc123"}
    assert re.search(rf"^{process['process_id']}\s.*Deploy v2\.1\.0\s+running", output, re.M)
    assert re.search(r"^build\s+Build\s+completed", output, re.M)
    assert re.search(r"^labels\s+env=prod\s*$", output, re.M)
    assert re.search(r"^link\s+https://ci\.example\.com/acme/app/runs/42\s*$", output, re.M)
    # The superseded run: cancelled with its reason, its step never started skipped.
    assert re.search(r"^status\s+cancelled\s*$", output, re.M)
    assert re.search(r"^reason\s+superseded\s*$", output, re.M)
    assert re.search(r"^build\s+build\s+skipped", output, re.M)
    assert re.search(rf"^{process['task_ids'][0]}\s+open\s+Deploy v2\.1\.0\s+review", output, re.M)
    assert re.search(r"^review\s+Review\s+completed", output, re.M)
    # The watch began while the process ran (or, on a slow machine, once it had finished).
    assert re.search(
        rf"^process {process['process_id']} \(Deploy v2\.1\.0\): (running|completed)$", output, re.M
    )
    # The closing event's line names the pipeline's token as its actor.
    finished = (
        r"^(.*  completed  by cli-pipeline  summary=All done!|process .*: completed)\ndeployed$"
    )
    assert re.search(finished, output, re.M)
    # The webhook's log holds a message for the opened task and one for the finish,
    # waiting for a receiver on port 8000 (written with their events, not later).
    events = re.findall(
        r"^\S+\s+(task\.opened|process\.completed)\s+(\S+)\s+pending\b", output, re.M
    )
    assert sorted(events) == [
        ("process.completed", process["process_id"]),
        ("task.opened", process["process_id"]),
    ]


def _as_pasted(block: str, checkout: Path) -> list[str]:
    """A guide's shell block as a reader pastes it, with their checkout for /path/to/htk."""
    return ["bash", "-euo", "pipefail", "-c", block.replace("/path/to/htk", str(checkout))]


def test_the_typescript_guide_runs_as_pasted_in_an_empty_folder(
    stack: Stack, org: Org, tmp_path: Path
) -> None:
    guide = CHECKOUT / "docs" / "clients-typescript.md"
    # The client as a fresh clone has it: nothing installed or built in it
    # (and the checkout's own installation stays untouched).
    clone = tmp_path / "htk"
    shutil.copytree(
        CHECKOUT / "clients" / "typescript",
        clone / "clients" / "typescript",
        ignore=shutil.ignore_patterns("node_modules", "build", "dist"),
    )
    own = tmp_path / "own"
    own.mkdir()
    env = _pipeline_and_person(stack, org)
    _run(_as_pasted(doc_block(guide, "typescript-install", "bash"), clone), own, env)
    folder = own / "htk-example"
    (folder / "example.mts").write_text(doc_block(guide, "typescript-example", "ts"))
    output = _run(_as_pasted(doc_block(guide, "typescript-run", "bash"), clone), folder, env)
    assert "refused: percent: must be between 0 and 100, got 101" in output
    assert "build completed { image_tag: 'v2.1.0-abc123' }" in output
    assert "review approved by" in output
    assert _watched_events(output) == [
        "event 1 step_started build",
        "event 2 progress build",
        "event 3 step_completed build",
        "event 4 step_started review",
        "event 5 task_completed review",
        "event 6 completed",
    ]
    assert output.endswith("watched until it finished\n")


def _watched_events(output: str) -> list[str]:
    """The lines the example's watch printed, in order."""
    return [line.rstrip() for line in output.splitlines() if line.startswith("event ")]


def test_the_go_guide_runs_as_pasted_in_an_empty_folder(
    stack: Stack, org: Org, tmp_path: Path
) -> None:
    guide = CHECKOUT / "docs" / "clients-go.md"
    go = shutil.which("go")
    assert go, "Go is not on PATH (`make test` adds /usr/local/go/bin)"
    env = _pipeline_and_person(stack, org)
    _run(_as_pasted(doc_block(guide, "go-install", "bash"), CHECKOUT), tmp_path, env)
    folder = tmp_path / "htk-example"
    (folder / "main.go").write_text(doc_block(guide, "go-example", "go"))
    gofmt = shutil.which("gofmt") or str(Path(go).parent / "gofmt")
    assert _run([gofmt, "-l", "."], folder, env) == "", "the example is not gofmt-formatted"
    output = _run(_as_pasted(doc_block(guide, "go-run", "bash"), CHECKOUT), folder, env)
    assert "refused: percent: must be between 0 and 100, got 101" in output
    assert "build completed map[image_tag:v2.1.0-abc123]" in output
    assert "review approved by" in output
    assert _watched_events(output) == [
        "event 1 step_started build",
        "event 2 step_completed build",
        "event 3 step_started review",
        "event 4 task_completed review",
        "event 5 completed",
    ]
    assert output.endswith("watched until it finished\n")


def test_the_python_client_example_runs_as_pasted(
    python_client: Path, stack: Stack, org: Org
) -> None:
    """In the folder where the guide's install block ran, outside the checkout."""
    example = doc_block(CHECKOUT / "docs" / "clients-python.md", "python-client-example", "python")
    (python_client / "example.py").write_text(example)
    env = outside_env(HTK_URL=stack.http_url, HTK_TOKEN=org.writer)
    python = str(python_client / ".venv" / "bin" / "python")
    output = _run([python, "example.py"], python_client, env)
    assert re.match(r"created [0-9a-f-]{36} running\n", output)
    assert "refused: percent: must be between 0 and 100, got 101" in output
    assert _watched_events(output) == [
        "event 1 step_started build",
        "event 2 progress build",
        "event 3 step_completed build",
        "event 4 completed",
    ]
    assert output.endswith("finished: completed\n")
