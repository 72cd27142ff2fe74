"""PostgreSQL restarted under load, and a database too slow to answer in time."""

import signal
import threading
import time
from pathlib import Path

import grpc
import httpx
import psutil
import psycopg

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.chaos.helpers import (
    STEP,
    check_stored,
    create_running_processes,
    load,
    lock_waiters,
    pg_ctl,
    postmaster_pid,
    progress_by,
    start_postgres,
    stop_postgres,
    wait_until,
)
from tests.support.stack import Stack, running_stack

ANSWERS = 40
DOWN_SECONDS = 3.0
# The bound: requests succeed again within 5 s of PostgreSQL being back.
RECOVERY_SECONDS = 5.0
# Envoy's request timeout, the deadline of a REST call (HTK_REQUEST_TIMEOUT_SECONDS).
REST_DEADLINE_SECONDS = 15.0
# The deadline of the gRPC reads sent beside the REST load.
GRPC_DEADLINE_SECONDS = 3.0
# The server's database limits (server/storage/database.py).
LOCK_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 10.0


class DeadlineProbe:
    """gRPC reads with a deadline through Envoy, one after the other, until stopped:
    how each ended and how long it took."""

    def __init__(self, stack: Stack, token: str, process_id: str) -> None:
        self.results: list[tuple[grpc.StatusCode, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(stack, token, process_id), daemon=True
        )

    def _run(self, stack: Stack, token: str, process_id: str) -> None:
        with grpc.insecure_channel(stack.envoy_target) as channel:
            stub = pb_grpc.ProcessServiceStub(channel)
            request = pb.GetProcessRequest(process_id=process_id)
            metadata = (("authorization", f"Bearer {token}"),)
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    stub.GetProcess(request, metadata=metadata, timeout=GRPC_DEADLINE_SECONDS)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                self.results.append((code, time.monotonic() - started))
                time.sleep(0.02)

    def __enter__(self) -> "DeadlineProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(GRPC_DEADLINE_SECONDS + 30)


def test_requests_fail_fast_while_postgres_restarts_and_recover_within_5_s(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path) as stack:
        try:
            token = stack.token("chaos")
            process_ids = create_running_processes(stack, token, 4)
            worker_pids = {index: worker.pid for index, worker in stack.workers().items()}
            with (
                load(stack, progress_by(token), process_ids) as running,
                DeadlineProbe(stack, token, process_ids[0]) as probe,
            ):
                running.wait_for(ANSWERS, 60)
                stopping_at = time.monotonic()
                socket_dir = stop_postgres(stack)
                stopped_at = time.monotonic()
                # Down long enough for every worker and client to notice (a
                # pause, not an assertion).
                running.wait_for(ANSWERS, 60, status=503, since=stopped_at)
                time.sleep(max(0.0, stopped_at + DOWN_SECONDS - time.monotonic()))
                start_postgres(stack, socket_dir)
                back_at = time.monotonic()
                running.wait_for(ANSWERS, 60, since=back_at + RECOVERY_SECONDS)
            outcomes = running.snapshot()
            assert {index: worker.pid for index, worker in stack.workers().items()} == worker_pids
            assert stack.process.poll() is None
            problems, logged = check_stored(stack, token, outcomes, process_ids)
        finally:
            postgres_left_running = _stop_stack_and_postgres(stack)

    failed = [o for o in outcomes if o.status != 200]
    first_success = min(o.answered_at for o in outcomes if o.status == 200 and o.sent_at > back_at)
    after_recovery = [o for o in outcomes if o.sent_at > back_at + RECOVERY_SECONDS]
    probe_codes = {code.name: sum(c == code for c, _ in probe.results) for code, _ in probe.results}
    print(
        f"\n{len(outcomes)} REST updates: {len(outcomes) - len(failed)} acknowledged,"
        f" {len(failed)} refused (slowest refusal {max(o.seconds for o in failed):.2f} s,"
        f" slowest request {max(o.seconds for o in outcomes):.2f} s); {logged} logged."
        f" PostgreSQL stopped in {stopped_at - stopping_at:.1f} s, down"
        f" {back_at - stopped_at:.1f} s; updates succeeded again"
        f" {first_success - back_at:.2f} s after it was back. gRPC reads with a"
        f" {GRPC_DEADLINE_SECONDS} s deadline: {probe_codes}, slowest"
        f" {max(seconds for _, seconds in probe.results):.2f} s."
    )
    # A database that is down is UNAVAILABLE (503) at once, never a hang.
    assert [o.describe() for o in failed if not o.unavailable] == []
    assert max(o.seconds for o in outcomes) < REST_DEADLINE_SECONDS
    assert set(probe_codes) <= {"OK", "UNAVAILABLE"}, probe_codes
    assert probe_codes.get("UNAVAILABLE")
    # Back within 5 s, and nothing fails after that.
    assert first_success - back_at < RECOVERY_SECONDS
    assert [o.describe() for o in after_recovery if o.status != 200] == []
    assert problems == []
    assert not postgres_left_running, (
        "SIGTERM stopped the stack but left its restarted PostgreSQL running"
    )


def _stop_stack_and_postgres(stack: Stack) -> bool:
    """Stops the stack; then stops its PostgreSQL if the stack left it running.

    Returns whether it did: the stack should stop the PostgreSQL of its data
    folder even when it was restarted behind the stack's back.
    """
    stack.process.send_signal(signal.SIGTERM)
    stack.process.wait(60)
    pid = postmaster_pid(stack)
    left_running = pid is not None and psutil.pid_exists(pid)
    if left_running:
        pg_ctl(stack, "-w", "-m", "fast", "stop")
    return left_running


def _progress(stack: Stack, token: str, process_id: str, message: str) -> httpx.Response:
    return httpx.post(
        f"{stack.http_url}/api/v1/processes/{process_id}/update",
        headers={"Authorization": f"Bearer {token}"},
        json={"type": "progress", "step": STEP, "message": message},
        timeout=60,
    )


def _event_count(stack: Stack, process_id: str) -> int:
    with psycopg.connect(stack.database_url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM process_events WHERE process_id = %s", (process_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_held_row_lock_ends_calls_at_their_deadline_or_the_lock_timeout(
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path) as stack:
        token = stack.token("chaos")
        (process_id,) = create_running_processes(stack, token, 1)
        with psycopg.connect(stack.database_url) as locker:
            # Another session holds the process's row lock, as a slow update would.
            locker.execute(
                "SELECT 1 FROM processes WHERE process_id = %s FOR UPDATE", (process_id,)
            )

            # gRPC with a 2 s deadline: the server waits for the lock no longer
            # than the caller does.
            with grpc.insecure_channel(stack.envoy_target) as channel:
                stub = pb_grpc.ProcessServiceStub(channel)
                request = pb.UpdateProcessRequest(
                    process_id=process_id, type="progress", step=STEP, message="grpc"
                )
                started = time.monotonic()
                try:
                    stub.UpdateProcess(
                        request, metadata=(("authorization", f"Bearer {token}"),), timeout=2.0
                    )
                    raise AssertionError("the update went through a held row lock")
                except grpc.RpcError as error:
                    grpc_code, grpc_seconds = error.code(), time.monotonic() - started
            # The client's deadline alone would end the call at 2 s; that the
            # server gave up too shows in its session: it stops waiting for
            # the lock before the 5 s lock_timeout would have ended the wait.
            wait_until(
                lambda: lock_waiters(stack) == 0 or None,
                max(0.0, started + LOCK_TIMEOUT_SECONDS - 0.5 - time.monotonic()),
                "the server's session to stop waiting for the lock",
                interval=0.05,
            )
            server_gave_up = time.monotonic() - started

            # REST: no deadline from the caller, so the lock timeout (5 s)
            # ends the wait, well before Envoy's 15 s.
            started = time.monotonic()
            response = _progress(stack, token, process_id, "rest")
            rest_seconds = time.monotonic() - started
        # The lock is released (leaving the block ends the transaction). Neither
        # timed-out update may have been applied behind its caller's back.
        events_after_lock = _event_count(stack, process_id)

        # statement_timeout, on the server's real sessions: a trigger makes
        # the event insert sleep, which no lock_timeout can end.
        with psycopg.connect(stack.database_url, autocommit=True) as admin:
            admin.execute(
                "CREATE FUNCTION chaos_sleep() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.payload->>'message' = 'sleep' THEN PERFORM pg_sleep(60);"
                " END IF; RETURN NEW; END $$"
            )
            admin.execute(
                "CREATE TRIGGER chaos_sleep BEFORE INSERT ON process_events"
                " FOR EACH ROW EXECUTE FUNCTION chaos_sleep()"
            )
        started = time.monotonic()
        slow = _progress(stack, token, process_id, "sleep")
        slow_seconds = time.monotonic() - started
        events_after_sleep = _event_count(stack, process_id)

    print(
        f"\ngRPC, 2 s deadline: {grpc_code.name} after {grpc_seconds:.2f} s, the server's"
        f" session gone {server_gave_up:.2f} s after the call started. REST behind the lock:"
        f" {response.status_code} {response.text} after {rest_seconds:.2f} s. REST with a"
        f" statement sleeping 60 s: {slow.status_code} {slow.text} after {slow_seconds:.2f} s."
    )
    assert grpc_code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 1.9 <= grpc_seconds < 4.0
    for answer, seconds, limit in (
        (response, rest_seconds, LOCK_TIMEOUT_SECONDS),
        (slow, slow_seconds, STATEMENT_TIMEOUT_SECONDS),
    ):
        assert answer.status_code == 504
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {
            "code": 4,
            "message": "the database did not answer in time",
            "details": [],
        }
        # The server's own limit ended it, not Envoy's 15 s.
        assert limit - 0.5 <= seconds < REST_DEADLINE_SECONDS - 2.0
    # Only `step_started`: no timed-out update was applied.
    assert events_after_lock == events_after_sleep == 1
