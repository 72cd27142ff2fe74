"""Request logs as an operator reads them: a request id on every response,
one access log line per request with what it needs and nothing it must not
hold, JSON lines for log shippers, a quiet start and quiet token commands."""

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.edge.constants import INTERNAL_HEADER_PREFIX
from tests.support.stack import Stack, running_stack

# Generous: Envoy writes its access log out at least once a second.
LOG_WAIT_SECONDS = 30.0
MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def json_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("json-logs"), env={"HTK_LOG_FORMAT": "json"}) as s:
        yield s


@pytest.fixture(scope="module")
def caller(json_stack: Stack) -> tuple[str, str]:
    """A token of the stack and its name, which is not plain ASCII."""
    name = f"Zoë ops {uuid.uuid4().hex[:6]}"
    result = json_stack.htk(
        "token", "create", "--org", "logs", "--scopes", "processes:write", "--name", name
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), name


def _entries(stack: Stack) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stack.log.splitlines() if line.strip()]


def _access_entries(stack: Stack, *request_ids: str) -> dict[str, list[dict[str, Any]]]:
    """The access log's entries of each request id, once every request sent
    before this call has been logged: Envoy logs a request when it ends, in
    order, so once a request sent now shows, the earlier ones have."""
    marker = f"marker-{uuid.uuid4().hex}"
    httpx.get(f"{stack.http_url}/", headers={"x-request-id": marker}, timeout=30)
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        access = [entry for entry in _entries(stack) if entry["logger"] == "envoy.access"]
        if any(entry["request_id"] == marker for entry in access):
            return {
                rid: [entry for entry in access if entry["request_id"] == rid]
                for rid in request_ids
            }
        assert time.monotonic() < deadline, f"no access log line for {marker}:\n{stack.log}"
        time.sleep(0.2)


