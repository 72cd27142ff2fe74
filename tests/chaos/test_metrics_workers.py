"""/metrics shows an instance's workers together, and stays right when one is
killed: its counts stay counted, its gauges go with it."""

from pathlib import Path

import httpx

from tests.chaos.helpers import kill_worker, restarted_worker, wait_until
from tests.support.metrics import Scrape
from tests.support.stack import running_stack

CALLS = 40
RECOVERY_TIMEOUT_SECONDS = 60.0
# The workers sample their gauges each second.
SETTLE_SECONDS = 30.0
LIST = {"service": "htk.processes.v1.ProcessService", "method": "ListProcesses", "code": "OK"}


def test_metrics_are_summed_over_workers_and_survive_a_killed_worker(tmp_path: Path) -> None:
    with running_stack(tmp_path, env={"HTK_WORKERS": "2"}) as stack:
        org = stack.new_org()
        headers = {"Authorization": f"Bearer {org.reader}"}
        before = Scrape(stack).value("htk_rpc_requests_total", **LIST)
        for _ in range(CALLS):
            response = httpx.get(f"{stack.http_url}/api/v1/processes", headers=headers)
            assert response.status_code == 200
        assert Scrape(stack).value("htk_rpc_requests_total", **LIST) - before == CALLS
        # Both workers served some: the count is their sum.
        assert all(served > 0 for served in stack.requests_served().values())
        # A stream on a worker, so that the worker's gauges are not all zero.
        created = httpx.post(
            f"{stack.http_url}/api/v1/processes",
            headers={"Authorization": f"Bearer {org.writer}"},
            json={
                "namespace": "metrics",
                "name": "Watched",
                "step_defs": [{"key": "a", "label": "A"}],
            },
        )
        assert created.status_code == 200, created.text
        with (
            httpx.Client(timeout=30) as client,
            client.stream(
                "GET",
                f"{stack.http_url}/api/v1/processes/{created.json()['process_id']}/watch",
                headers=headers,
            ) as stream,
        ):
            lines = stream.iter_lines()  # kept: a dropped iterator closes the stream
            assert next(lines).startswith("data:")
            wait_until(
                lambda: Scrape(stack).value("htk_watch_streams") == 1,
                SETTLE_SECONDS,
                "the stream to show",
            )

            # The worker Envoy gave the stream to.
            def holders() -> list[int]:
                return [index for index, count in stack.requests_in_flight().items() if count]

            holder = wait_until(holders, SETTLE_SECONDS, "Envoy to show the stream's worker")[0]
            killed = kill_worker(stack, holder)
        wait_until(
            lambda: restarted_worker(stack, holder, killed),
            RECOVERY_TIMEOUT_SECONDS,
            "the worker's restart",
        )
        # The dead worker's open stream no longer counts; its calls still do.
        wait_until(
            lambda: Scrape(stack).value("htk_watch_streams") == 0,
            SETTLE_SECONDS,
            "the dead worker's stream to go",
        )
        scrape = Scrape(stack)
        assert scrape.value("htk_rpc_requests_total", **LIST) - before == CALLS
        assert scrape.value("htk_rpc_in_flight", method="WatchProcess") == 0
        wait_until(
            lambda: Scrape(stack).value("htk_notification_listener_up") == 1,
            SETTLE_SECONDS,
            "every listener to be up",
        )
