"""No long-lived secrets, end to end through Envoy (REST and native gRPC):
a trust policy created over REST, a CI token from a real issuer on
127.0.0.1 exchanged for an htk token without any htk token, which can update
a process and cannot complete a task; forgeries refused with 401; expiry
and the policy's deletion refusing the token on every path within a
second; another organization's policies invisible."""

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import process_service_pb2 as pb
from htk.processes.v1 import process_service_pb2_grpc as pb_grpc
from htk.processes.v1 import trust_service_pb2 as trust_pb
from htk.processes.v1 import trust_service_pb2_grpc as trust_grpc
from tests.e2e.test_rest_contract import PROCESSES, create_body
from tests.e2e.test_token_revocation import bearer
from tests.support.oidc_issuer import Issuer, running_issuer
from tests.support.orgs import Org
from tests.support.stack import HTK, Stack

POLICIES = "/api/v1/trust-policies"
EXCHANGE = "/api/v1/tokens:exchange"
# The promise: refused everywhere within this of expiring or being revoked.
REFUSAL_SECONDS = 1.0
# A JWT part of arrays nested deeper than Python's JSON parser goes, within
# ExchangeToken's length limit.
NESTED_JSON = base64.urlsafe_b64encode(b"[" * 5000).decode()


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def admin(stack: Stack, org: Org) -> str:
    return stack.token(org.org_id, "tokens:manage")


def create_policy(
    rest: httpx.Client, admin: str, issuer: Issuer, org: Org, **fields: object
) -> dict[str, Any]:
    response = rest.post(
        POLICIES,
        headers=bearer(admin),
        json={
            "name": "app main",
            "issuer": issuer.url,
            "audience": f"htk-{org.org_id}",
            "subject": "repo:acme/*",
            "claims": {"repository_owner": "acme"},
            "scopes": ["processes:write"],
            **fields,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def exchange(rest: httpx.Client, subject_token: str) -> httpx.Response:
    # No Authorization header: the CI token is the proof.
    return rest.post(EXCHANGE, json={"subject_token": subject_token})


def test_a_pipeline_exchanges_its_ci_token_and_pushes_updates(
    rest: httpx.Client, grpc_channel: grpc.Channel, org: Org, admin: str, issuer: Issuer
) -> None:
    create_policy(rest, admin, issuer, org)
    response = exchange(rest, issuer.token(aud=f"htk-{org.org_id}"))
    assert response.status_code == 200, response.text
    exchanged = response.json()
    assert set(exchanged) == {"token", "expires_at", "scopes", "name"}
    assert exchanged["scopes"] == ["processes:write"]
    assert exchanged["name"] == "app main:repo:acme/app:ref:refs/heads/main"
    token = exchanged["token"]

    created = rest.post(
        PROCESSES,
        headers=bearer(token),
        json=create_body(
            steps=[
                {"key": "build", "label": "Build"},
                {"key": "review", "label": "Review", "human": True},
            ]
        ),
    )
    assert created.status_code == 200, created.text
    process = created.json()
    started = rest.post(
        f"{PROCESSES}/{process['process_id']}/update",
        headers=bearer(token),
        json={"type": "step_started", "step": "build"},
    )
    assert started.status_code == 200, started.text
    events = rest.get(f"{PROCESSES}/{process['process_id']}/events", headers=bearer(token)).json()
    assert events["events"][-1]["actor"] == exchanged["name"]
    # Deciding human steps is a person's: the pipeline's token may not.
    task_id = process["task_ids"][0]
    denied = rest.post(
        f"/api/v1/tasks/{task_id}/complete", headers=bearer(token), json={"outcome": "approved"}
    )
    assert denied.status_code == 403, denied.text
    # The same token over native gRPC.
    caller = pb_grpc.ProcessServiceStub(grpc_channel).GetCaller(
        pb.GetCallerRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
    )
    assert caller.token_name == exchanged["name"]
    assert list(caller.scopes) == ["processes:write"]


def test_exchange_over_native_grpc_needs_no_token(
    rest: httpx.Client, grpc_channel: grpc.Channel, org: Org, admin: str, issuer: Issuer
) -> None:
    create_policy(rest, admin, issuer, org)
    stub = trust_grpc.TrustServiceStub(grpc_channel)
    exchanged = stub.ExchangeToken(
        trust_pb.ExchangeTokenRequest(subject_token=issuer.token(aud=f"htk-{org.org_id}")),
        timeout=10,
    )
    assert exchanged.token.startswith("htk_")
    with pytest.raises(grpc.RpcError) as refused:
        stub.ExchangeToken(
            trust_pb.ExchangeTokenRequest(
                subject_token=issuer.unsigned_token(aud=f"htk-{org.org_id}")
            ),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda issuer, aud: issuer.token(aud="someone-else"), "aud:"),
        (lambda issuer, aud: issuer.token(aud=aud, exp=int(time.time()) - 120), "exp:"),
        (
            lambda issuer, aud: issuer.token(
                aud=aud, iss="https://token.actions.githubusercontent.com"
            ),
            "iss:",
        ),
        (lambda issuer, aud: issuer.unsigned_token(aud=aud), "alg:"),
        (lambda issuer, aud: issuer.hs256_with_public_key(aud=aud), "alg:"),
        (
            lambda issuer, aud: issuer.token(aud=aud, sub="repo:evil/app:ref:refs/heads/main"),
            "sub:",
        ),
        (lambda issuer, aud: f"{NESTED_JSON}.{NESTED_JSON}.x", "subject_token:"),
    ],
    ids=[
        "wrong audience",
        "expired",
        "another issuer",
        "alg none",
        "hs256 with the public key",
        "other subject",
        "nested deeper than the JSON parser goes",
    ],
)
def test_forged_and_expired_ci_tokens_are_refused_with_401(
    rest: httpx.Client,
    org: Org,
    admin: str,
    issuer: Issuer,
    forge: Callable[[Issuer, str], str],
    reason: str,
) -> None:
    create_policy(rest, admin, issuer, org)
    subject_token = forge(issuer, f"htk-{org.org_id}")
    response = exchange(rest, subject_token)
    assert response.status_code == 401, response.text
    assert response.json()["message"].startswith(reason)
    assert subject_token not in response.text


