"""Webhooks under faults: a delivery worker killed with SIGKILL and PostgreSQL
restarted while 2,000 events flow to a receiver that fails 30% of attempts.
Every event's message arrives at least once, and every arrival of one
message carries the same `webhook-id`."""

import random
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import psutil

from tests.chaos.helpers import (
    kill_worker,
    pg_ctl,
    postmaster_pid,
    restarted_worker,
    start_postgres,
    stop_postgres,
    wait_until,
)
from tests.support.stack import Stack, running_stack
from tests.support.tokens import create_token
from tests.support.webhooks import LOCAL_RECEIVERS, Arrival, receiver

EVENTS = 2000
CLIENTS = 4
FAILING_SHARE = 0.3
DOWN_SECONDS = 2.0
# Short retries, many of them: 30% failures never run out of 20 attempts
# (0.3**20), and a taken-over lease (2 * timeout + 5 s) ends soon.
ENV = {
    **LOCAL_RECEIVERS,
    "HTK_WEBHOOK_RETRY_SCHEDULE": ",".join(["0.2"] * 20),
    "HTK_WEBHOOK_TIMEOUT_SECONDS": "2",
}


class Creator:
    """Clients creating processes until EVENTS are acknowledged: each creation
    is one event, `process.created`. Refusals (PostgreSQL down) are retried
    with new creations; only acknowledged ones are expected to arrive."""

    def __init__(self, stack: Stack, token: str) -> None:
        self._stack = stack
        self._token = token
        self._lock = threading.Lock()
        self.acknowledged: list[str] = []
        self.refused = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        body = {
            "namespace": "chaos",
            "name": "event",
            "step_defs": [{"key": "build", "label": "Build"}],
        }
        headers = {"Authorization": f"Bearer {self._token}"}
        with httpx.Client(base_url=self._stack.http_url, timeout=30) as http:
            while self.count() < EVENTS:
                try:
                    response = http.post("/api/v1/processes", headers=headers, json=body)
                except httpx.HTTPError:
                    response = None
                with self._lock:
                    if response is not None and response.status_code == 200:
                        self.acknowledged.append(response.json()["process_id"])
                    else:
                        self.refused += 1
                if response is None or response.status_code != 200:
                    time.sleep(0.05)

    def count(self) -> int:
        with self._lock:
            return len(self.acknowledged)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(120)


def test_deliveries_survive_killed_workers_and_a_postgres_restart(tmp_path: Path) -> None:
    failures = random.Random(23)  # noqa: S311 - which attempts fail, not a secret
    with receiver() as inbox, running_stack(tmp_path, env=ENV) as stack:
        try:
            org = f"chaos-{time.monotonic_ns()}"
            manager = create_token(stack.env, org, "webhooks:manage")
            writer = create_token(stack.env, org, "processes:write")
            created = httpx.post(
                f"{stack.http_url}/api/v1/webhooks",
                headers={"Authorization": f"Bearer {manager}"},
                json={"url": inbox.url("chaos"), "events": ["process.created"]},
                timeout=30,
            ).json()
            inbox.expect("chaos", created["secret"])
            inbox.answer = lambda path, number: 500 if failures.random() < FAILING_SHARE else 200

            creator = Creator(stack, writer)
            creator.start()
            wait_until(lambda: creator.count() >= EVENTS // 4, 120, "a quarter of the events")
            killed = kill_worker(stack, 0)
            wait_until(lambda: restarted_worker(stack, 0, killed), 60, "the worker's restart")
            wait_until(lambda: creator.count() >= EVENTS // 2, 120, "half of the events")
            socket_dir = stop_postgres(stack)
            time.sleep(DOWN_SECONDS)  # down for a while: a pause, not an assertion
            start_postgres(stack, socket_dir)
            creator.join()
            expected = set(creator.acknowledged)

            def delivered(arrivals: list[Arrival]) -> bool:
                return expected <= {_process_of(a) for a in arrivals if a.status == 200}

            arrivals = inbox.wait_for(delivered, "chaos", timeout=150)
        finally:
            stack.process.terminate()
            stack.process.wait(60)
            # A PostgreSQL restarted behind the stack's back may outlive it.
            pid = postmaster_pid(stack)
            if pid is not None and psutil.pid_exists(pid):
                pg_ctl(stack, "-w", "-m", "fast", "stop")

    ids_by_message: dict[str, set[str]] = defaultdict(set)
    for arrival in arrivals:
        ids_by_message[_process_of(arrival)].add(arrival.webhook_id)
    failed_attempts = sum(arrival.status != 200 for arrival in arrivals)
    print(
        f"\n{len(expected)} events acknowledged ({creator.refused} creations refused while"
        f" PostgreSQL was down); {len(arrivals)} attempts arrived, {failed_attempts} answered 500;"
        f" {len(arrivals) - failed_attempts - len(expected)} duplicates of delivered messages."
    )
    assert len(expected) >= EVENTS
    assert all(arrival.verified for arrival in arrivals)
    assert [m for m, ids in ids_by_message.items() if len(ids) != 1] == []


def _process_of(arrival: Arrival) -> str:
    return str(arrival.message["data"]["process"]["process_id"])
