"""Idempotency keys on CreateProcess and UpdateProcess, end to end.

REST sends the key as the `Idempotency-Key` header, gRPC as `idempotency-key`
metadata. A retry with the same key and the same request gets the original
response and writes nothing; the same key for another request is
ALREADY_EXISTS (HTTP 409); keys belong to an organization and are remembered
for 24 hours; only acknowledged writes are remembered. What was (not) written
is checked in PostgreSQL.
"""

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import psycopg
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from tests.e2e.test_grpc import (
    Stub,
    assert_invalid_argument,
    create_request,
    rpc_error,
)
from tests.e2e.test_rest_contract import PROCESSES, Json, create_body, ok
from tests.e2e.test_rest_errors import assert_error, assert_invalid_field
from tests.support.orgs import Org
from tests.support.stack import Stack

if TYPE_CHECKING:
    from htk.processes.v1.process_service_pb2_grpc import (
        ProcessServiceAsyncStub as AsyncStub,
    )

ALREADY_EXISTS = 6
CONCURRENT_RETRIES = 10


def conflict_message(key: str) -> str:
    return (
        f"idempotency key {key!r} was already used for a different request;"
        " use a new key for a new request"
    )


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def with_key(org: Org, key: str, token: str | None = None) -> dict[str, str]:
    return org.auth(token) | {"Idempotency-Key": key}


def keyed_metadata(org: Org, key: str) -> tuple[tuple[str, str], ...]:
    return (*org.metadata(), ("idempotency-key", key))


def rest_create(rest: httpx.Client, org: Org, key: str, body: Json) -> httpx.Response:
    return rest.post(PROCESSES, headers=with_key(org, key), json=body)


def rest_update(
    rest: httpx.Client, org: Org, key: str, process_id: str, body: Json
) -> httpx.Response:
    return rest.post(
        f"{PROCESSES}/{process_id}/update", headers=with_key(org, key), content=json.dumps(body)
    )


# --- what the database holds -----------------------------------------------------------


def query_one(stack: Stack, sql: str, *params: Any) -> Any:
    with psycopg.connect(stack.database_url) as connection:
        row = connection.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def process_count(stack: Stack, org: Org) -> int:
    return int(query_one(stack, "SELECT count(*) FROM processes WHERE org_id = %s", org.org_id))


def step_count(stack: Stack, org: Org) -> int:
    return int(
        query_one(
            stack,
            "SELECT count(*) FROM steps JOIN processes USING (process_id) WHERE org_id = %s",
            org.org_id,
        )
    )


def event_count(stack: Stack, process_id: str) -> int:
    return int(
        query_one(stack, "SELECT count(*) FROM process_events WHERE process_id = %s", process_id)
    )


def update_count(stack: Stack, process_id: str) -> int:
    return int(
        query_one(stack, "SELECT update_count FROM processes WHERE process_id = %s", process_id)
    )


def remembered(stack: Stack, org: Org, key: str) -> bytes | None:
    """The response stored under the key, or None if there is no such key."""
    with psycopg.connect(stack.database_url) as connection:
        row = connection.execute(
            "SELECT response FROM idempotency_keys WHERE org_id = %s AND key = %s",
            (org.org_id, key),
        ).fetchone()
    return None if row is None else bytes(row[0])


def age_key(stack: Stack, org: Org, key: str, hours: int) -> None:
    """Moves the key's creation back in time, as if it had been used `hours` ago."""
    with psycopg.connect(stack.database_url) as connection:
        changed = connection.execute(
            "UPDATE idempotency_keys SET created_at = created_at - make_interval(hours => %s)"
            " WHERE org_id = %s AND key = %s",
            (hours, org.org_id, key),
        ).rowcount
    assert changed == 1


# --- REST -----------------------------------------------------------------------------------