def test_a_rotated_key_is_fetched(rest: httpx.Client, org: Org, admin: str) -> None:
    with running_issuer() as issuer:
        create_policy(rest, admin, issuer, org)
        assert exchange(rest, issuer.token(aud=f"htk-{org.org_id}")).status_code == 200
        issuer.rotate(kind="EC")
        # Each worker fetches the keys again at most once a second: a
        # bounded number of tries.
        for _ in range(100):
            response = exchange(rest, issuer.token(aud=f"htk-{org.org_id}"))
            if response.status_code == 200:
                break
            assert response.json()["message"].startswith("kid:"), response.text
            time.sleep(0.1)
        else:
            pytest.fail("the rotated key was never accepted")


def refused_within_a_second(
    rest: httpx.Client, grpc_channel: grpc.Channel, token: str, reason: str
) -> None:
    """Polls REST and gRPC (Envoy takes turns over the workers) until both
    refuse the token, a bounded number of times; then every worker must,
    each giving `reason`."""
    stub = pb_grpc.ProcessServiceStub(grpc_channel)

    def grpc_refused() -> bool:
        try:
            stub.GetCaller(
                pb.GetCallerRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
            )
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            return error.details() == reason
        return False

    def rest_refused() -> bool:
        response = rest.get("/api/v1/caller", headers=bearer(token))
        return response.status_code == 401 and response.json()["message"] == reason

    for _ in range(200):
        if rest_refused() and grpc_refused():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the token is still accepted")
    # Settled: every worker refuses it (several calls reach each).
    for _ in range(10):
        assert rest_refused()
        assert grpc_refused()


def test_an_exchanged_token_is_refused_once_it_expires(
    rest: httpx.Client, grpc_channel: grpc.Channel, org: Org, admin: str, issuer: Issuer
) -> None:
    create_policy(rest, admin, issuer, org, token_ttl_seconds=2)
    # Past this the token may have expired: a slow machine may get there
    # before every worker has cached it, which the test allows.
    may_expire = time.monotonic() + 2
    token = exchange(rest, issuer.token(aud=f"htk-{org.org_id}")).json()["token"]
    for _ in range(6):  # each worker caches it
        status = rest.get("/api/v1/caller", headers=bearer(token)).status_code
        assert status == 200 or (status == 401 and time.monotonic() >= may_expire)
    refused_within_a_second(rest, grpc_channel, token, "invalid token: expired")


