"""One tenant trying to take every watch slot, against the real stack: a
read-only token opening many streams on one HTTP/2 connection and on more,
and a second token of its organization. The caps per token, per
organization and per connection hold, and other organizations' calls are
answered and their streams opened meanwhile (issue 18, item 4).
"""

import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.support import raw_h2
from tests.support.sse import kind, messages
from tests.support.stack import Stack, running_stack

WORKERS = 2
PER_TOKEN = 10  # an instance's: 5 on each worker
PER_ORG = 16  # 8 on each worker
PER_CONNECTION = 20
LIMITS_ENV = {
    "HTK_WORKERS": str(WORKERS),
    "HTK_MAX_WATCHERS": "40",
    "HTK_MAX_WATCHERS_PER_TOKEN": str(PER_TOKEN),
    "HTK_MAX_WATCHERS_PER_ORG": str(PER_ORG),
    "HTK_MAX_STREAMS_PER_CONNECTION": str(PER_CONNECTION),
}
# Each call of the test ends long before this; a guard against a hang only.
CALL_SECONDS = 20
# The issue's bound for other tenants' calls while an attack runs.
P95_BOUND_SECONDS = 0.1
SAMPLES = 60


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("watch-limits"), env=LIMITS_ENV) as stack:
        yield stack


def connection(stack: Stack) -> grpc.Channel:
    """A channel of its own HTTP/2 connection (grpc would share one per target)."""
    return grpc.insecure_channel(
        stack.envoy_target, options=[("grpc.use_local_subchannel_pool", 1)]
    )


def open_streams(
    channel: grpc.Channel, token: str, count: int, streams: ExitStack
) -> tuple[int, list[str]]:
    """Opens `count` organization-wide streams with `token` on `channel`, one
    after the other, keeping those accepted open: how many were, and the
    refusals' messages."""
    stub = pb_grpc.ProcessServiceStub(channel)
    accepted, refusals = 0, []
    for _ in range(count):
        # grpc's stream calls are iterators at run time, not in its type stubs.
        call: Any = stub.WatchProcesses(
            pb.WatchProcessesRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=CALL_SECONDS,
        )
        streams.callback(call.cancel)
        try:
            assert next(call).HasField("heartbeat")
            accepted += 1
        except grpc.RpcError as refused:
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
            refusals.append(refused.details() or "")
    return accepted, refusals


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def test_one_token_cannot_take_every_stream_and_others_are_served_meanwhile(
    limited: Stack,
) -> None:
    attacker = limited.new_org("attacker")
    victim = limited.new_org("victim")
    with httpx.Client(base_url=limited.http_url, timeout=CALL_SECONDS) as http:
        created = http.post(
            "/api/v1/processes",
            headers=victim.auth(),
            json={"namespace": "ops", "name": "Deploy", "step_defs": [{"key": "a", "label": "A"}]},
        )
        assert created.status_code == 200, created.text
        process_id = created.json()["process_id"]

        with ExitStack() as streams:
            # Many streams on one connection, then on three more.
            first = streams.enter_context(connection(limited))
            accepted, refusals = open_streams(first, attacker.reader, 3 * PER_CONNECTION, streams)
            for _ in range(3):
                more = streams.enter_context(connection(limited))
                more_accepted, more_refusals = open_streams(
                    more, attacker.reader, PER_TOKEN, streams
                )
                accepted += more_accepted
                refusals += more_refusals
            # Its organization's other token gets what is left of the organization's share.
            second = attacker.writer
            org_accepted, org_refusals = open_streams(first, second, PER_ORG, streams)

            # Another organization, meanwhile: its unary calls, REST and gRPC,
            # and a stream of its own.
            rest_seconds, grpc_seconds = [], []
            with connection(limited) as own:
                stub = pb_grpc.ProcessServiceStub(own)
                for _ in range(SAMPLES):
                    started = time.perf_counter()
                    got = http.get(f"/api/v1/processes/{process_id}", headers=victim.auth())
                    rest_seconds.append(time.perf_counter() - started)
                    assert got.status_code == 200, got.text
                    started = time.perf_counter()
                    stub.GetProcess(
                        pb.GetProcessRequest(process_id=process_id),
                        metadata=victim.metadata(victim.reader),
                        timeout=CALL_SECONDS,
                    )
                    grpc_seconds.append(time.perf_counter() - started)
                with http.stream(
                    "GET", f"/api/v1/processes/{process_id}/watch", headers=victim.auth()
                ) as watched:
                    assert watched.status_code == 200, watched.read()
                    assert kind(next(messages(watched))) == "process"
                victims: Any = stub.WatchProcesses(
                    pb.WatchProcessesRequest(), metadata=victim.metadata(), timeout=CALL_SECONDS
                )
                assert next(victims).HasField("heartbeat")
                victims.cancel()

    assert 0 < accepted <= PER_TOKEN
    assert len(refusals) == 3 * PER_CONNECTION + 3 * PER_TOKEN - accepted
    assert all("(the limit per token)" in message for message in refusals), set(refusals)
    assert 0 < accepted + org_accepted <= PER_ORG
    assert org_refusals and all(
        "(the limit per organization)" in message or "(the limit per token)" in message
        for message in org_refusals
    ), set(org_refusals)
    assert p95(rest_seconds) < P95_BOUND_SECONDS, sorted(rest_seconds)[-5:]
    assert p95(grpc_seconds) < P95_BOUND_SECONDS, sorted(grpc_seconds)[-5:]


def test_envoy_tells_each_client_connection_how_many_streams_it_may_open(limited: Stack) -> None:
    """Envoy's first SETTINGS frame carries the limit (HTK_MAX_STREAMS_PER_CONNECTION);
    a conforming client opens no more, and Envoy resets a stream past it."""
    sock = raw_h2.grpc_call(
        ("127.0.0.1", int(limited.env["HTK_HTTP_PORT"])),
        "/htk.processes.v1.ProcessService/GetCaller",
        b"",
    )
    with sock:
        settings = next(
            frame
            for frame in raw_h2.frames(sock)
            if frame.kind == raw_h2.SETTINGS and not frame.flags & raw_h2.ACK
        ).settings()
    assert settings[raw_h2.SETTINGS_MAX_CONCURRENT_STREAMS] == PER_CONNECTION