def test_every_response_carries_a_request_id(json_stack: Stack, caller: tuple[str, str]) -> None:
    token, _ = caller
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=json_stack.http_url, timeout=30) as client:
        responses = {
            "REST JSON": client.get("/api/v1/caller", headers=auth),
            "REST error from the server": client.get(f"/api/v1/processes/{MISSING}", headers=auth),
            "Envoy's 404": client.get("/no/such/path"),
            "Envoy's 405": client.delete("/api/v1/caller", headers=auth),
            "the dashboard": client.get("/"),
        }
        with client.stream("GET", "/api/v1/process-events", headers=auth) as stream:
            responses["SSE"] = stream
        kept = client.get("/api/v1/caller", headers={**auth, "x-request-id": "client-id.42"})
    for kind, response in responses.items():
        assert response.headers.get("x-request-id"), kind
    assert kept.headers["x-request-id"] == "client-id.42"
    assert len({response.headers["x-request-id"] for response in responses.values()}) == len(
        responses
    )

    with grpc.insecure_channel(json_stack.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        _, call = stub.ListProcesses.with_call(pb.ListProcessesRequest(), metadata=metadata)
        assert dict(call.initial_metadata())["x-request-id"]
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetProcess(pb.GetProcessRequest(process_id=MISSING), metadata=metadata)
        error = failed.value
        assert isinstance(error, grpc.Call)  # a failed call's error is the call
        assert dict((*error.initial_metadata(), *error.trailing_metadata()))["x-request-id"]


def test_a_malformed_request_id_is_refused_naming_it(json_stack: Stack) -> None:
    refused = httpx.get(
        f"{json_stack.http_url}/api/v1/caller", headers={"x-request-id": "two words"}, timeout=30
    )
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("x-request-id: ")
    with (
        grpc.insecure_channel(json_stack.envoy_target) as channel,
        pytest.raises(grpc.RpcError) as failed,
    ):
        pb_grpc.ProcessServiceStub(channel).ListProcesses(
            pb.ListProcessesRequest(), metadata=(("x-request-id", "x" * 201),)
        )
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-request-id" in (failed.value.details() or "")


def test_one_line_per_request_without_the_query_values_or_the_token(
    json_stack: Stack, caller: tuple[str, str]
) -> None:
    token, name = caller
    auth = {"Authorization": f"Bearer {token}"}
    secret = f"secret-term-{uuid.uuid4().hex}"
    rest_id, missing_id, grpc_id, grpc_listed_id = (f"test-{uuid.uuid4().hex}" for _ in range(4))
    listed = httpx.get(
        f"{json_stack.http_url}/api/v1/processes",
        params={"status": "running", "search": secret},
        headers={**auth, "x-request-id": rest_id},
        timeout=30,
    )
    assert listed.status_code == 200
    missing = httpx.get(
        f"{json_stack.http_url}/api/v1/processes/{MISSING}",
        headers={**auth, "x-request-id": missing_id},
        timeout=30,
    )
    assert missing.status_code == 404
    with grpc.insecure_channel(json_stack.envoy_target) as channel:
        with pytest.raises(grpc.RpcError):
            pb_grpc.ProcessServiceStub(channel).GetProcess(
                pb.GetProcessRequest(process_id=MISSING),
                metadata=(("authorization", f"Bearer {token}"), ("x-request-id", grpc_id)),
            )
        pb_grpc.ProcessServiceStub(channel).ListProcesses(
            pb.ListProcessesRequest(),
            metadata=(("authorization", f"Bearer {token}"), ("x-request-id", grpc_listed_id)),
        )

    logged = _access_entries(json_stack, rest_id, missing_id, grpc_id, grpc_listed_id)
    assert [len(entries) for entries in logged.values()] == [1, 1, 1, 1], logged
    [rest], [not_found], [grpc_call], [grpc_listed] = logged.values()
    assert rest["method"] == "GET"
    assert rest["path"] == "/api/v1/processes"
    assert rest["query"] == "status&search"
    assert (rest["status"], str(rest["grpc_status"])) == (200, "0")
    assert rest["token_name"] == "Zo%C3%AB%20ops%20" + name.rsplit(" ", 1)[1]
    assert rest["bytes_out"] == len(listed.content)
    assert isinstance(rest["duration_ms"], int)
    assert rest["time"].endswith("Z")
    assert rest["client"] == "127.0.0.1"
    assert rest["trace_id"] in (None, "", "-")  # tracing is off
    assert (not_found["status"], str(not_found["grpc_status"])) == (404, "5")
    assert not_found["path"] == f"/api/v1/processes/{MISSING}"
    assert grpc_call["path"] == "/htk.processes.v1.ProcessService/GetProcess"
    assert (grpc_call["status"], str(grpc_call["grpc_status"])) == (200, "5")
    # The name comes from the trailers of a call answered (REST or gRPC),
    # from the headers of a status sent alone.
    assert grpc_call["token_name"] == rest["token_name"]
    assert not_found["token_name"] == rest["token_name"]
    assert (grpc_listed["status"], str(grpc_listed["grpc_status"])) == (200, "0")
    assert grpc_listed["token_name"] == rest["token_name"]
    assert secret not in json_stack.log
    assert token not in json_stack.log


def test_the_token_name_stays_out_of_responses(json_stack: Stack, caller: tuple[str, str]) -> None:
    token, _ = caller
    response = httpx.get(
        f"{json_stack.http_url}/api/v1/caller",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert not [header for header in response.headers if header.startswith(INTERNAL_HEADER_PREFIX)]


def test_json_logs_parse_line_by_line(json_stack: Stack, caller: tuple[str, str]) -> None:
    _access_entries(json_stack)
    lines = [line for line in json_stack.log.splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger"} <= entry.keys(), line


def test_the_start_says_what_a_person_needs_and_nothing_else(json_stack: Stack) -> None:
    """Before the first request of a test, the log holds the readiness probes'
    access lines and one line of htk's own."""
    own = [
        entry
        for entry in _entries(json_stack)
        if entry["logger"] != "envoy.access" and entry["level"] in ("INFO", "info")
    ]
    [ready] = own[:1]
    assert ready["message"].startswith("htk ")
    assert f"http://localhost:{json_stack.env['HTK_HTTP_PORT']}/" in ready["message"]
    assert "database embedded in" in ready["message"]
    assert "deprecated" not in json_stack.log.lower()


def test_text_access_lines_are_one_per_request(stack: Stack, tmp_path: Path) -> None:
    """The default format: readable lines, one per request, with its id."""
    request_id = f"text-{uuid.uuid4().hex}"
    httpx.get(f"{stack.http_url}/api/v1/caller", headers={"x-request-id": request_id}, timeout=30)
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while not (lines := [line for line in stack.log.splitlines() if f"id={request_id} " in line]):
        assert time.monotonic() < deadline, stack.log
        time.sleep(0.2)
    [line] = lines
    assert " INFO envoy.access: GET /api/v1/caller 401 grpc=16 " in line


def test_token_create_prints_the_token_alone(json_stack: Stack) -> None:
    result = json_stack.htk(
        "token", "create", "--org", "quiet", "--name", f"q-{uuid.uuid4().hex[:8]}"
    )
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("htk_")
    assert result.stdout.count("\n") == 1
    verbose = json_stack.htk(
        "token", "create", "--org", "quiet", "--name", f"v-{uuid.uuid4().hex[:8]}", "--verbose"
    )
    assert verbose.returncode == 0
    assert verbose.stdout.count("\n") == 1
