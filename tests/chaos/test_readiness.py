"""Ready means ready: calls reach every worker from the moment the stack says
so, and /readyz while the database is away is 503 naming it, then 200 again
once it is back (and every worker's notification listener has reconnected)."""

from pathlib import Path

import httpx

from tests.chaos.helpers import start_postgres, stop_postgres
from tests.support.probes import readiness_until
from tests.support.stack import running_stack


def test_calls_reach_every_worker_as_soon_as_the_stack_is_ready(tmp_path: Path) -> None:
    # Envoy's load balancers used to learn of a healthy worker up to a second
    # after its health check (the default update_merge_window), so the first
    # calls all went to one worker, and a retry had nowhere else to go.
    with running_stack(tmp_path, env={"HTK_WORKERS": "2"}) as stack:
        org = stack.new_org()
        before = stack.requests_served()
        # One connection, so one Envoy thread, whose round robin alternates.
        with httpx.Client(headers={"Authorization": f"Bearer {org.reader}"}) as client:
            for _ in range(4):
                assert client.get(f"{stack.http_url}/api/v1/processes").status_code == 200
        served = stack.requests_served()
    assert {index: served[index] - before.get(index, 0) for index in served} == {0: 2, 1: 2}


def test_readyz_names_the_database_while_it_is_stopped(tmp_path: Path) -> None:
    with running_stack(tmp_path, env={"HTK_WORKERS": "2"}) as stack:
        readiness_until(stack, 200)
        socket_dir = stop_postgres(stack)
        try:
            body = readiness_until(stack, 503)
            # Alive all the same: not a reason to restart the instance.
            assert httpx.get(f"{stack.http_url}/healthz").status_code == 200
        finally:
            start_postgres(stack, socket_dir)
        checks = body["checks"]
        assert isinstance(checks, dict)
        assert str(checks["database"]).startswith("not answering"), body
        assert "database: not answering" in str(body["message"])
        back = readiness_until(stack, 200)
        assert back["checks"] == {
            "database": "ok",
            "schema": "ok",
            "worker 0": "ok",
            "worker 1": "ok",
        }
