"""Hypothesis over the watch streams, while a writer pushes updates.

Each case runs one process to its end, its updates sent at random pauses,
while a watcher follows it through random attempts: over gRPC or Server-Sent
Events, through Envoy; reading at once, slowly, or stopping for a while;
leaving after some messages or in the middle of one (SSE, read in small
pieces); resuming at a random seq at most the last one it saw. Between them,
streams of the whole organization come and go the same ways. A last attempt
reads until the process finishes.

No attempt may get a 5xx or an error status other than the watcher's own
cancel; each stream's events follow its `after_seq` with no gap and no
repeat; the watcher, resuming from what it last saw, ends with exactly the
process's event log as ListProcessEvents reads it; and the stack's log holds
no ERROR line and no traceback.
"""

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.chaos.helpers import create_running_processes
from tests.fuzz.conftest import EXAMPLES, fuzz_settings
from tests.support.orgs import Org
from tests.support.sse import DATA
from tests.support.stack import Stack

# Each case runs a process to its end: a tenth of the other fuzzers' cases.
CASES = max(5, EXAMPLES // 10)
TIMEOUT_SECONDS = 30.0
# An organization's stream never ends by itself, and may be quiet once the
# process finished: an attempt at one leaves after this long at most.
ORGANIZATION_SECONDS = 1.0
# In-band endings a watcher resumes after (the server shutting down, or
# ending a stream whose client fell behind): no fault of the stream's.
RESUMABLE_CODES = {
    grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
    grpc.StatusCode.UNAVAILABLE.value[0],
}

# An event as the checks compare it: seq, type and the progress message,
# which is unique to each update.
Seen = tuple[int, str, str]


@dataclass(frozen=True)
class Attempt:
    """One stream a watcher opens, and how it reads and leaves it."""

    grpc: bool
    organization: bool
    # Seconds to wait after each message (0: read at once).
    pause: float
    # After this many messages, stop reading for `stall` seconds, then leave.
    leave_after: int | None
    stall: float
    # SSE only: leave once this many bytes were read (likely mid-message),
    # reading them in pieces of `piece` bytes.
    cut_at_byte: int | None
    piece: int
    # Where to resume: the last seq seen, less this many (at least 0).
    back: int


attempts = st.builds(
    Attempt,
    grpc=st.booleans(),
    organization=st.booleans(),
    pause=st.sampled_from([0.0, 0.0, 0.005, 0.03]),
    leave_after=st.none() | st.integers(1, 8),
    stall=st.sampled_from([0.0, 0.1, 0.5]),
    cut_at_byte=st.none() | st.integers(1, 20_000),
    piece=st.integers(1, 4096),
    back=st.sampled_from([0, 0, 0, 1, 3, 1000]),
)
# A progress message's length: some span many HTTP/2 frames.
message_lengths = st.sampled_from([1, 50, 2000, 9000])


@dataclass
class Stream:
    """What one attempt read: its events, and how it ended."""

    events: list[Seen]
    ending: str  # finished, left, resumable <code>, ended


@pytest.fixture(scope="module")
def stub(stack: Stack) -> Iterator[pb_grpc.ProcessServiceStub]:
    with grpc.insecure_channel(stack.envoy_target) as channel:
        yield pb_grpc.ProcessServiceStub(channel)


@fuzz_settings(max_examples=CASES)
@given(
    plan=st.lists(attempts, min_size=1, max_size=6),
    lengths=st.lists(message_lengths, min_size=1, max_size=25),
    pauses=st.lists(st.sampled_from([0.0, 0.002, 0.02]), min_size=1, max_size=5),
)
def test_watchers_that_leave_and_resume_lose_and_repeat_nothing(
    stack: Stack,
    tenant: Org,
    stub: pb_grpc.ProcessServiceStub,
    plan: list[Attempt],
    lengths: list[int],
    pauses: list[float],
) -> None:
    log_mark = stack.log_path.stat().st_size
    [process_id] = create_running_processes(stack, tenant.writer, 1)
    failures: list[BaseException] = []
    writer = threading.Thread(
        target=write, args=(stack, tenant, process_id, lengths, pauses, failures)
    )
    writer.start()
    history: list[Seen] = []
    try:
        for attempt in plan:
            if attempt.organization:
                check_organization_stream(stack, tenant, stub, attempt, process_id)
                continue
            after_seq = max(0, (history[-1][0] if history else 0) - attempt.back)
            event("resumed behind the last seq seen" if attempt.back else "resumed at it")
            stream = watch(stack, tenant, stub, attempt, process_id, after_seq)
            history = history[:after_seq] + stream.events
            if stream.ending == "finished":
                break
        # The last attempt follows the process to its end (bounded: each
        # resumes after what the last one saw, and the process finishes).
        reader = Attempt(False, False, 0.0, None, 0.0, None, 4096, 0)
        for reading_grpc in (True, False) * 3:
            if history and history[-1][1] == "completed":
                break
            after_seq = history[-1][0] if history else 0
            reading = replace(reader, grpc=reading_grpc)
            stream = watch(stack, tenant, stub, reading, process_id, after_seq)
            history = history[:after_seq] + stream.events
    finally:
        writer.join(TIMEOUT_SECONDS)
    assert not writer.is_alive()
    assert not failures, failures

    assert history == logged(stack, tenant, process_id)
    assert_no_error_logged(stack, log_mark)


def write(
    stack: Stack,
    org: Org,
    process_id: str,
    lengths: list[int],
    pauses: list[float],
    failures: list[BaseException],
) -> None:
    """The process's updates, one per length, at the given pauses in turn;
    then its end, whatever happened (so that no watcher waits for it)."""
    with httpx.Client(base_url=stack.http_url, timeout=TIMEOUT_SECONDS) as http:
        try:
            for number, length in enumerate(lengths):
                time.sleep(pauses[number % len(pauses)])
                message = f"{number}:" + "m" * length
                body = {"type": "progress", "step": "build", "message": message}
                send(http, org, process_id, body)
        except BaseException as failure:
            failures.append(failure)
        finally:
            send(http, org, process_id, {"type": "completed"})


def send(http: httpx.Client, org: Org, process_id: str, body: dict[str, Any]) -> None:
    sent = http.post(f"/api/v1/processes/{process_id}/update", headers=org.auth(), json=body)
    assert sent.status_code == 200, sent.text


def watch(
    stack: Stack,
    org: Org,
    stub: pb_grpc.ProcessServiceStub,
    attempt: Attempt,
    process_id: str,
    after_seq: int,
) -> Stream:
    """One attempt at watching the process from `after_seq`; its events
    must follow `after_seq` one by one."""
    event(f"process watch over {'gRPC' if attempt.grpc else 'SSE'}")
    if attempt.grpc:
        request = pb.WatchProcessRequest(process_id=process_id, after_seq=after_seq)
        stream = grpc_stream(
            stub.WatchProcess(request, metadata=org.metadata(org.reader), timeout=TIMEOUT_SECONDS),
            attempt,
        )
    else:
        stream = sse_stream(
            stack, org, f"/api/v1/processes/{process_id}/watch", {"after_seq": after_seq}, attempt
        )
    seqs = [seq for seq, _, _ in stream.events]
    assert seqs == list(range(after_seq + 1, after_seq + 1 + len(seqs))), (after_seq, seqs)
    return stream


def check_organization_stream(
    stack: Stack, org: Org, stub: pb_grpc.ProcessServiceStub, attempt: Attempt, process_id: str
) -> None:
    """A stream of the organization's changes: the process's events in it
    follow one another, from wherever the stream began, with no gap or repeat."""
    event(f"organization watch over {'gRPC' if attempt.grpc else 'SSE'}")
    if attempt.grpc:
        call = stub.WatchProcesses(pb.WatchProcessesRequest(), metadata=org.metadata(org.reader))
        # Cancelled, not given a deadline: through Envoy, a stream's deadline
        # may end it with INTERNAL (an RST_STREAM) rather than DEADLINE_EXCEEDED.
        leaving = threading.Timer(ORGANIZATION_SECONDS, call.cancel)
        leaving.start()
        try:
            stream = grpc_stream(call, attempt, process_id)
        finally:
            leaving.cancel()
    else:
        stream = sse_stream(stack, org, "/api/v1/process-events", {}, attempt, process_id)
    seqs = [seq for seq, _, _ in stream.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True, seqs


def grpc_stream(call: Any, attempt: Attempt, of_process: str | None = None) -> Stream:
    """Reads a gRPC watch (grpc's stream calls are iterators at run time, not
    in its type stubs); `of_process`: an organization's stream, whose changes
    of that process count."""
    events: list[Seen] = []
    messages = 0
    try:
        for message in call:
            messages += 1
            if message.HasField("error"):
                assert message.error.code in RESUMABLE_CODES, message.error
                call.cancel()
                return Stream(events, f"resumable {message.error.code}")
            found = message.event if message.HasField("event") else None
            if of_process and message.process.process_id != of_process:
                found = None
            if found is not None:
                events.append((found.seq, found.type, found.message))
                if found.type == "completed" and of_process is None:
                    return Stream(events, "finished")
            if pause_or_leave(attempt, messages):
                call.cancel()
                return Stream(events, "left")
    except grpc.RpcError as error:
        # Only an organization's stream is cancelled while it is read (it
        # never ends by itself).
        assert error.code() == grpc.StatusCode.CANCELLED and of_process, error
        return Stream(events, "left")
    assert call.code() == grpc.StatusCode.OK, call.details()
    return Stream(events, "ended")


def sse_stream(
    stack: Stack,
    org: Org,
    path: str,
    params: dict[str, Any],
    attempt: Attempt,
    of_process: str | None = None,
) -> Stream:
    """Reads a watch over SSE in pieces of `attempt.piece` bytes, leaving
    after `attempt.cut_at_byte` of them if set, mid-message or not."""
    stream = Stream([], "ended")
    timeout = httpx.Timeout(
        TIMEOUT_SECONDS, read=ORGANIZATION_SECONDS if of_process else TIMEOUT_SECONDS
    )
    with (
        httpx.Client(base_url=stack.http_url, timeout=timeout) as http,
        http.stream("GET", path, params=params, headers=org.auth(org.reader)) as response,
    ):
        assert response.status_code == 200, (response.status_code, response.read())
        try:
            read_sse(response, attempt, of_process, stream)
        except httpx.ReadTimeout:
            assert of_process, "a process's stream stopped sending"
            stream.ending = "left"
    return stream


def read_sse(
    response: httpx.Response, attempt: Attempt, of_process: str | None, stream: Stream
) -> None:
    """Fills `stream` with what the response brings, until the attempt leaves."""
    messages = received = 0
    buffer = b""
    for piece in response.iter_bytes(attempt.piece):
        received += len(piece)
        *complete, buffer = (buffer + piece).split(b"\n\n")
        for raw in complete:
            messages += 1
            event_id, _, data = raw.rpartition(b"\n")
            assert data.startswith(DATA.encode()), raw[:200]
            message = json.loads(data[len(DATA) :])
            # A process's event comes with its seq as the SSE id; nothing else has one.
            is_event = "event" in message and of_process is None
            expected = f"id: {message['event']['seq']}" if is_event else ""
            assert event_id == expected.encode(), raw[:200]
            if "error" in message:
                assert message["error"]["code"] in RESUMABLE_CODES, message
                stream.ending = f"resumable {message['error']['code']}"
                return
            found = message.get("event")
            if of_process and message.get("process", {}).get("process_id") != of_process:
                found = None
            if found is not None:
                stream.events.append((found["seq"], found["type"], found.get("message", "")))
                if found["type"] == "completed" and of_process is None:
                    stream.ending = "finished"
                    return
            if pause_or_leave(attempt, messages):
                stream.ending = "left"
                return
        if attempt.cut_at_byte is not None and received >= attempt.cut_at_byte:
            event("left an SSE stream mid-message" if buffer else "left an SSE stream")
            stream.ending = "left"
            return


def pause_or_leave(attempt: Attempt, messages: int) -> bool:
    """Waits as the attempt reads; whether it leaves now."""
    time.sleep(attempt.pause)
    if attempt.leave_after is not None and messages >= attempt.leave_after:
        time.sleep(attempt.stall)
        return True
    return False


def logged(stack: Stack, org: Org, process_id: str) -> list[Seen]:
    """The process's event log, page by page, as ListProcessEvents reads it."""
    history: list[Seen] = []
    with httpx.Client(base_url=stack.http_url, timeout=TIMEOUT_SECONDS) as http:
        while True:
            page = http.get(
                f"/api/v1/processes/{process_id}/events",
                params={"after_seq": history[-1][0] if history else 0},
                headers=org.auth(org.reader),
            )
            assert page.status_code == 200, page.text
            events = page.json()["events"]
            if not events:
                return history
            history += [(e["seq"], e["type"], e.get("message", "")) for e in events]


def assert_no_error_logged(stack: Stack, since: int) -> None:
    """No ERROR line and no traceback in the stack's log after byte `since`."""
    with stack.log_path.open("rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    bad = [line for line in lines if " ERROR " in line or "Traceback" in line]
    assert not bad, "\n".join(bad[:40])
