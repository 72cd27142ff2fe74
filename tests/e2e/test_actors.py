"""Who did what, end to end through Envoy: the name of the creating token on
Get and List, over REST and gRPC, and each event's actor on the events page
and the watch's Server-Sent Events (every event type on every read path is in
test_event_types.py)."""

import httpx

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.e2e.test_rest_contract import PROCESSES, create_process, get_process, ok, update
from tests.support.orgs import Org
from tests.support.sse import messages
from tests.support.stack import Stack
from tests.support.tokens import create_token


def test_get_list_events_and_watch_say_who_did_what(
    stack: Stack, rest: httpx.Client, grpc_stub: pb_grpc.ProcessServiceStub, org: Org
) -> None:
    bot = create_token(stack.env, org.org_id, "processes:write", name="release-bot")
    process_id = create_process(rest, org, token=bot)["process_id"]
    update(rest, org, process_id, {"type": "step_started", "step": "build"}, token=bot)
    update(rest, org, process_id, {"type": "completed"})

    assert get_process(rest, org, process_id)["created_by"] == "release-bot"
    listed = ok(rest.get(PROCESSES, headers=org.auth(org.reader)))["processes"]
    assert [item["created_by"] for item in listed] == ["release-bot"]
    over_grpc = grpc_stub.GetProcess(
        pb.GetProcessRequest(process_id=process_id), metadata=org.metadata(org.reader)
    )
    assert over_grpc.created_by == "release-bot"

    writer = ok(rest.get("/api/v1/caller", headers=org.auth()))["token_name"]
    expected = [("step_started", "release-bot"), ("completed", writer)]
    page = ok(rest.get(f"{PROCESSES}/{process_id}/events", headers=org.auth(org.reader)))
    assert [(event["type"], event["actor"]) for event in page["events"]] == expected
    with rest.stream(
        "GET",
        f"{PROCESSES}/{process_id}/watch",
        params={"after_seq": "0"},
        headers=org.auth(org.reader),
    ) as response:
        streamed = [message["event"] for message in messages(response) if "event" in message]
    assert [(event["type"], event["actor"]) for event in streamed] == expected
