"""Trust policies and the token exchange, in process, against a real OIDC
issuer on 127.0.0.1 (tests/support/oidc_issuer.py) that serves discovery
and its JWKS and signs tokens as a CI would."""

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import task_service_pb2 as tasks_pb
from htk.processes.v1 import task_service_pb2_grpc as tasks_grpc
from htk.processes.v1 import trust_service_pb2 as trust_pb
from htk.processes.v1 import trust_service_pb2_grpc as trust_grpc
from server.domain.trust import MAX_POLICIES_PER_ORGANIZATION
from tests.service.calls import Stub, create, update
from tests.service.test_watch import rest_of, watch
from tests.support.in_process import InProcessServer
from tests.support.oidc_issuer import Issuer, running_issuer
from tests.support.orgs import Org

TrustStub = "trust_grpc.TrustServiceAsyncStub"


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def own_issuer() -> Iterator[Issuer]:
    """An issuer no other test's policies trust, for a test that reads why
    an exchange finds no policy (which other policies would change)."""
    with running_issuer() as running:
        yield running


@pytest.fixture
def trust(channel: grpc.aio.Channel) -> "trust_grpc.TrustServiceAsyncStub":
    return trust_grpc.TrustServiceStub(channel)  # typed as the async stub for an aio channel


@pytest.fixture
async def admin(server: InProcessServer, org: Org) -> str:
    return await server.token(org.org_id, "tokens:manage")


async def policy(
    trust: "trust_grpc.TrustServiceAsyncStub",
    admin: str,
    issuer: Issuer,
    /,
    **fields: object,
) -> trust_pb.TrustPolicy:
    request = {
        "name": "app main",
        "issuer": issuer.url,
        "audience": "htk",
        "subject": "repo:acme/app:ref:refs/heads/main",
        "claims": {"repository_owner": "acme"},
        "scopes": ["processes:write"],
        **fields,
    }
    return await trust.CreateTrustPolicy(
        trust_pb.CreateTrustPolicyRequest(**request),  # type: ignore[arg-type]
        metadata=(("authorization", f"Bearer {admin}"),),
    )


async def exchange(
    trust: "trust_grpc.TrustServiceAsyncStub", subject_token: str
) -> trust_pb.ExchangeTokenResponse:
    return await trust.ExchangeToken(trust_pb.ExchangeTokenRequest(subject_token=subject_token))


async def refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    return error.value


async def test_an_exchanged_token_updates_processes_and_cannot_complete_tasks(
    server: InProcessServer,
    trust: "trust_grpc.TrustServiceAsyncStub",
    processes: Stub,
    channel: grpc.aio.Channel,
    org: Org,
    admin: str,
    issuer: Issuer,
) -> None:
    audience = f"htk-{org.org_id}"
    await policy(trust, admin, issuer, audience=audience)
    exchanged = await exchange(trust, issuer.token(aud=audience))
    assert exchanged.token.startswith("htk_")
    assert list(exchanged.scopes) == ["processes:write"]
    assert exchanged.name == "app main:repo:acme/app:ref:refs/heads/main"
    lifetime = exchanged.expires_at.ToDatetime() - server.clock().replace(tzinfo=None)
    assert timedelta(seconds=890) < lifetime <= timedelta(seconds=900)

    pipeline = Org(org.org_id, exchanged.token, org.reader)
    process = await create(processes, pipeline, "build", "review")
    await update(processes, pipeline, process.process_id, "step_started", step="build")
    caller = await processes.GetCaller(pb.GetCallerRequest(), metadata=pipeline.metadata())
    assert caller.token_name == exchanged.name
    tasks: tasks_grpc.TaskServiceAsyncStub = tasks_grpc.TaskServiceStub(channel)
    denied = await refusal(
        tasks.CompleteTask(
            tasks_pb.CompleteTaskRequest(task_id=process.process_id, outcome="approved"),
            metadata=pipeline.metadata(),
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda issuer: issuer.token(aud="elsewhere"), "aud:"),
        (lambda issuer: issuer.token(exp=issuer.claims()["iat"] - 120), "exp:"),
        (lambda issuer: issuer.token(iat=issuer.claims()["iat"] + 600), "iat:"),
        (lambda issuer: issuer.token(nbf=issuer.claims()["iat"] + 600), "nbf:"),
        (lambda issuer: issuer.token(sub="repo:acme/app:ref:refs/heads/dev"), "sub:"),
        (lambda issuer: issuer.token(repository_owner="evil"), "claims:"),
        (lambda issuer: issuer.unsigned_token(), "alg:"),
        (lambda issuer: issuer.hs256_with_public_key(), "alg:"),
        (lambda issuer: _tampered(issuer.token()), "signature:"),
        (lambda issuer: issuer.token(iss="https://ci.example.com"), "iss:"),
        (lambda issuer: "not.a.jwt", "subject_token:"),
    ],
    ids=[
        "wrong audience",
        "expired",
        "issued in the future",
        "not yet valid",
        "other subject",
        "other claim",
        "alg none",
        "hs256 with the public key",
        "tampered",
        "other issuer",
        "garbage",
    ],
)
async def test_forged_and_stale_tokens_are_refused_naming_the_check(
    trust: "trust_grpc.TrustServiceAsyncStub",
    org: Org,
    admin: str,
    issuer: Issuer,
    forge: object,
    reason: str,
) -> None:
    await policy(trust, admin, issuer, audience=f"htk-{org.org_id}")
    subject_token = forge(issuer)  # type: ignore[operator]
    if reason != "aud:" and "." in subject_token and subject_token != "not.a.jwt":
        # Each forgery fails its own check, not the audience's.
        subject_token = _with_audience(forge, issuer, f"htk-{org.org_id}")
    error = await refusal(exchange(trust, subject_token))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (error.details() or "").startswith(reason), error.details()
    assert subject_token not in (error.details() or "")


