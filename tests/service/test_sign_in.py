"""Signing people in with an identity provider, in process: a real provider
on 127.0.0.1 (tests/support/oidc_issuer.py) that a test "logs a person in"
to, then the server's code exchange with PKCE and the client secret, the ID
token's checks, and the token it gives: named after the person, in the
organization and with the scopes of their groups, until sign-out."""

from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk.processes.v1 import sign_in_service_pb2 as sign_in_pb
from htk.processes.v1 import sign_in_service_pb2_grpc as sign_in_grpc
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_grpc
from tests.service.calls import update
from tests.service.test_token_cache import refused_within_a_second
from tests.support.in_process import InProcessServer, in_process_server
from tests.support.oidc_issuer import Issuer, running_issuer
from tests.support.orgs import Org

REDIRECT = "http://127.0.0.1:8080/"
CLIENT = ("htk-dashboard", "s3cret-of-the-client")


@pytest.fixture(scope="module")
def provider() -> Iterator[Issuer]:
    with running_issuer() as issuer:
        issuer.clients[CLIENT[0]] = CLIENT[1]
        yield issuer


@pytest.fixture(scope="module")
async def signing_server(database_url: str, provider: Issuer) -> AsyncIterator[InProcessServer]:
    env = {
        "HTK_OIDC_ISSUER": provider.url,
        "HTK_OIDC_CLIENT_ID": CLIENT[0],
        "HTK_OIDC_CLIENT_SECRET": CLIENT[1],
        "HTK_OIDC_GROUP_SCOPES": "release-managers=tasks:complete,ops=processes:write",
    }
    async with in_process_server(database_url, env=env) as running:
        yield running


@pytest.fixture
async def channel(signing_server: InProcessServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(signing_server.target) as opened:
        yield opened


def stub(channel: grpc.aio.Channel) -> Any:
    return sign_in_grpc.SignInServiceStub(channel)


def person(org_id: str, **claims: Any) -> dict[str, Any]:
    return {
        "sub": "00u-alice",
        "name": "Alice Example",
        "email": "alice@example.com",
        "org": org_id,
        "groups": ["release-managers", "everyone"],
        **claims,
    }


async def sign_in(
    channel: grpc.aio.Channel, provider: Issuer, claims: dict[str, Any]
) -> sign_in_pb.FinishSignInResponse:
    started = await stub(channel).StartSignIn(sign_in_pb.StartSignInRequest(redirect_uri=REDIRECT))
    code = provider.authorize(started.authorization_url, claims)
    state = dict(parse_qsl(urlsplit(started.authorization_url).query))["state"]
    return await stub(channel).FinishSignIn(  # type: ignore[no-any-return]
        sign_in_pb.FinishSignInRequest(code=code, state=state, redirect_uri=REDIRECT)
    )


async def test_a_person_signs_in_approves_a_task_and_signs_out(
    signing_server: InProcessServer, channel: grpc.aio.Channel, provider: Issuer
) -> None:
    org = await signing_server.new_org()
    shown = await stub(channel).GetSignInProvider(sign_in_pb.GetSignInProviderRequest())
    assert shown.enabled and shown.name == "127.0.0.1"
    started = await stub(channel).StartSignIn(sign_in_pb.StartSignInRequest(redirect_uri=REDIRECT))
    query = dict(parse_qsl(urlsplit(started.authorization_url).query))
    assert query["client_id"] == CLIENT[0] and query["redirect_uri"] == REDIRECT
    assert CLIENT[1] not in started.authorization_url  # the secret stays on the server

    signed_in = await sign_in(channel, provider, person(org.org_id))
    assert (signed_in.name, signed_in.organization) == ("Alice Example", org.org_id)
    assert list(signed_in.scopes) == ["tasks:complete"]
    alice = Org(org.org_id, signed_in.token, "")
    processes: Any = pb_grpc.ProcessServiceStub(channel)
    caller = await processes.GetCaller(pb.GetCallerRequest(), metadata=alice.metadata())
    assert caller.token_name == "Alice Example"

    tasks: Any = tasks_grpc.TaskServiceStub(channel)
    human = await processes.CreateProcess(
        pb.CreateProcessRequest(
            namespace="deployments",
            name="Release",
            step_defs=[pb.StepDef(key="review", label="Review", human=True)],
        ),
        metadata=org.metadata(),
    )
    await update(processes, org, human.process_id, "step_started", step="review")
    task = await tasks.CompleteTask(
        tasks_pb.CompleteTaskRequest(task_id=human.task_ids[0], outcome="approved"),
        metadata=alice.metadata(),
    )
    assert task.completed_by == "Alice Example"

    # A second sign-in of the same person is a session of its own.
    again = await sign_in(channel, provider, person(org.org_id))
    assert again.token != signed_in.token

    await stub(channel).SignOut(sign_in_pb.SignOutRequest(token=signed_in.token))
    # The worker's token cache hears of the revocation by its notification,
    # which follows the commit: refused within the promised second, not
    # necessarily at the very next call.
    await refused_within_a_second(
        lambda: processes.GetCaller(pb.GetCallerRequest(), metadata=alice.metadata())
    )
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await stub(channel).SignOut(sign_in_pb.SignOutRequest(token=signed_in.token))
    assert twice.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await processes.GetCaller(
        pb.GetCallerRequest(), metadata=Org(org.org_id, again.token, "").metadata()
    )


async def test_a_person_in_no_listed_group_reads_only(
    signing_server: InProcessServer, channel: grpc.aio.Channel, provider: Issuer
) -> None:
    org = await signing_server.new_org()
    signed_in = await sign_in(channel, provider, person(org.org_id, groups=["everyone"]))
    assert list(signed_in.scopes) == []


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("state", "state:"),
        ("redirect", "state:"),
        ("code", "code:"),
        ("org", "org:"),
        ("name", "name:"),
    ],
)
async def test_a_sign_in_that_fails_a_check_is_refused_naming_it(
    signing_server: InProcessServer,
    channel: grpc.aio.Channel,
    provider: Issuer,
    tamper: str,
    reason: str,
) -> None:
    org = await signing_server.new_org()
    claims = person(org.org_id)
    if tamper == "org":
        claims["org"] = "Not An Org!"
    if tamper == "name":
        claims["name"] = claims["email"] = None
    started = await stub(channel).StartSignIn(sign_in_pb.StartSignInRequest(redirect_uri=REDIRECT))
    code = provider.authorize(started.authorization_url, claims)
    state = dict(parse_qsl(urlsplit(started.authorization_url).query))["state"]
    request = sign_in_pb.FinishSignInRequest(code=code, state=state, redirect_uri=REDIRECT)
    if tamper == "state":
        request.state = state[:-4] + ("AAAA" if not state.endswith("AAAA") else "BBBB")
    if tamper == "redirect":
        request.redirect_uri = "http://127.0.0.1:8080/elsewhere"
    if tamper == "code":
        request.code = "made-up"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub(channel).FinishSignIn(request)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (refused.value.details() or "").startswith(reason), refused.value.details()


async def test_without_a_provider_sign_in_is_off(server: InProcessServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as plain:
        shown = await stub(plain).GetSignInProvider(sign_in_pb.GetSignInProviderRequest())
        assert not shown.enabled
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub(plain).StartSignIn(sign_in_pb.StartSignInRequest(redirect_uri=REDIRECT))
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
