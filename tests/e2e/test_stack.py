"""The stack as an operator sees it: start, stop, restart, the CLI, the schema."""

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import psycopg

from server.edge.envoy import envoy_command, render_envoy_config
from server.settings import Settings
from server.storage.embedded import embedded_database
from tests.support.orgs import Org
from tests.support.stack import Stack, free_port, running_stack

STEPS = [{"key": "build", "label": "Build"}]


def _postgres_processes(data_dir: Path) -> list[psutil.Process]:
    return [
        process
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] == "postgres"
        and str(data_dir) in " ".join(process.info["cmdline"] or ())
    ]


def test_sigterm_stops_everything_and_a_restart_finds_the_data(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        token = stack.token("acme")
        auth = {"Authorization": f"Bearer {token}"}
        created = httpx.post(
            f"{stack.http_url}/api/v1/processes",
            headers=auth,
            json={"namespace": "deployments", "name": "Deploy", "step_defs": STEPS},
        ).json()
        children = psutil.Process(stack.process.pid).children(recursive=True)
        assert _postgres_processes(tmp_path)
    assert stack.process.returncode == 0, stack.log
    assert not any(child.is_running() and child.status() != "zombie" for child in children)
    assert _postgres_processes(tmp_path) == []

    with running_stack(tmp_path) as restarted:
        fetched = httpx.get(
            f"{restarted.http_url}/api/v1/processes/{created['process_id']}", headers=auth
        )
    assert fetched.status_code == 200
    assert fetched.json() == created


def test_an_external_database_url_replaces_the_embedded_postgres(tmp_path: Path) -> None:
    with embedded_database(tmp_path / "external") as external_url:
        with running_stack(tmp_path / "stack", database_url=external_url) as stack:
            token = stack.token("acme")
            created = httpx.post(
                f"{stack.http_url}/api/v1/processes",
                headers={"Authorization": f"Bearer {token}"},
                json={"namespace": "deployments", "name": "Deploy", "step_defs": STEPS},
            )
            assert created.status_code == 200, created.text
        assert not (tmp_path / "stack" / "postgres").exists()
        with psycopg.connect(external_url) as connection:
            names = connection.execute("SELECT name FROM processes").fetchall()
        assert names == [("Deploy",)]


def test_envoy_answers_json_503_when_the_grpc_server_is_down(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "HTK_DATA_DIR": str(tmp_path),
            "HTK_HTTP_PORT": str(free_port()),
            "HTK_GRPC_PORT": str(free_port()),  # nothing listens there
            "HTK_ENVOY_ADMIN_PORT": str(free_port()),
        }
    )
    # No worker of this (made-up) stack id is listening.
    config = render_envoy_config(settings, stack_id=0)
    envoy = subprocess.Popen(envoy_command(config, log_level="error"))
    try:
        response = _get_once_listening(f"http://127.0.0.1:{settings.http_port}/api/v1/processes")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["code"] == 14  # UNAVAILABLE
        assert body["details"] == []
        assert "upstream" in body["message"]
    finally:
        envoy.terminate()
        envoy.wait(10)


def _get_once_listening(url: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, headers={"Authorization": "Bearer htk_x"})
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_token_create_prints_the_token_alone(stack: Stack) -> None:
    result = stack.htk(
        "token",
        "create",
        "--org",
        "cli-org",
        "--scopes",
        "processes:write,tasks:create",
        "--name",
        "deployer",
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"htk_[0-9A-Za-z]{36}\n", result.stdout)


def test_token_list_shows_scopes_and_revocation_but_never_the_token(stack: Stack, org: Org) -> None:
    listing = stack.htk("token", "list", "--org", org.org_id)
    assert listing.returncode == 0, listing.stderr
    header, *lines = listing.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "SCOPES", "NAME"]
    assert len(lines) == 2
    assert "processes:write" in lines[0] and "(read-only)" in lines[1]
    assert org.writer not in listing.stdout and org.reader not in listing.stdout

    token_id = lines[1].split()[0]
    assert stack.htk("token", "revoke", token_id).returncode == 0
    assert "revoked" in stack.htk("token", "list", "--org", org.org_id).stdout.splitlines()[2]
    assert stack.htk("token", "revoke", "00000000-0000-0000-0000-000000000000").returncode == 1


def test_token_create_rejects_bad_input_with_a_clear_message(stack: Stack) -> None:
    unknown_scope = stack.htk("token", "create", "--org", "acme", "--scopes", "processes:delete")
    assert unknown_scope.returncode == 2
    assert "unknown scope 'processes:delete'" in unknown_scope.stderr
    assert unknown_scope.stdout == ""
    bad_org = stack.htk("token", "create", "--org", "Not An Org")
    assert bad_org.returncode == 2
    assert "org:" in bad_org.stderr
    for name in ("", "   ", "tab\there"):
        unnamed = stack.htk("token", "create", "--org", "acme", "--name", name)
        assert unnamed.returncode == 2
        assert "name:" in unnamed.stderr
        assert unnamed.stdout == ""


def test_token_names_are_unique_among_an_organizations_active_tokens(stack: Stack) -> None:
    org_id = f"names-{uuid.uuid4().hex[:12]}"

    def create(name: str, org: str = org_id) -> subprocess.CompletedProcess[str]:
        return stack.htk("token", "create", "--org", org, "--name", name)

    assert create("Alice").returncode == 0
    for twin in ("alice", "ALICE ", "\uff41\uff4c\uff49\uff43\uff45"):  # fullwidth last
        taken = create(twin)
        assert (taken.returncode, taken.stdout) == (2, "")
        assert "name: an active token of" in taken.stderr and "already named" in taken.stderr
    mixed = create("\u0430lice")  # a Cyrillic a
    assert mixed.returncode == 2 and "mixes the scripts CYRILLIC, LATIN" in mixed.stderr
    assert create("alice", org=f"other-{org_id}").returncode == 0  # another organization's
    (token_id,) = [
        line.split()[0]
        for line in stack.htk("token", "list", "--org", org_id).stdout.splitlines()
        if line.endswith("Alice")
    ]
    assert stack.htk("token", "revoke", token_id).returncode == 0
    assert create("alice").returncode == 0  # a revoked token's name is free again


def test_serve_alone_needs_a_database_url() -> None:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "htk"), "serve"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
