"""A gRPC worker killed with SIGKILL under load: alone, and beside a second one."""

import time
from pathlib import Path

import httpx
import psycopg

from tests.chaos.helpers import (
    check_stored,
    create_running_processes,
    kill_worker,
    load,
    lock_waiters,
    progress_by,
    read_by,
    restarted_worker,
    wait_until,
)
from tests.support.stack import Stack, running_stack

# Answers to wait for before the fault and after recovery: enough to be sure
# the load flows, few enough to be quick on a loaded machine.
ANSWERS = 40
# How long the supervisor and Envoy may take to bring a worker back, on a
# slow machine (the worker imports and connects for a few seconds).
RECOVERY_TIMEOUT_SECONDS = 60.0
READERS = 6
# Well inside the server's 5 s lock_timeout, which would fail the reads.
LOCK_WAIT_SECONDS = 3.0


def test_a_killed_lone_worker_is_restarted_and_no_acknowledged_update_is_lost(
    tmp_path: Path,
) -> None:
    # One worker: while it is down, Envoy has nobody to retry on.
    with running_stack(tmp_path, env={"HTK_WORKERS": "1"}) as stack:
        token = stack.token("chaos")
        process_ids = create_running_processes(stack, token, 4)
        with load(stack, progress_by(token), process_ids) as running:
            running.wait_for(ANSWERS, RECOVERY_TIMEOUT_SECONDS)
            killed = kill_worker(stack, 0)
            killed_at = time.monotonic()
            running.wait_for(1, RECOVERY_TIMEOUT_SECONDS, status=503, since=killed_at)
            replacement = wait_until(
                lambda: restarted_worker(stack, 0, killed),
                RECOVERY_TIMEOUT_SECONDS,
                "the supervisor to restart worker 0",
            )
            restarted_at = time.monotonic()
            running.wait_for(ANSWERS, RECOVERY_TIMEOUT_SECONDS, since=restarted_at)
        outcomes = running.snapshot()
        assert replacement.is_running()
        problems, logged = check_stored(stack, token, outcomes, process_ids)
        log = stack.log

    after_kill = [outcome for outcome in outcomes if outcome.answered_at >= killed_at]
    refused = [outcome for outcome in after_kill if outcome.status != 200]
    acked = [outcome for outcome in outcomes if outcome.status == 200]
    back = min(o.answered_at for o in after_kill if o.status == 200 and o.sent_at > killed_at)
    print(
        f"\n{len(outcomes)} updates: {len(acked)} acknowledged, {len(refused)} refused while"
        f" worker {killed.pid} was down; {logged} logged. Worker {replacement.pid} replaced it"
        f" {restarted_at - killed_at:.1f} s after the kill; updates succeeded again after"
        f" {back - killed_at:.1f} s."
    )
    # While the worker is down, Envoy itself answers: 503 with a google.rpc.Status.
    assert refused
    assert [o.describe() for o in refused if not o.unavailable] == []
    assert "gRPC worker 0 exited (status -9); restarting it" in log
    assert problems == []


def _stat(stack: Stack, name: str) -> int:
    url = f"{stack.envoy_admin_url}/stats?filter=^{name}$"
    (line,) = httpx.get(url, timeout=10).text.splitlines()
    return int(line.rsplit(": ", 1)[1])


def test_reads_keep_succeeding_while_one_of_two_workers_is_killed_and_restarted(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path, env={"HTK_WORKERS": "2"}) as stack:
        token = stack.token("chaos", scopes="")
        writer = stack.token("chaos")
        process_ids = create_running_processes(stack, writer, 2)
        with load(stack, read_by(token), process_ids, clients=READERS) as running:
            running.wait_for(ANSWERS, RECOVERY_TIMEOUT_SECONDS)
            # Reads in flight on the worker when it dies, for sure: a table
            # lock held here makes every read wait inside a worker, and the
            # worker killed is the one Envoy says holds the most of them
            # (Envoy may have sent them all to one). Held for a second or two
            # only: the server's lock_timeout is 5 s.
            with psycopg.connect(stack.database_url) as locker:
                locker.execute("LOCK TABLE steps IN ACCESS EXCLUSIVE MODE")
                wait_until(
                    lambda: lock_waiters(stack) >= READERS - 1 or None,
                    LOCK_WAIT_SECONDS,
                    "reads to wait for the table lock",
                )
                in_flight = stack.requests_in_flight()
                index = max(in_flight, key=in_flight.__getitem__)
                assert in_flight[index] > 0, in_flight
                killed = kill_worker(stack, index)
                killed_at = time.monotonic()
            # Envoy takes it out of rotation: it failed a health check or a
            # connection (outlier detection).
            seen_unhealthy = wait_until(
                lambda: None if (flags := stack.worker_health()[index]) == "healthy" else flags,
                RECOVERY_TIMEOUT_SECONDS,
                f"Envoy to mark worker {index} unhealthy",
            )
            replacement = wait_until(
                lambda: restarted_worker(stack, index, killed),
                RECOVERY_TIMEOUT_SECONDS,
                f"the supervisor to restart worker {index}",
            )
            wait_until(
                lambda: stack.worker_health()[index] == "healthy" or None,
                RECOVERY_TIMEOUT_SECONDS,
                f"Envoy to route to the restarted worker {index} again",
            )
            healthy_at = time.monotonic()
            running.wait_for(ANSWERS, RECOVERY_TIMEOUT_SECONDS, since=healthy_at)
        outcomes = running.snapshot()
        retried = _stat(stack, "cluster.grpc_server.upstream_rq_retry_success")

    failed = [outcome for outcome in outcomes if outcome.status != 200]
    during = [o for o in outcomes if killed_at <= o.sent_at <= healthy_at]
    print(
        f"\n{len(outcomes)} reads, {len(during)} of them between the kill of worker"
        f" {index} ({killed.pid}, {in_flight[index]} reads in flight) and Envoy routing to"
        f" its replacement {replacement.pid}"
        f" ({healthy_at - killed_at:.1f} s); Envoy flagged it {seen_unhealthy!r} and"
        f" retried {retried} requests on the other worker; {len(failed)} failed."
    )
    assert during
    assert [outcome.describe() for outcome in failed] == []
