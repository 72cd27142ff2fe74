"""Remembered tokens in process: a token is looked up once, then answered from
the worker's cache; unknown tokens are looked up every time and never kept;
whichever way a token is revoked or changed, calls see it within a second;
while the listening connection is lost the cache is bypassed, and once it
is back the cache starts empty; a revoked token's watch streams end, even
if revoked while the stream was being opened or while the worker was not
listening; a token notification the worker cannot read makes it forget
every token; a TRUNCATE of the tokens refuses them all."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from htk.processes.v1 import process_service_pb2 as pb
from server.domain.tokens import digest, generate_token
from server.service.tokens import TokenService
from server.storage import tokens as token_rows
from server.storage.migrate import upgrade_to_latest
from tests.service.calls import Stub, create
from tests.service.test_watch import HANG_SECONDS, Call, own_server, read, rest_of, watch
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org

# What the README promises: a revocation reaches every worker within this.
REVOCATION_SECONDS = 1.0


async def status_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def get(stub: Stub, process_id: str, token: str) -> Awaitable[Any]:
    request = pb.GetProcessRequest(process_id=process_id)
    return stub.GetProcess(request, metadata=(("authorization", f"Bearer {token}"),))


async def refused_within_a_second(
    call: Callable[[], Awaitable[Any]],
    refusal: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED,
    meanwhile: grpc.StatusCode = grpc.StatusCode.OK,
) -> None:
    """Calls until `refusal` (or whatever status is awaited), which must come
    within REVOCATION_SECONDS of now, answered `meanwhile` until then."""
    began = time.monotonic()
    while (status := await status_of(call())) != refusal:
        assert status == meanwhile
        elapsed = time.monotonic() - began
        assert elapsed < REVOCATION_SECONDS, f"still {status.name} after {elapsed:.2f} s"
        await asyncio.sleep(0.01)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The digests the server looks up in the database, as it does."""
    looked_up: list[bytes] = []
    find_unrevoked = token_rows.find_unrevoked

    async def counted(connection: AsyncConnection, digest: bytes) -> Any:
        looked_up.append(digest)
        return await find_unrevoked(connection, digest)

    monkeypatch.setattr(token_rows, "find_unrevoked", counted)
    return looked_up


async def token_id_of(server: InProcessServer, org_id: str, name: str) -> uuid.UUID:
    (token_id,) = [
        info.token_id
        for info in await TokenService(server.database, server.clock).list(org_id)
        if info.name == name
    ]
    return token_id


async def execute(server: InProcessServer, sql: str, token_id: uuid.UUID) -> None:
    """Runs `sql` on the tokens as an operator would, with psql: committed at once."""
    async with server.database.transaction() as connection:
        await connection.exec_driver_sql(sql, (token_id,))


async def test_a_token_is_looked_up_once_then_remembered(
    server: InProcessServer, processes: Stub, org: Org, lookups: list[bytes]
) -> None:
    process = await create(processes, org, "build")
    token = await server.token(org.org_id, scopes="")
    for _ in range(3):
        assert await status_of(get(processes, process.process_id, token)) == grpc.StatusCode.OK
    assert lookups.count(digest(token)) == 1


@pytest.mark.parametrize(("refusal_seconds", "expected_lookups"), [("3600", 1), ("0", 3)])
async def test_an_unknown_token_is_looked_up_once_while_its_refusal_is_remembered(
    database_url: str, lookups: list[bytes], refusal_seconds: str, expected_lookups: int
) -> None:
    # An hour (never out within the test, however slow the machine) or not at all.
    async with own_server(database_url, HTK_UNKNOWN_TOKEN_CACHE_SECONDS=refusal_seconds) as (
        _,
        stub,
        _,
    ):
        unknown = generate_token()
        for _ in range(3):
            refused = await status_of(get(stub, str(uuid.uuid4()), unknown))
            assert refused == grpc.StatusCode.UNAUTHENTICATED
        assert lookups.count(digest(unknown)) == expected_lookups


async def test_a_token_changed_after_a_refusal_is_looked_up_again(
    database_url: str, lookups: list[bytes]
) -> None:
    # A token revived by an operator's UPDATE works at once, refused a moment ago or not.
    async with own_server(database_url, HTK_UNKNOWN_TOKEN_CACHE_SECONDS="3600") as (
        running,
        stub,
        org,
    ):
        process = await create(stub, org, "build")
        token = await running.token(org.org_id, scopes="", name="revived")
        token_id = await token_id_of(running, org.org_id, "revived")
        await execute(running, REVOKE, token_id)
        await refused_within_a_second(lambda: get(stub, process.process_id, token))
        await execute(
            running, "UPDATE api_tokens SET revoked_at = NULL WHERE token_id = %s", token_id
        )
        await refused_within_a_second(
            lambda: get(stub, process.process_id, token),
            grpc.StatusCode.OK,
            meanwhile=grpc.StatusCode.UNAUTHENTICATED,
        )


# An operator's revocation, by hand.
REVOKE = "UPDATE api_tokens SET revoked_at = now() WHERE token_id = %s"
REVOCATIONS = {
    "htk token revoke": None,
    "an operator's UPDATE": REVOKE,
    "an operator's DELETE": "DELETE FROM api_tokens WHERE token_id = %s",
}