def _with_audience(forge: object, issuer: Issuer, audience: str) -> str:
    """The forgery, made for the policy's audience."""
    original = issuer.claims

    def claims(**overrides: object) -> dict[str, object]:
        return original(**{"aud": audience, **overrides})

    issuer.claims = claims  # type: ignore[method-assign]
    try:
        return forge(issuer)  # type: ignore[operator, no-any-return]
    finally:
        del issuer.claims


def _tampered(token: str) -> str:
    """The token with its payload swapped for another subject's, signature kept."""
    import base64
    import json

    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "repo:acme/app:ref:refs/heads/main"
    claims["repository_owner"] = "acme"
    claims["extra"] = "tampered"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_a_rotated_key_is_fetched_when_a_token_names_it(
    trust: "trust_grpc.TrustServiceAsyncStub", org: Org, admin: str
) -> None:
    audience = f"htk-{org.org_id}"
    with running_issuer() as issuer:
        await policy(trust, admin, issuer, audience=audience)
        await exchange(trust, issuer.token(aud=audience))
        fetched = issuer.jwks_fetches
        issuer.rotate(kind="EC")
        # The issuer's keys are fetched again at most once a second, so the
        # first tries may meet the old set; a bounded number of tries.
        for _ in range(50):
            try:
                await exchange(trust, issuer.token(aud=audience))
                break
            except grpc.aio.AioRpcError as error:
                assert (error.details() or "").startswith("kid:"), error.details()
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the rotated key was never fetched")
        assert issuer.jwks_fetches > fetched
        # A token of the old key, now unpublished, is refused.
        old = await refusal(exchange(trust, _signed_by_unpublished_key(issuer, audience)))
        assert (old.details() or "").startswith("kid:")


def _signed_by_unpublished_key(issuer: Issuer, audience: str) -> str:
    keys = issuer.keys
    issuer.rotate()
    token = issuer.token(aud=audience)
    issuer.keys = keys
    return token