def test_deleting_a_policy_revokes_its_tokens(
    rest: httpx.Client, grpc_channel: grpc.Channel, org: Org, admin: str, issuer: Issuer
) -> None:
    policy = create_policy(rest, admin, issuer, org)
    token = exchange(rest, issuer.token(aud=f"htk-{org.org_id}")).json()["token"]
    for _ in range(6):
        assert rest.get("/api/v1/caller", headers=bearer(token)).status_code == 200
    deleted = rest.delete(f"{POLICIES}/{policy['policy_id']}", headers=bearer(admin))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"revoked_tokens": 1}
    refused_within_a_second(rest, grpc_channel, token, "invalid token: unknown or revoked")
    # And no new token comes from it.
    assert exchange(rest, issuer.token(aud=f"htk-{org.org_id}")).status_code == 401


def test_another_organizations_policies_are_invisible(
    stack: Stack, rest: httpx.Client, org: Org, admin: str, issuer: Issuer
) -> None:
    policy = create_policy(rest, admin, issuer, org)
    other = stack.new_org()
    other_admin = stack.token(other.org_id, "tokens:manage")
    listed = rest.get(POLICIES, headers=bearer(other_admin))
    assert listed.status_code == 200 and listed.json() == {"policies": []}
    missing = rest.delete(f"{POLICIES}/{policy['policy_id']}", headers=bearer(other_admin))
    assert missing.status_code == 404, missing.text
    mine = rest.get(POLICIES, headers=bearer(admin)).json()["policies"]
    assert [p["policy_id"] for p in mine] == [policy["policy_id"]]


def test_policies_need_the_tokens_manage_scope(
    rest: httpx.Client, org: Org, issuer: Issuer
) -> None:
    assert rest.get(POLICIES, headers=bearer(org.writer)).status_code == 403
    assert rest.get(POLICIES).status_code == 401
    bad = rest.post(
        POLICIES,
        headers=bearer(org.writer),
        json={"name": "x", "issuer": "http://ci.example.com", "audience": "a", "subject": "s"},
    )
    assert bad.status_code == 403


def test_htk_trust_creates_lists_and_deletes_policies(
    stack: Stack, rest: httpx.Client, org: Org, admin: str, issuer: Issuer
) -> None:
    def htk(*args: str) -> "subprocess.CompletedProcess[str]":
        env = {"PATH": stack.env["PATH"], "HTK_URL": stack.http_url, "HTK_TOKEN": admin}
        return subprocess.run([HTK, *args], env=env, capture_output=True, text=True, timeout=60)

    created = htk(
        "trust", "create", "--name", "app main", "--issuer", issuer.url,
        "--audience", f"htk-{org.org_id}", "--subject", "repo:acme/app:*",
        "--claim", "repository_owner=acme", "--scopes", "processes:write", "--ttl", "600",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    policy_id = created.stdout.strip()
    listed = htk("trust", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (policy,) = json.loads(listed.stdout)["policies"]
    assert policy["policy_id"] == policy_id
    assert (policy["claims"], policy["token_ttl_seconds"]) == ({"repository_owner": "acme"}, 600)
    assert "repo:acme/app:*" in htk("trust", "list").stdout
    token = exchange(rest, issuer.token(aud=f"htk-{org.org_id}")).json()["token"]
    tokens = stack.htk("token", "list", "--org", org.org_id).stdout
    (issued,) = [line for line in tokens.splitlines() if "app main:repo:acme/app" in line]
    assert " expires 20" in issued
    deleted = htk("trust", "delete", policy_id)
    assert deleted.returncode == 0, deleted.stderr
    assert "revoked 1 token" in deleted.stderr
    assert htk("trust", "delete", policy_id).returncode != 0
    assert htk("trust", "list", "--json").stdout.strip() == '{"policies":[]}'
    for _ in range(200):
        if rest.get("/api/v1/caller", headers=bearer(token)).status_code == 401:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the deleted policy's token still works")
