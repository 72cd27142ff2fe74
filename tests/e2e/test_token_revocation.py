"""A revoked token is refused everywhere within a second: on every worker of
two instances (`htk run` each) sharing one PostgreSQL, over REST through
Envoy and native gRPC, although each worker had it in its cache; whether
`htk token revoke` or an operator's SQL revoked it."""

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import grpc
import httpx
import psycopg
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.e2e.test_rest_contract import PROCESSES, create_body
from tests.support.stack import Stack
from tests.support.tokens import created_token

# What the README promises.
REVOCATION_SECONDS = 1.0
# Envoy takes turns over the workers: this many calls reach each of them.
CALLS_PER_PATH = 10

# One path to the API: a call of GetProcess, and whether it was refused as
# unauthenticated (False: it succeeded; anything else fails the test).
Path = Callable[[], bool]


def rest_path(client: httpx.Client, process_id: str, token: str) -> Path:
    def call() -> bool:
        response = client.get(f"{PROCESSES}/{process_id}", headers=bearer(token))
        assert response.status_code in (200, 401), response.text
        return response.status_code == 401

    return call


def grpc_path(channel: grpc.Channel, process_id: str, token: str) -> Path:
    stub = pb_grpc.ProcessServiceStub(channel)

    def call() -> bool:
        request = pb.GetProcessRequest(process_id=process_id)
        try:
            stub.GetProcess(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            return True
        return False

    return call


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def paths_and_token(two_instances: tuple[Stack, Stack]) -> Iterator[tuple[list[Path], str]]:
    """REST and gRPC through each instance's Envoy, calling with a reader
    token each worker has cached; and that token's id."""
    a, b = two_instances
    assert len(a.workers()) >= 2 and len(b.workers()) >= 2
    org_id = f"revoke-{uuid.uuid4().hex[:12]}"
    writer = a.token(org_id)
    token_id, token = created_token(a.env, org_id, scopes="", name="to-revoke")

    with ExitStack() as stack:
        paths = []
        for instance in (a, b):
            rest = stack.enter_context(httpx.Client(base_url=instance.http_url, timeout=30))
            process = rest.post(PROCESSES, headers=bearer(writer), json=create_body())
            assert process.status_code == 200, process.text
            process_id = process.json()["process_id"]
            channel = stack.enter_context(grpc.insecure_channel(instance.envoy_target))
            paths += [rest_path(rest, process_id, token), grpc_path(channel, process_id, token)]
        for path in paths:
            for _ in range(CALLS_PER_PATH):
                assert not path()
        yield paths, str(token_id)


def revoke_by_sql(stack: Stack, token_id: str) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as connection:
        connection.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s", [token_id]
        )


@pytest.mark.parametrize("by", ["htk token revoke", "SQL"])
def test_a_revoked_token_is_refused_on_every_worker_of_every_instance_within_a_second(
    two_instances: tuple[Stack, Stack], paths_and_token: tuple[list[Path], str], by: str
) -> None:
    _, b = two_instances
    paths, token_id = paths_and_token
    if by == "SQL":
        revoke_by_sql(b, token_id)
    else:
        revoked = b.htk("token", "revoke", token_id)
        assert revoked.returncode == 0, revoked.stderr
    revoked_at = time.monotonic()

    # Each path is called until it is refused CALLS_PER_PATH times in a row,
    # by every worker behind it then; a call served after the limit fails.
    for index, path in enumerate(paths):
        refused_in_a_row = 0
        while refused_in_a_row < CALLS_PER_PATH:
            if path():
                refused_in_a_row += 1
                continue
            refused_in_a_row = 0
            elapsed = time.monotonic() - revoked_at
            assert elapsed < REVOCATION_SECONDS, f"path {index} still served after {elapsed:.2f} s"
