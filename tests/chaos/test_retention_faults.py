"""Retention struck mid-batch: the worker running the pass killed with
SIGKILL, and PostgreSQL restarted, while many expired processes are being
deleted. Whatever happens, every process created is still readable over the
API or in the archive (never neither), and `htk archive read` prints each
archived one once.

To be sure a batch is under way when the fault strikes, the test holds a lock
the batch's delete waits for (SHARE on idempotency_keys, which the writes here
never touch): by then the batch has written and fsynced its processes to the
archive, and its delete has not committed. That is the crash the archive must
survive: the processes are in the archive and in the database, and the next
pass archives them again.
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psycopg

from server.storage.archive import read_lines
from tests.chaos.helpers import (
    CLIENT_TIMEOUT_SECONDS,
    kill_worker,
    restarted_worker,
    start_postgres,
    stop_postgres,
    wait_until,
)
from tests.support.orgs import Org
from tests.support.retention import archive_files, archive_read, create, send
from tests.support.stack import Stack, running_stack

EXPIRING = 40
RUNNING = 3
BATCH = 4
RECOVERY_TIMEOUT_SECONDS = 60.0
# The pass waits up to the server's lock_timeout (5 s) for the test's lock
# before it fails its batch and tries again.
BLOCKED_TIMEOUT_SECONDS = 30.0


def retaining_env(tmp_path: Path, workers: int) -> dict[str, str]:
    return {
        "HTK_WORKERS": str(workers),
        "HTK_RETENTION_DAYS": "0.00001",  # 0.86 s
        "HTK_ARCHIVE_DIR": str(tmp_path / "archive"),
        "HTK_RETENTION_INTERVAL_SECONDS": "0.2",
        "HTK_RETENTION_BATCH_SIZE": str(BATCH),
        "HTK_RETENTION_DUTY_CYCLE": "1",
    }


@contextmanager
def a_batch_blocked_mid_way(stack: Stack, org: Org) -> Iterator[tuple[list[str], list[str]]]:
    """Running processes, and EXPIRING finished ones, made while the pass's
    delete is held back; yields both once a batch is archived and waits."""
    with (
        psycopg.connect(stack.database_url) as blocker,
        httpx.Client(base_url=stack.http_url, timeout=CLIENT_TIMEOUT_SECONDS) as http,
    ):
        blocker.execute("LOCK TABLE idempotency_keys IN SHARE MODE")
        running = [create(http, org, f"Deploy running {n}") for n in range(RUNNING)]
        expiring = []
        for number in range(EXPIRING):
            process_id = create(http, org, f"Deploy {number}")
            send(http, org, process_id, type="step_started", step="build")
            send(http, org, process_id, type="completed", summary=f"run {number}")
            expiring.append(process_id)
        wait_until(
            lambda: retention_waiting(stack),
            BLOCKED_TIMEOUT_SECONDS,
            "a retention batch to wait for the test's lock",
        )
        # A fault that ends the session takes the lock with it.
        with suppress(psycopg.OperationalError):
            yield running, expiring
            blocker.rollback()


def retention_waiting(stack: Stack) -> bool:
    """Whether a retention batch's delete waits for a lock now (the hourly
    purge of expired keys may wait for the test's lock too)."""
    with psycopg.connect(stack.database_url) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%%DELETE FROM processes%%'"
        ).fetchone()
    return bool(row and row[0])


def statuses(stack: Stack, org: Org, process_ids: list[str]) -> dict[str, int]:
    """GetProcess's HTTP status of each process: 200, 404, or 503 while the
    stack recovers."""
    with httpx.Client(base_url=stack.http_url, timeout=CLIENT_TIMEOUT_SECONDS) as http:
        shown = {}
        for process_id in process_ids:
            answer = http.get(f"/api/v1/processes/{process_id}", headers=org.auth(org.reader))
            assert answer.status_code in (200, 404, 503), answer.text
            shown[process_id] = answer.status_code
    return shown


def check_nothing_lost(stack: Stack, org: Org, running: list[str], expiring: list[str]) -> None:
    """Every expired process deleted and archived, running ones readable, and
    each archived process printed once although some were written twice."""
    wanted = {**dict.fromkeys(expiring, 404), **dict.fromkeys(running, 200)}
    wait_until(
        lambda: statuses(stack, org, list(wanted)) == wanted,
        RECOVERY_TIMEOUT_SECONDS,
        "retention to delete every expired process, and the running ones to read",
    )
    printed = [json.loads(line)["process"] for line in archive_read(stack)]
    ids = [process["process_id"] for process in printed]
    assert sorted(ids) == sorted(set(ids)), "a process printed twice"
    mine = {
        process["process_id"]: process for process in printed if process["process_id"] in expiring
    }
    # Deleted and missing from the archive: none.
    assert sorted(mine) == sorted(expiring)
    assert {process["status"] for process in mine.values()} == {"completed"}
    assert not set(ids) & set(running)
    written = [line for path in archive_files(stack) for line in read_lines(Path(path))]
    # The batch the fault struck was written, and written again after.
    assert len(written) > len(set(ids)), (len(written), len(ids))


def test_the_worker_running_the_pass_killed_mid_batch_loses_no_process(tmp_path: Path) -> None:
    # One worker: the one running the pass is the one killed.
    with running_stack(tmp_path / "stack", env=retaining_env(tmp_path, 1)) as stack:
        org = stack.new_org()
        with a_batch_blocked_mid_way(stack, org) as (running, expiring):
            killed = kill_worker(stack, 0)
        replacement = wait_until(
            lambda: restarted_worker(stack, 0, killed),
            RECOVERY_TIMEOUT_SECONDS,
            "the supervisor to restart worker 0",
        )
        check_nothing_lost(stack, org, running, expiring)
        assert replacement.is_running()
        assert "gRPC worker 0 exited (status -9); restarting it" in stack.log


def test_postgresql_restarted_during_a_pass_loses_no_process(tmp_path: Path) -> None:
    with running_stack(tmp_path / "stack", env=retaining_env(tmp_path, 2)) as stack:
        org = stack.new_org()
        with a_batch_blocked_mid_way(stack, org) as (running, expiring):
            socket_dir = stop_postgres(stack)
            stopped_at = time.monotonic()
            start_postgres(stack, socket_dir)
        print(f"\nPostgreSQL was down {time.monotonic() - stopped_at:.1f} s mid-batch")
        check_nothing_lost(stack, org, running, expiring)