@pytest.mark.parametrize("sql", REVOCATIONS.values(), ids=REVOCATIONS.keys())
async def test_a_revoked_token_is_refused_within_a_second(
    server: InProcessServer, processes: Stub, org: Org, sql: str | None
) -> None:
    process = await create(processes, org, "build")
    token = await server.token(org.org_id, scopes="", name="to-revoke")
    token_id = await token_id_of(server, org.org_id, "to-revoke")
    assert await status_of(get(processes, process.process_id, token)) == grpc.StatusCode.OK

    if sql is None:
        assert await TokenService(server.database, server.clock).revoke(token_id)
    else:
        await execute(server, sql, token_id)
    await refused_within_a_second(lambda: get(processes, process.process_id, token))


async def test_a_token_that_lost_a_scope_is_denied_within_a_second(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    token = await server.token(org.org_id, name="writer")
    org_writing = Org(org.org_id, token, org.reader)
    await create(processes, org_writing, "build")

    token_id = await token_id_of(server, org.org_id, "writer")
    await execute(server, "UPDATE api_tokens SET scopes = '{}' WHERE token_id = %s", token_id)
    await refused_within_a_second(
        lambda: create(processes, org_writing, "build"), grpc.StatusCode.PERMISSION_DENIED
    )


@asynccontextmanager
async def listener_lost(running: InProcessServer) -> AsyncIterator[asyncio.Event]:
    """Ends the worker's listening connection and holds its reconnection back
    until the yielded event is set; returns once it is listening again."""
    reconnect = asyncio.Event()
    connect = running.database.dedicated_connection

    async def held_back(application_name: str) -> psycopg.AsyncConnection[Any]:
        await reconnect.wait()
        return await connect(application_name)

    listener = running.server.listener
    assert listener.backend_pid is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(running.database, "dedicated_connection", held_back)
        async with running.database.transaction(isolation="AUTOCOMMIT") as connection:
            await connection.exec_driver_sql(f"SELECT pg_terminate_backend({listener.backend_pid})")
        await until(lambda: listener.backend_pid is None)
        yield reconnect
    reconnect.set()
    await until(lambda: listener.backend_pid is not None)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_SECONDS):
        while not condition():  # noqa: ASYNC110 # the listener has no event to wait on
            await asyncio.sleep(0.01)


async def lookups_by_two_gets(stub: Stub, process_id: str, token: str, lookups: list[bytes]) -> int:
    """How many times two successful calls with the token looked it up."""
    before = lookups.count(digest(token))
    for _ in range(2):
        assert await status_of(get(stub, process_id, token)) == grpc.StatusCode.OK
    return lookups.count(digest(token)) - before


async def test_without_its_listening_connection_a_worker_looks_every_token_up(
    database_url: str, lookups: list[bytes]
) -> None:
    async with own_server(database_url) as (running, stub, org):
        process = await create(stub, org, "build")
        revoked = await running.token(org.org_id, scopes="", name="revoked while deaf")
        revoked_id = await token_id_of(running, org.org_id, "revoked while deaf")
        kept = await running.token(org.org_id, scopes="", name="kept")
        for token in (revoked, kept):
            assert await status_of(get(stub, process.process_id, token)) == grpc.StatusCode.OK

        async with listener_lost(running):
            # Its notification reaches no one on this worker.
            await execute(running, REVOKE, revoked_id)
            refused = await status_of(get(stub, process.process_id, revoked))
            assert refused == grpc.StatusCode.UNAUTHENTICATED
            assert await lookups_by_two_gets(stub, process.process_id, kept, lookups) == 2

        # Listening again, the cache started empty: the revocation it did not
        # hear still holds, and tokens are remembered again.
        refused = await status_of(get(stub, process.process_id, revoked))
        assert refused == grpc.StatusCode.UNAUTHENTICATED
        assert await lookups_by_two_gets(stub, process.process_id, kept, lookups) == 1


async def test_a_revocation_right_after_the_listening_connection_ends_is_honored(
    database_url: str,
) -> None:
    """Whether the worker notices the loss before or after the revocation
    commits, and however soon it reconnects."""
    async with own_server(database_url) as (running, stub, org):
        process = await create(stub, org, "build")
        token = await running.token(org.org_id, scopes="", name="to-revoke")
        token_id = await token_id_of(running, org.org_id, "to-revoke")
        assert await status_of(get(stub, process.process_id, token)) == grpc.StatusCode.OK

        listener = running.server.listener
        async with running.database.transaction(isolation="AUTOCOMMIT") as connection:
            await connection.exec_driver_sql(f"SELECT pg_terminate_backend({listener.backend_pid})")
        await execute(running, REVOKE, token_id)
        await refused_within_a_second(lambda: get(stub, process.process_id, token))


