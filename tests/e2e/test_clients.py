"""The generated TypeScript and Go clients' own tests (clients/*/), run against
a stack through Envoy: each as its own runner, with HTK_URL and
HTK_TOKEN (a token with processes:write and tasks:complete),
HTK_APPROVER_TOKEN (another with tasks:complete), HTK_WEBHOOKS_TOKEN
(webhooks:manage) and HTK_TRUST_TOKEN (tokens:manage) naming the stack,
as anyone would run them against theirs."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.settings import CHECKOUT
from tests.support.stack import Stack, running_stack
from tests.support.webhooks import LOCAL_RECEIVERS

CLIENTS = CHECKOUT / "clients"


# The clients' webhooks point at 127.0.0.1, since there is no DNS here to give
# them a public host; they subscribe to a namespace no process uses, so nothing
# is sent to them.
CLIENTS_STACK_ENV = LOCAL_RECEIVERS


def client_env(stack: Stack) -> dict[str, str]:
    """The variables the clients' tests read (see above), naming `stack` and
    tokens of an organization of their own on it."""
    org = stack.new_org("clients")
    return {
        **stack.env,
        "HTK_URL": stack.http_url,
        "HTK_TOKEN": stack.token(org.org_id, scopes="processes:write,tasks:complete"),
        "HTK_APPROVER_TOKEN": stack.token(org.org_id, scopes="tasks:complete"),
        "HTK_READ_ONLY_TOKEN": org.reader,
        "HTK_WEBHOOKS_TOKEN": stack.token(org.org_id, scopes="webhooks:manage"),
        "HTK_TRUST_TOKEN": stack.token(org.org_id, scopes="tokens:manage"),
    }


@pytest.fixture(scope="module")
def clients_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("clients"), env=CLIENTS_STACK_ENV) as running:
        yield running


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH (`make test` adds /usr/local/go/bin)")
    return path


def run_tests(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"


def test_the_typescript_client(clients_stack: Stack) -> None:
    run_tests([tool("npm"), "test"], CLIENTS / "typescript", client_env(clients_stack))


def test_the_go_client(clients_stack: Stack) -> None:
    run_tests([tool("go"), "test", "-count=1", "./..."], CLIENTS / "go", client_env(clients_stack))
