"""Finishing and cancelling through Envoy, one test per path and shape:
CancelProcess over REST (its JSON, its errors with their HTTP statuses) and
native gRPC, a REST watch that ends with the cancel, the steps of a failed
process read back over REST, and `htk processes cancel`."""

import threading
from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.e2e.test_cli import Cli
from tests.e2e.test_rest_contract import PROCESSES, create_process, get_process, moment, ok, update
from tests.e2e.test_rest_errors import assert_error, assert_invalid_field
from tests.support.orgs import Org
from tests.support.sse import kind, messages
from tests.support.stack import Stack
from tests.support.tokens import create_token

Json = dict[str, Any]
FAILED_PRECONDITION, PERMISSION_DENIED, NOT_FOUND = 9, 7, 5


def cancel(
    rest: httpx.Client, org: Org, process_id: str, body: Json, token: str | None = None
) -> httpx.Response:
    return rest.post(f"{PROCESSES}/{process_id}/cancel", headers=org.auth(token), json=body)


def running(rest: httpx.Client, org: Org) -> str:
    """A process (the contract's four steps) whose build completed, whose test
    runs, and whose review (a human step) and deploy never started."""
    process_id = create_process(rest, org)["process_id"]
    for body in (
        {"type": "step_started", "step": "build"},
        {"type": "step_completed", "step": "build"},
        {"type": "step_started", "step": "test"},
    ):
        update(rest, org, process_id, body)
    return str(process_id)


def statuses(process: Json) -> dict[str, str]:
    return {entry["step"]: entry["status"] for entry in process["timeline"]}


ENDED = {"build": "completed", "test": "cancelled", "review": "skipped", "deploy": "skipped"}


def test_a_cancel_over_rest_returns_the_cancelled_process(rest: httpx.Client, org: Org) -> None:
    process_id = running(rest, org)

    cancelled = ok(cancel(rest, org, process_id, {"reason": "superseded by v2.1.1"}))

    assert (cancelled["status"], cancelled["reason"], cancelled["seq"]) == (
        "cancelled",
        "superseded by v2.1.1",
        4,
    )
    assert statuses(cancelled) == ENDED
    finished_at = moment(cancelled["finished_at"])
    for entry in cancelled["timeline"][1:]:
        assert moment(entry["completed_at"]) == finished_at
    test, review = cancelled["timeline"][1:3]
    assert isinstance(test["duration_ms"], float | int)
    assert "duration_ms" not in review
    assert get_process(rest, org, process_id) == cancelled
    listed = ok(rest.get(PROCESSES, headers=org.auth(org.reader), params={"status": "cancelled"}))
    assert listed["total"] == 1
    assert [summary["process_id"] for summary in listed["processes"]] == [process_id]
    (event,) = ok(
        rest.get(
            f"{PROCESSES}/{process_id}/events",
            headers=org.auth(org.reader),
            params={"after_seq": 3},
        )
    )["events"]
    caller = ok(rest.get("/api/v1/caller", headers=org.auth()))
    assert event == {
        "seq": 4,
        "type": "cancelled",
        "timestamp": cancelled["finished_at"],
        "reason": "superseded by v2.1.1",
        # Who cancelled: the token that called cancel.
        "actor": caller["token_name"],
    }


def test_a_cancel_without_a_body_gives_no_reason(rest: httpx.Client, org: Org) -> None:
    process_id = running(rest, org)

    response = rest.post(f"{PROCESSES}/{process_id}/cancel", headers=org.auth())

    assert ok(response)["status"] == "cancelled"
    assert "reason" not in ok(response)


@pytest.mark.parametrize(
    ("finish", "status"),
    [
        ({"type": "completed"}, "completed"),
        ({"type": "failed", "error": "gave up"}, "failed"),
        (None, "cancelled"),
    ],
    ids=["completed", "failed", "cancelled"],
)
def test_cancelling_a_finished_process_is_a_400_naming_its_status(
    rest: httpx.Client, org: Org, finish: Json | None, status: str
) -> None:
    process_id = running(rest, org)
    if finish is None:
        ok(cancel(rest, org, process_id, {}))
    else:
        update(rest, org, process_id, finish)
    before = get_process(rest, org, process_id)

    body = assert_error(cancel(rest, org, process_id, {}), 400, FAILED_PRECONDITION)

    assert f"has already {status}" in body["message"]
    assert get_process(rest, org, process_id) == before
    # However it finished, no step reads as still going on.
    assert statuses(before) == ENDED


def test_cancel_refusals_have_their_statuses(stack: Stack, rest: httpx.Client, org: Org) -> None:
    process_id = running(rest, org)
    pipeline = create_token(stack.env, org.org_id, "tasks:create")

    assert_invalid_field(cancel(rest, org, process_id, {"reason": " "}), "reason")
    assert_invalid_field(cancel(rest, org, process_id, {"reason": "x" * 10_001}), "reason")
    for token in (org.reader, pipeline):
        assert_error(cancel(rest, org, process_id, {}, token), 403, PERMISSION_DENIED)
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(cancel(rest, org, missing, {}), 404, NOT_FOUND)
    assert get_process(rest, org, process_id)["status"] == "running"


def test_a_cancel_over_grpc(
    rest: httpx.Client, org: Org, grpc_stub: pb_grpc.ProcessServiceStub
) -> None:
    process_id = running(rest, org)

    cancelled = grpc_stub.CancelProcess(
        pb.CancelProcessRequest(process_id=process_id, reason="stop"),
        metadata=org.metadata(),
    )

    assert (cancelled.status, cancelled.reason) == ("cancelled", "stop")
    assert {entry.step: entry.status for entry in cancelled.timeline} == ENDED
    with pytest.raises(grpc.RpcError) as refused:
        grpc_stub.CancelProcess(
            pb.CancelProcessRequest(process_id=process_id), metadata=org.metadata()
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has already cancelled" in (refused.value.details() or "")


def test_a_rest_watch_ends_with_the_cancelled_event(rest: httpx.Client, org: Org) -> None:
    process_id = running(rest, org)
    received: list[Json] = []
    opened = threading.Event()

    def follow() -> None:
        with rest.stream(
            "GET",
            f"{PROCESSES}/{process_id}/watch",
            headers=org.auth(org.reader),
            params={"after_seq": 3},
            timeout=60,
        ) as response:
            for message in messages(response):
                opened.set()
                received.append(message)

    reader = threading.Thread(target=follow)
    reader.start()
    # The stream's first message (a heartbeat) says it follows the process.
    assert opened.wait(60)

    ok(cancel(rest, org, process_id, {"reason": "stop"}))

    # The stream ends by itself after the cancel; the join is a guard against a hang.
    reader.join(60)
    assert not reader.is_alive()
    events = [message["event"] for message in received if kind(message) == "event"]
    assert [(event["seq"], event["type"], event["reason"]) for event in events] == [
        (4, "cancelled", "stop")
    ]


def test_htk_processes_cancel(stack: Stack, rest: httpx.Client, org: Org) -> None:
    htk = Cli(stack, org)
    process_id = running(rest, org)

    shown = htk.ok("processes", "cancel", process_id, "--reason", "superseded")
    again = htk("processes", "cancel", process_id)

    assert "cancelled" in shown and "superseded" in shown and "skipped" in shown
    assert get_process(rest, org, process_id)["reason"] == "superseded"
    assert again.returncode == 2
    assert "has already cancelled" in again.stderr
    # A cancelled run did not succeed: a pipeline's `watch --exit-status && deploy` stops.
    watched = htk("processes", "watch", process_id, "--exit-status")
    assert watched.returncode == 1, watched.stderr