async def test_a_revoked_token_ends_its_watch_streams_in_band(
    server: InProcessServer, processes: Stub, org: Org
) -> None:
    process = await create(processes, org, "build")
    token = await server.token(org.org_id, scopes="", name="watcher")
    token_id = await token_id_of(server, org.org_id, "watcher")
    per_process = watch(processes, org, process.process_id, token=token)
    assert (await read(per_process)).HasField("process")
    organization = processes.WatchProcesses(
        pb.WatchProcessesRequest(), metadata=org.metadata(token)
    )
    assert (await read(organization)).HasField("heartbeat")
    unrevoked = watch(processes, org, process.process_id)  # the org's writer token
    assert (await read(unrevoked)).HasField("process")

    await TokenService(server.database, server.clock).revoke(token_id)
    for call in (per_process, organization):
        (ended,) = await rest_of(call)
        assert ended.error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert ended.error.message == "invalid token: revoked"
        assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
    # Another token's stream goes on: it still gets its heartbeats.
    assert (await read(unrevoked)).HasField("heartbeat")
    unrevoked.cancel()


STREAMS = {
    "WatchProcess": "watch_process",
    "WatchProcesses": "watch_organization",
}


@pytest.mark.parametrize("registering", STREAMS.values(), ids=STREAMS.keys())
async def test_a_token_revoked_while_its_stream_is_being_opened_ends_it(
    server: InProcessServer,
    processes: Stub,
    org: Org,
    monkeypatch: pytest.MonkeyPatch,
    registering: str,
) -> None:
    """The revocation is heard after the call was authenticated, before the
    stream is registered: it found no stream to end."""
    process = await create(processes, org, "build")
    token = await server.token(org.org_id, scopes="", name="watcher")
    token_id = await token_id_of(server, org.org_id, "watcher")
    # Another stream of the token: its end tells that the revocation was heard.
    witness = watch(processes, org, process.process_id, token=token)
    assert (await read(witness)).HasField("process")

    hub = server.server.watch_hub
    register = getattr(hub, registering)

    @asynccontextmanager
    async def revoked_first(*args: Any) -> AsyncIterator[Any]:
        await execute(server, REVOKE, token_id)
        (ended,) = await rest_of(witness)
        assert ended.error.message == "invalid token: revoked"
        async with register(*args) as watcher:
            yield watcher

    monkeypatch.setattr(hub, registering, revoked_first)
    opened: Call
    if registering == "watch_process":
        opened = watch(processes, org, process.process_id, token=token)
    else:
        opened = processes.WatchProcesses(pb.WatchProcessesRequest(), metadata=org.metadata(token))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await read(opened)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "invalid token: revoked"


async def test_a_token_revoked_while_the_worker_was_not_listening_ends_its_streams(
    database_url: str,
) -> None:
    async with own_server(database_url) as (running, stub, org):
        process = await create(stub, org, "build")
        token = await running.token(org.org_id, scopes="", name="revoked while deaf")
        token_id = await token_id_of(running, org.org_id, "revoked while deaf")
        revoked = watch(stub, org, process.process_id, token=token)
        assert (await read(revoked)).HasField("process")
        unrevoked = watch(stub, org, process.process_id)
        assert (await read(unrevoked)).HasField("process")

        async with listener_lost(running):
            # Its notification reaches no one on this worker.
            await execute(running, REVOKE, token_id)

        async with asyncio.timeout(HANG_SECONDS):  # heartbeats would go on forever
            (ended,) = await rest_of(revoked)
        assert ended.error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert ended.error.message == "invalid token: revoked"
        # The other token's stream goes on.
        assert (await read(unrevoked)).HasField("heartbeat")
        unrevoked.cancel()


async def test_a_token_notification_the_worker_cannot_read_makes_it_forget_every_token(
    database_url: str, lookups: list[bytes]
) -> None:
    """It might have been a revocation."""
    async with own_server(database_url) as (running, stub, org):
        process = await create(stub, org, "build")
        token = await running.token(org.org_id, scopes="", name="remembered")
        assert await lookups_by_two_gets(stub, process.process_id, token, lookups) == 1

        async with running.database.transaction(isolation="AUTOCOMMIT") as connection:
            await connection.exec_driver_sql(
                "SELECT pg_notify(%s, 'not a token change')", (token_rows.CHANNEL,)
            )
        remembered = lookups.count(digest(token))
        async with asyncio.timeout(HANG_SECONDS):
            while lookups.count(digest(token)) == remembered:
                assert await status_of(get(stub, process.process_id, token)) == grpc.StatusCode.OK
                await asyncio.sleep(0.01)


@contextmanager
def scratch_database(database_url: str) -> Iterator[str]:
    """A database of its own on the same server, migrated: for a test that
    wipes every token."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        url = make_url(database_url).set(database=name).render_as_string(hide_password=False)
        upgrade_to_latest(url)
        yield url
    finally:
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def test_wiping_every_token_refuses_them_all_within_a_second(database_url: str) -> None:
    with scratch_database(database_url) as scratch_url:
        async with own_server(scratch_url) as (running, stub, org):
            process = await create(stub, org, "build")
            assert await status_of(get(stub, process.process_id, org.reader)) == grpc.StatusCode.OK
            async with running.database.transaction() as connection:
                await connection.exec_driver_sql("TRUNCATE api_tokens")
            await refused_within_a_second(lambda: get(stub, process.process_id, org.reader))