async def test_a_token_expires_and_its_policy_deletion_revokes_it(
    server: InProcessServer,
    trust: "trust_grpc.TrustServiceAsyncStub",
    processes: Stub,
    org: Org,
    admin: str,
    own_issuer: Issuer,
) -> None:
    audience = f"htk-{org.org_id}"
    created = await policy(trust, admin, own_issuer, audience=audience, token_ttl_seconds=60)
    first = await exchange(trust, own_issuer.token(aud=audience))
    second = await exchange(trust, own_issuer.token(aud=audience))
    assert first.name == second.name  # each run of the job gets its own token
    for token in (first.token, second.token):
        await processes.GetCaller(
            pb.GetCallerRequest(), metadata=Org(org.org_id, token, "").metadata()
        )

    # One the worker has not seen yet: its refusal comes from the database.
    unseen = await exchange(trust, own_issuer.token(aud=audience))
    # Expired by the server's clock: refused though the token is cached, and
    # said to be expired (not unknown), whether cached or looked up.
    server.clock.now = unseen.expires_at.ToDatetime().replace(tzinfo=server.clock().tzinfo)
    for token in (first.token, unseen.token, unseen.token):
        expired = await refusal(
            processes.GetCaller(
                pb.GetCallerRequest(), metadata=Org(org.org_id, token, "").metadata()
            )
        )
        assert expired.code() == grpc.StatusCode.UNAUTHENTICATED
        assert expired.details() == "invalid token: expired"
    server.clock.now = None

    deleted = await trust.DeleteTrustPolicy(
        trust_pb.DeleteTrustPolicyRequest(policy_id=created.policy_id),
        metadata=(("authorization", f"Bearer {admin}"),),
    )
    assert deleted.revoked_tokens == 3
    # The revocation reaches the worker's cache through its notification.
    for _ in range(100):
        try:
            await processes.GetCaller(
                pb.GetCallerRequest(), metadata=Org(org.org_id, second.token, "").metadata()
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the deleted policy's token still works")
    gone = await refusal(exchange(trust, own_issuer.token(aud=audience)))
    # No policy anywhere trusts this test's own issuer now.
    assert (gone.details() or "").startswith("iss:")


async def test_another_organizations_policies_are_invisible(
    server: InProcessServer,
    trust: "trust_grpc.TrustServiceAsyncStub",
    org: Org,
    admin: str,
    issuer: Issuer,
) -> None:
    created = await policy(trust, admin, issuer, audience=f"htk-{org.org_id}")
    other = await server.new_org()
    other_admin = (
        ("authorization", f"Bearer {await server.token(other.org_id, 'tokens:manage')}"),
    )
    listed = await trust.ListTrustPolicies(
        trust_pb.ListTrustPoliciesRequest(), metadata=other_admin
    )
    assert list(listed.policies) == []
    missing = await refusal(
        trust.DeleteTrustPolicy(
            trust_pb.DeleteTrustPolicyRequest(policy_id=created.policy_id), metadata=other_admin
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    mine = await trust.ListTrustPolicies(
        trust_pb.ListTrustPoliciesRequest(), metadata=(("authorization", f"Bearer {admin}"),)
    )
    assert [p.policy_id for p in mine.policies] == [created.policy_id]
    assert dict(mine.policies[0].claims) == {"repository_owner": "acme"}


async def test_managing_policies_needs_the_scope(
    trust: "trust_grpc.TrustServiceAsyncStub", org: Org, issuer: Issuer
) -> None:
    denied = await refusal(policy(trust, org.writer, issuer))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous = await refusal(trust.ListTrustPolicies(trust_pb.ListTrustPoliciesRequest()))
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"issuer": "http://ci.example.com"}, "issuer"),
        ({"issuer": "ftp://127.0.0.1"}, "issuer"),
        ({"subject": "*"}, "subject"),
        ({"subject": "repo:*:main"}, "subject"),
        ({"audience": " "}, "audience"),
        ({"name": ""}, "name"),
        ({"scopes": ["root"]}, "scopes"),
        ({"token_ttl_seconds": 3601}, "token_ttl_seconds"),
        ({"claims": {"owner": "a\nb"}}, "claims.owner"),
    ],
)
async def test_bad_policies_are_refused_naming_the_field(
    trust: "trust_grpc.TrustServiceAsyncStub",
    admin: str,
    issuer: Issuer,
    fields: dict[str, object],
    field: str,
) -> None:
    error = await refusal(policy(trust, admin, issuer, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"{field}:"), error.details()


async def test_a_watch_stream_ends_when_its_exchanged_token_expires(
    server: InProcessServer,
    trust: "trust_grpc.TrustServiceAsyncStub",
    processes: Stub,
    org: Org,
    admin: str,
    issuer: Issuer,
) -> None:
    audience = f"htk-{org.org_id}"
    await policy(trust, admin, issuer, audience=audience, token_ttl_seconds=60)
    exchanged = await exchange(trust, issuer.token(aud=audience))
    pipeline = Org(org.org_id, exchanged.token, org.reader)
    process = await create(processes, pipeline, "build")
    # The server's clock stops a moment before the expiry: the stream opens
    # whatever the machine's speed, and its timer ends it that moment later.
    expires_at = exchanged.expires_at.ToDatetime().replace(tzinfo=server.clock().tzinfo)
    server.clock.now = expires_at - timedelta(seconds=0.2)
    messages = await rest_of(watch(processes, pipeline, process.process_id))
    assert messages[-1].HasField("error")
    assert messages[-1].error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert messages[-1].error.message == "invalid token: expired"


async def test_naming_the_organization_keeps_anothers_copied_policy_out(
    server: InProcessServer,
    trust: "trust_grpc.TrustServiceAsyncStub",
    processes: Stub,
    org: Org,
    admin: str,
) -> None:
    with running_issuer() as issuer:
        await policy(trust, admin, issuer)
        other = await server.new_org()
        copier = await server.token(other.org_id, "tokens:manage")
        await policy(trust, copier, issuer)  # the same audience, subject and claims
        ambiguous = await refusal(exchange(trust, issuer.token()))
        assert (ambiguous.details() or "").startswith("aud: trust policies of several")
        for org_id in (org.org_id, other.org_id):
            exchanged = await trust.ExchangeToken(
                trust_pb.ExchangeTokenRequest(subject_token=issuer.token(), organization=org_id)
            )
            caller = await processes.GetCaller(
                pb.GetCallerRequest(), metadata=Org(org_id, exchanged.token, "").metadata()
            )
            assert caller.organization == org_id


async def test_an_organization_may_have_only_so_many_policies(
    server: InProcessServer,
    trust: "trust_grpc.TrustServiceAsyncStub",
    admin: str,
    own_issuer: Issuer,
) -> None:
    held = [
        await policy(trust, admin, own_issuer, name=f"job {index}")
        for index in range(MAX_POLICIES_PER_ORGANIZATION)
    ]
    refused = await refusal(policy(trust, admin, own_issuer, name="one too many"))
    assert refused.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"({MAX_POLICIES_PER_ORGANIZATION})" in (refused.details() or "")
    # Another organization's count is its own; a deleted policy makes room.
    stranger = await server.new_org()
    await policy(trust, await server.token(stranger.org_id, "tokens:manage"), own_issuer)
    await trust.DeleteTrustPolicy(
        trust_pb.DeleteTrustPolicyRequest(policy_id=held[0].policy_id),
        metadata=(("authorization", f"Bearer {admin}"),),
    )
    await policy(trust, admin, own_issuer, name="one more")
