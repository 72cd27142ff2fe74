"""SIGTERM to `htk run` under load.

In-flight calls finish, new ones are refused, embedded PostgreSQL stops
cleanly, and a restart on the same data finds every acknowledged update.
"""

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import psycopg

from tests.chaos.helpers import (
    CLIENT_TIMEOUT_SECONDS,
    Outcome,
    attempt,
    check_stored,
    create_running_processes,
    load,
    lock_waiters,
    pgdata,
    postmaster_pid,
    progress_by,
    wait_until,
)
from tests.support.stack import Stack, running_stack

ANSWERS = 40
# Updates that are surely in flight when SIGTERM arrives: they wait inside
# the workers for a row lock that the test holds.
IN_FLIGHT = 6
# The server's lock_timeout is 5 s: the held lock goes well before, or the
# updates waiting for it would fail for a reason of the test's making.
LOCK_HOLD_SECONDS = 3.5
STOP_TIMEOUT_SECONDS = 60.0


def _send(stack: Stack, token: str, process_id: str, tag: str) -> Outcome:
    with httpx.Client(base_url=stack.http_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        return attempt(progress_by(token), http, process_id, tag)


def _refused(outcome: Outcome) -> bool:
    """Turned away without any worker starting it: Envoy's 503 (no worker
    takes new calls), or no answer at all once Envoy itself has stopped."""
    return outcome.unavailable or (
        outcome.status is None
        and str(outcome.body).startswith(("ConnectError", "RemoteProtocolError", "ReadError"))
    )


def test_sigterm_under_load_finishes_in_flight_calls_and_loses_nothing(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        token = stack.token("chaos")
        process_ids = create_running_processes(stack, token, 4)
        (held,) = create_running_processes(stack, token, 1)
        pid = postmaster_pid(stack)
        assert pid is not None
        postmaster = psutil.Process(pid)
        children = psutil.Process(stack.process.pid).children(recursive=True)
        with (
            load(stack, progress_by(token), process_ids) as running,
            ThreadPoolExecutor(IN_FLIGHT) as pool,
        ):
            running.wait_for(ANSWERS, 60)
            with psycopg.connect(stack.database_url) as locker:
                locker.execute("SELECT 1 FROM processes WHERE process_id = %s FOR UPDATE", (held,))
                locked_at = time.monotonic()
                waiting = [
                    pool.submit(_send, stack, token, held, f"in-flight-{n}")
                    for n in range(IN_FLIGHT)
                ]
                wait_until(
                    lambda: lock_waiters(stack) >= IN_FLIGHT or None,
                    LOCK_HOLD_SECONDS - 1.0,
                    f"{IN_FLIGHT} updates to wait for the row lock inside the workers",
                )
                stack.process.send_signal(signal.SIGTERM)
                sigterm_at = time.monotonic()

                # Keep them waiting until the workers refuse new calls, so that
                # they are still running when the shutdown begins.
                def refusing() -> bool | None:
                    after = [o for o in running.snapshot() if o.sent_at > sigterm_at]
                    return any(_refused(o) for o in after) or None

                try:
                    wait_until(
                        refusing,
                        max(0.0, locked_at + LOCK_HOLD_SECONDS - time.monotonic()),
                        "a new call to be refused",
                    )
                    refused_while_held = True
                except AssertionError:
                    refused_while_held = False
            released_at = time.monotonic()  # leaving the block ended the lock's transaction
            stack.process.wait(STOP_TIMEOUT_SECONDS)
            stopped_at = time.monotonic()
            in_flight = [future.result() for future in waiting]
        outcomes = running.snapshot()
    postgres_log = (pgdata(stack) / "log").read_text(errors="replace")

    with running_stack(tmp_path) as restarted:
        problems, logged = check_stored(
            restarted, token, outcomes + in_flight, [*process_ids, held]
        )
        with psycopg.connect(restarted.database_url) as connection:
            logged_tags = {
                message
                for (message,) in connection.execute(
                    "SELECT payload->>'message' FROM process_events WHERE type = 'progress'"
                )
            }

    def explain(outcome: Outcome) -> str:
        stored = " (stored)" if outcome.tag in logged_tags else " (not stored)"
        when = outcome.sent_at - sigterm_at
        return f"{outcome.tag}, sent {when:+.2f} s after SIGTERM: {outcome.describe()}{stored}"

    after_sigterm = [o for o in outcomes if o.sent_at > sigterm_at]
    refused = [o for o in outcomes + in_flight if o.status != 200]
    print(
        f"\n{len(outcomes)} updates of the load, {len(after_sigterm)} sent after SIGTERM:"
        f" {sum(o.status == 200 for o in outcomes)} acknowledged, {len(refused)} refused"
        f" ({sum(o.unavailable for o in refused)} with 503); {logged} logged."
        f" {IN_FLIGHT} updates in flight on the lock: {[o.status for o in in_flight]},"
        f" released {released_at - sigterm_at:.2f} s after SIGTERM (a new call was"
        f" {'already' if refused_while_held else 'not yet'} refused); the stack exited"
        f" {stopped_at - sigterm_at:.1f} s after SIGTERM."
    )
    assert stack.process.returncode == 0, stack.log
    # In flight when the shutdown began: all finished, none failed.
    assert [o.describe() for o in in_flight if o.status != 200] == []
    # Every update that did not get its 200 was refused before a worker
    # started it: Envoy's 503 or no connection, and nothing of it stored.
    assert [explain(o) for o in refused if not _refused(o)] == []
    assert any(_refused(o) for o in after_sigterm)
    assert [o.tag for o in refused if o.tag in logged_tags] == []
    # PostgreSQL stopped cleanly, and everything else too.
    assert not postmaster.is_running()
    assert not (pgdata(stack) / "postmaster.pid").exists()
    assert "database system is shut down" in postgres_log.rsplit("shutdown request", 1)[-1]
    assert [c.pid for c in children if c.is_running() and c.status() != "zombie"] == []
    # Nothing acknowledged was lost.
    assert problems == []
