"""Retention end to end: a stack deleting what finished more than about two
seconds ago, archiving it first. A finished process disappears from Get
(REST and gRPC), its events, its watch, List and every total, never before
its time; a running one, however old, stays; `htk archive read` prints the
finished one back exactly as REST's Get and events answered.

While the test reads what the API shows of the finished process, it holds
a lock that the pass's delete waits for (the pass archives, then waits), so
nothing here depends on how fast the machine reads. Released, the pass
deletes; the test waits for that with a bounded poll.
"""

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import grpc
import httpx
import psycopg
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.chaos.helpers import wait_until
from tests.support.orgs import Org
from tests.support.retention import archive_files, archive_read, create, send
from tests.support.stack import Stack, htk, running_stack

RETENTION_DAYS = 0.00002  # 1.728 s
RETENTION = timedelta(days=RETENTION_DAYS)
# However loaded the machine. HTK_RETENTION_INTERVAL_SECONDS is left to its
# default, as an operator leaves it: a tenth of the retention, at least a
# second, so a pass runs every second.
DELETION_TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="module")
def retaining(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("retention")
    env = {
        "HTK_RETENTION_DAYS": str(RETENTION_DAYS),
        "HTK_ARCHIVE_DIR": str(root / "archive"),
        "HTK_RETENTION_BATCH_SIZE": "2",
        "HTK_RETENTION_DUTY_CYCLE": "1",
    }
    with running_stack(root / "stack", env=env) as stack:
        yield stack


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def all_events(http: httpx.Client, org: Org, process_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        page = http.get(
            f"/api/v1/processes/{process_id}/events",
            params={"after_seq": events[-1]["seq"] if events else 0, "limit": 2},
            headers=org.auth(org.reader),
        )
        assert page.status_code == 200, page.text
        if not page.json()["events"]:
            return events
        events += page.json()["events"]


def totals(http: httpx.Client, org: Org) -> dict[str, int]:
    shown = {}
    for name, path, params in [
        ("all", "/api/v1/processes", {}),
        ("completed", "/api/v1/processes", {"status": "completed"}),
        ("running", "/api/v1/processes", {"status": "running"}),
        ("labelled", "/api/v1/processes", {"label": "env=prod"}),
        ("searched", "/api/v1/processes", {"search": "deploy"}),
        ("tasks", "/api/v1/tasks", {}),
        ("cancelled tasks", "/api/v1/tasks", {"status": "cancelled"}),
    ]:
        listed = http.get(path, params=params, headers=org.auth(org.reader))
        assert listed.status_code == 200, listed.text
        shown[name] = listed.json()["total"]
    return shown


def test_a_finished_process_goes_on_time_to_the_archive_and_a_running_one_stays(
    retaining: Stack,
) -> None:
    org = retaining.new_org()
    with (
        httpx.Client(base_url=retaining.http_url, timeout=30) as http,
        grpc.insecure_channel(retaining.envoy_target) as channel,
    ):
        stub = pb_grpc.ProcessServiceStub(channel)
        running = create(http, org, "Deploy forever")
        send(http, org, running, type="step_started", step="build")
        with psycopg.connect(retaining.database_url) as blocker:
            # The pass's delete of the batch's idempotency keys waits for
            # this; Get, List and the writes here do not touch the table.
            blocker.execute("LOCK TABLE idempotency_keys IN SHARE MODE")
            finished = create(http, org, "Deploy v2")
            send(http, org, finished, type="step_started", step="build", detail="Building")
            send(http, org, finished, type="progress", step="build", message="half", percent=50)
            send(
                http, org, finished, type="step_completed", step="build", data={"tag": "v2", "n": 3}
            )
            send(http, org, finished, type="completed", summary="All done")
            shown = http.get(f"/api/v1/processes/{finished}", headers=org.auth(org.reader))
            assert shown.status_code == 200, shown.text
            events = all_events(http, org, finished)
            before = totals(http, org)
            blocker.rollback()

        wait_until(
            lambda: (
                http.get(f"/api/v1/processes/{finished}", headers=org.auth()).status_code == 404
            ),
            DELETION_TIMEOUT_SECONDS,
            "retention to delete the finished process",
        )
        missing = http.get(f"/api/v1/processes/{finished}", headers=org.auth(org.reader))
        assert missing.json()["message"] == f"process {finished} not found"
        assert (
            http.get(f"/api/v1/processes/{finished}/events", headers=org.auth()).status_code == 404
        )
        assert (
            http.get(f"/api/v1/processes/{finished}/watch", headers=org.auth()).status_code == 404
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetProcess(pb.GetProcessRequest(process_id=finished), metadata=org.metadata())
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        assert totals(http, org) == {
            "all": before["all"] - 1,
            "completed": before["completed"] - 1,
            "running": before["running"],
            "labelled": before["labelled"] - 1,
            "searched": before["searched"] - 1,
            "tasks": before["tasks"] - 1,
            "cancelled tasks": before["cancelled tasks"] - 1,
        }
        assert before["all"] == 2 and before["running"] == 1
        # Older than the retention by now, and still there: it never finished.
        still = stub.GetProcess(pb.GetProcessRequest(process_id=running), metadata=org.metadata())
        assert still.status == "running"
        assert datetime.now().astimezone() - still.started_at.ToDatetime().astimezone() > RETENTION

    records = [json.loads(line) for line in archive_read(retaining) if finished in line]
    assert len(records) == 1, "printed more than once"
    (record,) = records
    assert record["process"] == shown.json()
    assert record["events"] == events
    assert [event["type"] for event in events][-1] == "completed"
    # Never before its time.
    assert moment(record["archived_at"]) - moment(shown.json()["finished_at"]) >= RETENTION
    archive = retaining.env["HTK_ARCHIVE_DIR"]
    assert f"delete expired processes (archived to {archive}): " in retaining.log


def test_archive_read_of_one_process_prints_it_and_refuses_an_absent_one(
    retaining: Stack,
) -> None:
    org = retaining.new_org()
    with httpx.Client(base_url=retaining.http_url, timeout=30) as http:
        process_id = create(http, org, "Deploy once")
        send(http, org, process_id, type="failed", error="broken")
        wait_until(
            lambda: (
                http.get(f"/api/v1/processes/{process_id}", headers=org.auth()).status_code == 404
            ),
            DELETION_TIMEOUT_SECONDS,
            "retention to delete the failed process",
        )
    # One file per day of archiving: the one that holds it prints it.
    printed, path = next(
        (done, path)
        for path in archive_files(retaining)
        if (done := htk(retaining.env, "archive", "read", path, "--process", process_id)).stdout
    )
    record = json.loads(printed.stdout)
    assert (record["process"]["process_id"], record["process"]["status"]) == (process_id, "failed")
    absent = htk(retaining.env, "archive", "read", path, "--process", "no-such-process")
    assert (absent.returncode, absent.stdout) == (1, "")
    assert absent.stderr == f"htk: no process no-such-process in {path}\n"
