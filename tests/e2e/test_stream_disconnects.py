"""Clients that leave in the middle of a stream, over gRPC and Server-Sent
Events, watching one process or the organization: leaving is normal, so the
stack's log holds no ERROR line and no traceback afterwards.

A client that leaves while the server is sending it a message used to leave
the stream's generators to the garbage collector, which closed them in a task
of their own: four tracebacks and "Task exception was never retrieved" for
each. Each stream here replays a long history at once, so the server is
sending when the client goes; a writer keeps the organization's streams busy.
"""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.chaos.helpers import create_running_processes, wait_until
from tests.support.orgs import Org
from tests.support.stack import Stack, running_stack

# Large events, so that a replay takes many writes: the server is still
# sending when the client leaves.
EVENTS = 40
MESSAGE_CHARACTERS = 8000
# Each way of leaving, this many times: one chance in each to catch the
# server mid-send is enough to show the fault on the code before the fix.
ROUNDS = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own, so that its whole log is this module's doing."""
    path: Path = tmp_path_factory.mktemp("disconnects")
    with running_stack(path, env={"HTK_WORKERS": "2", "HTK_HEARTBEAT_SECONDS": "1"}) as running:
        yield running


@pytest.fixture(scope="module")
def org(stack: Stack) -> Org:
    return stack.new_org("leaving")


@pytest.fixture(scope="module")
def long_history(stack: Stack, org: Org) -> str:
    """A running process with EVENTS large progress events."""
    [process_id] = create_running_processes(stack, org.writer, 1)
    with httpx.Client(base_url=stack.http_url, timeout=30) as http:
        for number in range(EVENTS):
            sent = http.post(
                f"/api/v1/processes/{process_id}/update",
                headers=org.auth(),
                json={"type": "progress", "step": "build", "message": f"{number:04}" * 2000},
            )
            assert sent.status_code == 200, sent.text
    return process_id


@pytest.fixture
def busy(stack: Stack, org: Org, long_history: str) -> Iterator[None]:
    """A writer sending progress updates to a process of the organization until the test ends."""
    [process_id] = create_running_processes(stack, org.writer, 1)
    stop = threading.Event()

    def write() -> None:
        with httpx.Client(base_url=stack.http_url, timeout=30) as http:
            number = 0
            while not stop.wait(0.01):
                number += 1
                http.post(
                    f"/api/v1/processes/{process_id}/update",
                    headers=org.auth(),
                    json={"type": "progress", "step": "build", "message": "x" * (number % 900)},
                )

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join(60)


def leave_grpc(stack: Stack, org: Org, request: Any, method: str, messages: int) -> None:
    """Reads `messages` of a gRPC stream through Envoy, then cancels it."""
    with grpc.insecure_channel(stack.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        call: Any = getattr(stub, method)(request, metadata=org.metadata(org.reader))
        for _ in range(messages):
            next(call)
        call.cancel()


def leave_sse(stack: Stack, org: Org, path: str, params: dict[str, Any], messages: int) -> None:
    """Reads `messages` of a stream over SSE, then closes the connection."""
    with (
        httpx.Client(base_url=stack.http_url, timeout=30) as http,
        http.stream("GET", path, params=params, headers=org.auth(org.reader)) as response,
    ):
        assert response.status_code == 200, response.read()
        read = 0
        for line in response.iter_lines():
            read += line.startswith("data: ")
            if read == messages:
                return


def bad_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]


def test_clients_leaving_mid_stream_log_no_error(
    stack: Stack, org: Org, long_history: str, busy: None
) -> None:
    replay = pb.WatchProcessRequest(process_id=long_history, after_seq=0)
    for round_number in range(ROUNDS):
        leave_grpc(stack, org, replay, "WatchProcess", 1 + round_number)
        leave_grpc(stack, org, pb.WatchProcessesRequest(), "WatchProcesses", 2)
        leave_sse(
            stack,
            org,
            f"/api/v1/processes/{long_history}/watch",
            {"after_seq": 0},
            1 + round_number,
        )
        leave_sse(stack, org, "/api/v1/process-events", {}, 2)

    # Each stream is over once its worker holds none: every generator closed.
    wait_until(lambda: no_streams(stack), 60, "the workers to end the streams")
    assert not bad_lines(stack.log), "\n".join(bad_lines(stack.log)[:40])


def no_streams(stack: Stack) -> bool:
    """Whether the workers hold no stream: at most the writer's update is in flight."""
    return sum(stack.requests_in_flight().values()) <= 1
