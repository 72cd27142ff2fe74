"""The generated TypeScript and Go clients' own tests (clients/*/), run against
the test stack through Envoy: each as its own runner, with HTK_URL and
HTK_TOKEN (a token with processes:write and tasks:complete) and
HTK_APPROVER_TOKEN (another with tasks:complete) naming the stack,
as anyone would run them against theirs."""

import shutil
import subprocess
from pathlib import Path

import pytest

from server.settings import CHECKOUT
from tests.support.orgs import Org
from tests.support.stack import Stack

CLIENTS = CHECKOUT / "clients"


@pytest.fixture
def client_env(stack: Stack, org: Org) -> dict[str, str]:
    return {
        **stack.env,
        "HTK_URL": stack.http_url,
        "HTK_TOKEN": stack.token(org.org_id, scopes="processes:write,tasks:complete"),
        "HTK_APPROVER_TOKEN": stack.token(org.org_id, scopes="tasks:complete"),
        "HTK_READ_ONLY_TOKEN": org.reader,
    }


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH (`make test` adds /usr/local/go/bin)")
    return path


def run_tests(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"


def test_the_typescript_client(client_env: dict[str, str]) -> None:
    run_tests([tool("npm"), "test"], CLIENTS / "typescript", client_env)


def test_the_go_client(client_env: dict[str, str]) -> None:
    run_tests([tool("go"), "test", "-count=1", "./..."], CLIENTS / "go", client_env)