def test_rest_a_retried_create_returns_the_original_and_writes_nothing(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    key = new_key()
    first = ok(rest_create(rest, org, key, create_body()))

    again = ok(rest_create(rest, org, key, create_body()))

    assert again == first  # the same process_id, started_at and task ids
    assert process_count(stack, org) == 1
    assert step_count(stack, org) == len(first["step_defs"])
    # The response is stored with the key: the Process message of that creation.
    stored = remembered(stack, org, key)
    assert stored is not None
    assert pb.Process.FromString(stored).process_id == first["process_id"]


def test_rest_the_same_request_in_other_json_is_still_the_same_request(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    # The request is compared as the message it parses to, not as bytes.
    key = new_key()
    body = create_body()
    first = ok(rest_create(rest, org, key, body))
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    again = rest.post(
        PROCESSES,
        headers=with_key(org, key) | {"Content-Type": "application/json"},
        content=reordered,
    )
    assert ok(again) == first
    assert process_count(stack, org) == 1


def test_rest_a_retried_update_returns_the_original_ack_and_writes_nothing(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    process_id = ok(rest.post(PROCESSES, headers=org.auth(), json=create_body()))["process_id"]
    key = new_key()
    body = {"type": "step_started", "step": "build", "detail": "runner 7"}
    first = ok(rest_update(rest, org, key, process_id, body))

    # Without the key, starting a running step again would be a 400; with it, a replay.
    again = ok(rest_update(rest, org, key, process_id, body))

    assert again == first  # the same timestamp to the nanosecond
    assert (event_count(stack, process_id), update_count(stack, process_id)) == (1, 1)
    stored = remembered(stack, org, key)
    assert stored is not None
    assert pb.UpdateProcessResponse.FromString(stored).update_type == "step_started"


@pytest.mark.parametrize(
    "changed",
    [
        {"name": "Deploy v2.1.1"},
        {"namespace": "releases"},
        {"step_defs": [{"key": "only", "label": "Only"}]},
    ],
    ids=["name", "namespace", "steps"],
)
def test_rest_the_key_reused_for_another_create_is_a_409_naming_it(
    stack: Stack, rest: httpx.Client, org: Org, changed: Json
) -> None:
    key = new_key()
    first = ok(rest_create(rest, org, key, create_body()))

    response = rest_create(rest, org, key, create_body() | changed)

    body = assert_error(response, 409, ALREADY_EXISTS)
    assert body["message"] == conflict_message(key)
    assert process_count(stack, org) == 1
    # The conflict leaves the key's first response in place.
    assert ok(rest_create(rest, org, key, create_body())) == first


def test_rest_the_key_reused_for_another_update_is_a_409_and_changes_nothing(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    process_id = ok(rest.post(PROCESSES, headers=org.auth(), json=create_body()))["process_id"]
    key = new_key()
    ok(rest_update(rest, org, key, process_id, {"type": "step_started", "step": "build"}))

    response = rest_update(rest, org, key, process_id, {"type": "step_started", "step": "test"})

    assert assert_error(response, 409, ALREADY_EXISTS)["message"] == conflict_message(key)
    assert (event_count(stack, process_id), update_count(stack, process_id)) == (1, 1)
    timeline = ok(rest.get(f"{PROCESSES}/{process_id}", headers=org.auth()))["timeline"]
    assert [step["status"] for step in timeline] == ["running", "pending", "pending", "pending"]


def test_rest_a_create_key_reused_for_an_update_is_a_409(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    key = new_key()
    process_id = ok(rest_create(rest, org, key, create_body()))["process_id"]
    response = rest_update(rest, org, key, process_id, {"type": "completed"})
    assert assert_error(response, 409, ALREADY_EXISTS)["message"] == conflict_message(key)
    assert event_count(stack, process_id) == 0


def test_keys_belong_to_the_organization(stack: Stack, rest: httpx.Client, org: Org) -> None:
    other = stack.new_org("other")
    key = new_key()
    mine = ok(rest_create(rest, org, key, create_body()))

    # The same key and the same body in another organization: a write of its own.
    theirs = ok(rest_create(rest, other, key, create_body()))
    # And another body there is no conflict either.
    ok(rest_create(rest, other, new_key(), create_body(name="Other")))

    assert theirs["process_id"] != mine["process_id"]
    assert theirs["namespace"] == f"{other.org_id}.deployments"
    assert (process_count(stack, org), process_count(stack, other)) == (1, 2)
    # Each organization replays its own response.
    assert ok(rest_create(rest, org, key, create_body())) == mine
    assert ok(rest_create(rest, other, key, create_body())) == theirs


def test_a_rejected_create_is_not_remembered(stack: Stack, rest: httpx.Client, org: Org) -> None:
    key = new_key()
    assert_invalid_field(rest_create(rest, org, key, create_body(name="")), "name")
    assert remembered(stack, org, key) is None

    # The corrected retry, same key: created, not a 409.
    created = ok(rest_create(rest, org, key, create_body()))
    assert process_count(stack, org) == 1
    assert ok(rest_create(rest, org, key, create_body())) == created


def test_an_update_rejected_by_the_process_state_is_not_remembered(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    process_id = ok(rest.post(PROCESSES, headers=org.auth(), json=create_body()))["process_id"]
    key = new_key()
    # Refused after the key is claimed (the step is not running): the claim rolls back.
    refused = rest_update(
        rest, org, key, process_id, {"type": "progress", "step": "build", "percent": 5}
    )
    assert_error(refused, 400, 9)
    assert remembered(stack, org, key) is None

    fixed = {"type": "step_started", "step": "build"}
    first = ok(rest_update(rest, org, key, process_id, fixed))
    assert ok(rest_update(rest, org, key, process_id, fixed)) == first
    assert (event_count(stack, process_id), update_count(stack, process_id)) == (1, 1)


def test_an_update_of_a_missing_process_is_not_remembered(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    key = new_key()
    missing = rest_update(rest, org, key, str(uuid.uuid4()), {"type": "completed"})
    assert_error(missing, 404, 5)
    assert remembered(stack, org, key) is None
    process_id = ok(rest.post(PROCESSES, headers=org.auth(), json=create_body()))["process_id"]
    ok(rest_update(rest, org, key, process_id, {"type": "completed"}))


@pytest.mark.parametrize(
    "key",
    ["two words", "k" * 201, "tab\tkey", "caf\xe9"],
    ids=["space", "201-characters", "tab", "latin-1"],
)
def test_rest_a_malformed_key_is_a_400_naming_the_header(
    stack: Stack, rest: httpx.Client, org: Org, key: str
) -> None:
    # As bytes: a client may send any octets; the server must refuse them, naming the header.
    headers = [
        (b"authorization", f"Bearer {org.writer}".encode()),
        (b"idempotency-key", key.encode("latin-1")),
    ]
    response = rest.post(PROCESSES, headers=headers, json=create_body())
    assert_invalid_field(response, "idempotency-key")
    assert response.json()["message"] == (
        "idempotency-key: must be 1-200 printable ASCII characters without spaces"
    )
    assert process_count(stack, org) == 0


def test_rest_a_key_of_200_characters_is_accepted(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    key = "~" * 180 + uuid.uuid4().hex[:20]
    first = ok(rest_create(rest, org, key, create_body()))
    assert ok(rest_create(rest, org, key, create_body())) == first
    assert process_count(stack, org) == 1


def test_a_key_older_than_the_retention_is_free_again(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    key = new_key()
    first = ok(rest_create(rest, org, key, create_body()))
    age_key(stack, org, key, hours=23)
    # 23 hours old: still remembered.
    assert ok(rest_create(rest, org, key, create_body())) == first
    assert_error(rest_create(rest, org, key, create_body(name="Other")), 409, ALREADY_EXISTS)

    age_key(stack, org, key, hours=2)  # 25 hours old now
    # Expired: another request under the key is a new write, not a 409 ...
    second = ok(rest_create(rest, org, key, create_body(name="Other")))
    assert second["process_id"] != first["process_id"]
    assert process_count(stack, org) == 2
    # ... and the key now guards that write, for another 24 hours.
    stored = remembered(stack, org, key)
    assert stored is not None and pb.Process.FromString(stored).process_id == second["process_id"]
    assert ok(rest_create(rest, org, key, create_body(name="Other"))) == second
    assert_error(rest_create(rest, org, key, create_body()), 409, ALREADY_EXISTS)


def test_an_expired_key_with_the_same_request_writes_again(
    stack: Stack, rest: httpx.Client, org: Org
) -> None:
    # After the retention the key is forgotten, request and all: the same body creates anew.
    key = new_key()
    first = ok(rest_create(rest, org, key, create_body()))
    age_key(stack, org, key, hours=25)
    second = ok(rest_create(rest, org, key, create_body()))
    assert second["process_id"] != first["process_id"]
    assert process_count(stack, org) == 2


# --- gRPC -----------------------------------------------------------------------------------


def test_grpc_a_retried_create_and_update_replay_and_write_nothing(
    stack: Stack, grpc_stub: Stub, org: Org
) -> None:
    create_key, update_key = new_key(), new_key()
    created = grpc_stub.CreateProcess(create_request(), metadata=keyed_metadata(org, create_key))
    assert grpc_stub.CreateProcess(create_request(), metadata=keyed_metadata(org, create_key)) == (
        created
    )
    assert process_count(stack, org) == 1

    request = pb.UpdateProcessRequest(process_id=created.process_id, type="failed", error="boom")
    ack = grpc_stub.UpdateProcess(request, metadata=keyed_metadata(org, update_key))
    # The process has failed: without the key a second `failed` would be FAILED_PRECONDITION.
    assert grpc_stub.UpdateProcess(request, metadata=keyed_metadata(org, update_key)) == ack
    assert (event_count(stack, created.process_id), update_count(stack, created.process_id)) == (
        1,
        1,
    )


def test_grpc_the_key_reused_for_another_request_is_already_exists(
    stack: Stack, grpc_stub: Stub, org: Org
) -> None:
    key = new_key()
    grpc_stub.CreateProcess(create_request(), metadata=keyed_metadata(org, key))
    error = rpc_error(
        grpc.StatusCode.ALREADY_EXISTS,
        lambda: grpc_stub.CreateProcess(
            create_request(name="Deploy v3"), metadata=keyed_metadata(org, key)
        ),
    )
    assert error.details() == conflict_message(key)
    assert process_count(stack, org) == 1


def test_rest_and_grpc_share_the_key(
    stack: Stack, rest: httpx.Client, grpc_stub: Stub, org: Org
) -> None:
    # The header is the metadata: a REST create retried over gRPC is the same request.
    key = new_key()
    created = ok(
        rest_create(
            rest, org, key, create_body(steps=[{"key": "build", "label": "Build", "human": False}])
        )
    )
    request = pb.CreateProcessRequest(
        namespace="deployments",
        name="Deploy v2.1.0",
        step_defs=[pb.StepDef(key="build", label="Build")],
    )
    again = grpc_stub.CreateProcess(request, metadata=keyed_metadata(org, key))
    assert again.process_id == created["process_id"]
    assert process_count(stack, org) == 1


@pytest.mark.parametrize("key", ["", "two words", "k" * 201], ids=["empty", "space", "201"])
def test_grpc_a_malformed_key_is_invalid_argument(
    stack: Stack, grpc_stub: Stub, org: Org, key: str
) -> None:
    error = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: grpc_stub.CreateProcess(create_request(), metadata=keyed_metadata(org, key)),
    )
    assert_invalid_argument(error, "idempotency-key")
    assert process_count(stack, org) == 0


# --- concurrent duplicates ------------------------------------------------------------------


async def test_concurrent_duplicate_creates_apply_once(stack: Stack, org: Org) -> None:
    key = new_key()
    async with grpc.aio.insecure_channel(stack.envoy_target) as channel:
        stub: AsyncStub = pb_grpc.ProcessServiceStub(channel)
        responses = await asyncio.gather(
            *(
                stub.CreateProcess(create_request(), metadata=keyed_metadata(org, key))
                for _ in range(CONCURRENT_RETRIES)
            )
        )
    assert len({response.SerializeToString(deterministic=True) for response in responses}) == 1
    assert process_count(stack, org) == 1
    assert step_count(stack, org) == len(responses[0].step_defs)


async def test_concurrent_duplicate_updates_apply_once(stack: Stack, org: Org) -> None:
    async with httpx.AsyncClient(base_url=stack.http_url, timeout=60) as client:
        created = await client.post(PROCESSES, headers=org.auth(), json=create_body())
        process_id = ok(created)["process_id"]
        key = new_key()
        body = json.dumps({"type": "step_completed", "step": "build", "data": {"tag": "v2"}})
        responses = await asyncio.gather(
            *(
                client.post(
                    f"{PROCESSES}/{process_id}/update", headers=with_key(org, key), content=body
                )
                for _ in range(CONCURRENT_RETRIES)
            )
        )
    acks = [ok(response) for response in responses]
    assert all(ack == acks[0] for ack in acks), acks
    assert (event_count(stack, process_id), update_count(stack, process_id)) == (1, 1)
