"""The TypeScript and Go clients' watch through a worker killed with SIGKILL
mid-stream: each client's own resume test (clients/*/) runs against a stack
of one worker, whose pid it is given to kill, and checks that every event
arrives exactly once."""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.chaos.helpers import wait_until
from tests.e2e.test_clients import CLIENTS, tool
from tests.support.stack import Stack, running_stack

# How long the supervisor and Envoy may take to bring the worker back after
# the previous test killed it, on a slow machine.
RECOVERY_TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="module")
def lone_worker_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # One worker: the stream cannot survive on another, so it must resume.
    with running_stack(tmp_path_factory.mktemp("resume"), env={"HTK_WORKERS": "1"}) as stack:
        yield stack


def _env(stack: Stack) -> dict[str, str]:
    """The clients' test environment, naming the worker serving right now."""

    def serving() -> psutil.Process | None:
        return stack.workers().get(0) if stack.serves_on_every_worker() else None

    worker = wait_until(serving, RECOVERY_TIMEOUT_SECONDS, "the stack's worker to serve")
    return {
        **stack.env,
        "HTK_URL": stack.http_url,
        "HTK_TOKEN": stack.token("resume", scopes="processes:write,tasks:complete"),
        "HTK_APPROVER_TOKEN": stack.token("resume", scopes="tasks:complete"),
        "HTK_WORKER_PID": str(worker.pid),
    }


def _passes(command: list[str], cwd: Path, env: dict[str, str], passed: str) -> None:
    """Runs a client's resume test; it must have run (not skipped) and passed."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, output
    assert passed in result.stdout, output


def test_the_typescript_clients_watch_resumes(lone_worker_stack: Stack) -> None:
    command = [tool("npm"), "run", "test:resume"]
    _passes(command, CLIENTS / "typescript", _env(lone_worker_stack), "# pass 1\n")


def test_the_go_clients_watch_resumes(lone_worker_stack: Stack) -> None:
    command = [tool("go"), "test", "-count=1", "-v", "-run", "^TestWatchResumes", "."]
    passed = "--- PASS: TestWatchResumesAfterTheWorkerIsKilled"
    _passes(command, CLIENTS / "go", _env(lone_worker_stack), passed)
