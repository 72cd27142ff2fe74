"""/readyz while the database is away: 503 naming it, then 200 again once it
is back (and every worker's notification listener has reconnected)."""

from pathlib import Path

import httpx

from tests.chaos.helpers import start_postgres, stop_postgres
from tests.support.probes import readiness_until
from tests.support.stack import running_stack


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
