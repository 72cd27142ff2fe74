"""`htk processes watch` across a whole server restart: it reconnects with a
growing pause and resumes after the last event it printed, so each event is
printed once, in order; and `--after-seq N` starts after event N."""

import subprocess
from pathlib import Path

import httpx

from tests.support.stack import HTK, Stack, free_port, running_stack
from tests.support.tokens import create_token

PORTS = ("HTK_HTTP_PORT", "HTK_GRPC_PORT", "HTK_ENVOY_ADMIN_PORT", "HTK_METRICS_PORT")
# A guard against a hang, not a timing check.
WATCH_TIMEOUT_SECONDS = 300


def _update(stack: Stack, token: str, process_id: str, body: dict[str, str]) -> None:
    response = httpx.post(
        f"{stack.http_url}/api/v1/processes/{process_id}/update",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
    )
    assert response.status_code == 200, response.text


def _watch(stack: Stack, token: str, *args: str) -> subprocess.Popen[str]:
    env = {**stack.env, "HTK_URL": stack.http_url, "HTK_TOKEN": token}
    return subprocess.Popen(
        [HTK, "processes", "watch", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watch_resumes_across_a_server_restart_and_from_after_seq(tmp_path: Path) -> None:
    # The same ports after the restart: the watch reconnects to the address it knows.
    ports = {name: str(free_port()) for name in PORTS}
    with running_stack(tmp_path, env=ports) as stack:
        token = create_token(stack.env, "restart", "processes:write", name="ci-pipeline")
        created = httpx.post(
            f"{stack.http_url}/api/v1/processes",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "namespace": "deployments",
                "name": "Deploy",
                "step_defs": [{"key": "build", "label": "Build"}],
            },
        ).json()
        process_id = created["process_id"]
        _update(stack, token, process_id, {"type": "step_started", "step": "build"})
        watcher = _watch(stack, token, process_id, "--exit-status")
        assert watcher.stdout is not None
        # The snapshot's line, then the stack goes away under the open stream.
        assert process_id in watcher.stdout.readline()
    with running_stack(tmp_path, env=ports) as stack:
        _update(stack, token, process_id, {"type": "progress", "step": "build", "message": "m"})
        _update(stack, token, process_id, {"type": "step_completed", "step": "build"})
        _update(stack, token, process_id, {"type": "completed"})
        rest, errors = watcher.communicate(timeout=WATCH_TIMEOUT_SECONDS)
        assert watcher.returncode == 0, errors
        printed = [line.split()[2] for line in rest.splitlines()]
        assert printed == ["progress", "step_completed", "completed"], rest

        # From event 2 on: the events after it, then the end, with their actors.
        after = _watch(stack, token, process_id, "--after-seq", "2")
        out, errors = after.communicate(timeout=WATCH_TIMEOUT_SECONDS)
        assert after.returncode == 0, errors
        lines = out.splitlines()
        assert [line.split()[2] for line in lines] == ["step_completed", "completed"], out
        assert all("by ci-pipeline" in line for line in lines), out
