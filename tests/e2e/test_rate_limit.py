"""Envoy's per-token rate limit, on a stack of its own limited to 5 requests a
second with bursts of 5 (the session stack runs unlimited).

Each Authorization value has its own token bucket: a burst over the limit
gets 429 with a JSON google.rpc.Status (code 8) and `Retry-After` over REST,
RESOURCE_EXHAUSTED over gRPC, while other tokens go on unhindered. No
assertion depends on timing: bursts are sent at once and are several times
the bucket, and "works again" is waited for, not timed.
"""

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.e2e.test_rest_contract import PROCESSES
from tests.support.sse import messages
from tests.support.stack import Stack, running_stack

RATE = 5
BURST = 5
# Four times the bucket at once: even if a refill lands mid-burst, some are refused.
REQUESTS_IN_BURST = 4 * BURST
RESOURCE_EXHAUSTED = 8
TOO_MANY = (
    "too many requests with this token or from this address;"
    " retry after the number of seconds in Retry-After"
)
RECOVERY_ATTEMPTS = 30


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"HTK_RATE_LIMIT_PER_SECOND": str(RATE), "HTK_RATE_LIMIT_BURST": str(BURST)}
    data_dir: Path = tmp_path_factory.mktemp("rate-limited")
    with running_stack(data_dir, env=env) as stack:
        yield stack


def reader(stack: Stack) -> str:
    """A fresh token of a fresh organization: a bucket no other test has touched."""
    return stack.token(f"rl-{uuid.uuid4().hex[:12]}", scopes="")


def rest_burst(stack: Stack, *requests: tuple[str | None, int]) -> list[list[httpx.Response]]:
    """Sends all requests at once: for each (token, count), `count` GETs with that token.
    Returns the responses per token, in the order given."""

    async def send() -> list[list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=stack.http_url, timeout=60) as client:

            async def many(token: str | None, count: int) -> list[httpx.Response]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return list(
                    await asyncio.gather(
                        *(client.get(PROCESSES, headers=headers) for _ in range(count))
                    )
                )

            return list(await asyncio.gather(*(many(token, n) for token, n in requests)))

    return asyncio.run(send())


def assert_too_many_requests(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "1"
    assert "grpc-status" not in response.headers
    assert response.json() == {"code": RESOURCE_EXHAUSTED, "message": TOO_MANY, "details": []}


def wait_until_allowed(stack: Stack, token: str) -> httpx.Response:
    """Retries as a client told `Retry-After: 1` would, until the bucket has refilled."""
    with httpx.Client(base_url=stack.http_url, timeout=60) as client:
        for _ in range(RECOVERY_ATTEMPTS):
            response = client.get(PROCESSES, headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 429:
                return response
            time.sleep(float(response.headers["retry-after"]))
    pytest.fail(f"still limited after {RECOVERY_ATTEMPTS} retries")


def test_rest_a_burst_over_the_limit_gets_429_and_others_are_not_limited(
    limited: Stack,
) -> None:
    noisy, quiet = reader(limited), reader(limited)

    # At the same moment: a burst four times the bucket with one token, and
    # a bucketful with another.
    responses, quiet_responses = rest_burst(limited, (noisy, REQUESTS_IN_BURST), (quiet, BURST))

    codes = [response.status_code for response in responses]
    assert set(codes) == {200, 429}, codes
    # At most the bucket plus refills during the burst get through; most are refused.
    assert codes.count(200) < REQUESTS_IN_BURST // 2, codes
    for response in responses:
        if response.status_code == 429:
            assert_too_many_requests(response)

    # The other token has a bucket of its own: none of its requests is refused.
    assert [response.status_code for response in quiet_responses] == [200] * BURST

    # The noisy token works again once its bucket refills.
    recovered = wait_until_allowed(limited, noisy)
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["total"] == 0


async def test_grpc_a_burst_over_the_limit_is_resource_exhausted(limited: Stack) -> None:
    token = reader(limited)
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(limited.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)

        async def call() -> grpc.StatusCode:
            try:
                await stub.ListProcesses(pb.ListProcessesRequest(), metadata=metadata)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(call() for _ in range(REQUESTS_IN_BURST)))
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes.count(grpc.StatusCode.OK) < REQUESTS_IN_BURST // 2, codes


async def test_rest_and_grpc_calls_with_one_token_share_its_bucket(limited: Stack) -> None:
    token = reader(limited)
    (responses,) = await asyncio.to_thread(rest_burst, limited, (token, REQUESTS_IN_BURST))
    assert 429 in [response.status_code for response in responses]
    # gRPC sends the same Authorization value: the same, now empty, bucket.
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(limited.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        results = await asyncio.gather(
            *(
                stub.ListProcesses(pb.ListProcessesRequest(), metadata=metadata)
                for _ in range(REQUESTS_IN_BURST)
            ),
            return_exceptions=True,
        )
    refused = [
        result
        for result in results
        if isinstance(result, grpc.aio.AioRpcError)
        and result.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    ]
    assert refused, results


def test_requests_without_a_token_are_left_to_the_server(limited: Stack) -> None:
    # Within the budget all calls without a token share (tests/e2e/
    # test_tenant_isolation.py exhausts it), the server answers 401 each time.
    (responses,) = rest_burst(limited, (None, REQUESTS_IN_BURST))
    assert [response.status_code for response in responses] == [401] * REQUESTS_IN_BURST


def test_a_stream_counts_once_against_the_limit_however_much_it_carries(limited: Stack) -> None:
    """Opening a watch is one request; the messages it carries are not requests."""
    org_id = f"rl-{uuid.uuid4().hex[:12]}"
    writers = [limited.token(org_id) for _ in range(3)]
    watcher = limited.token(org_id, scopes="")
    with httpx.Client(base_url=limited.http_url, timeout=60) as client:
        created = client.post(
            PROCESSES,
            headers={"Authorization": f"Bearer {writers[0]}"},
            json={"namespace": "rl", "name": "Run", "step_defs": [{"key": "a", "label": "A"}]},
        )
        process_id = created.json()["process_id"]
        path = f"{PROCESSES}/{process_id}"
        start = {"type": "step_started", "step": "a"}
        client.post(f"{path}/update", headers={"Authorization": f"Bearer {writers[0]}"}, json=start)
        with client.stream(
            "GET", f"{path}/watch", headers={"Authorization": f"Bearer {watcher}"}
        ) as stream:
            assert stream.status_code == 200
            received = messages(stream)
            assert "process" in next(received)
            # More updates than a bucket holds, each writer within its own.
            updates = [(writer, percent) for writer in writers for percent in range(BURST - 2)]
            for writer, percent in updates:
                sent = client.post(
                    f"{path}/update",
                    headers={"Authorization": f"Bearer {writer}"},
                    json={"type": "progress", "step": "a", "percent": percent},
                )
                assert sent.status_code == 200, sent.text
            carried = [next(received) for _ in updates]
        assert len(carried) > BURST
        assert all("event" in message for message in carried)

        # The stream took one request of the watcher's bucket: the rest are left.
        after = [
            client.get(path, headers={"Authorization": f"Bearer {watcher}"})
            for _ in range(BURST - 1)
        ]
        assert [response.status_code for response in after] == [200] * (BURST - 1)
