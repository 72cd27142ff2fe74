"""Webhooks end to end: managed over REST and native gRPC through Envoy, and
delivered by the stack's workers to a real receiver on 127.0.0.1 that checks
every signature with the `standardwebhooks` package. What a user reads (the
webhook, its delivery log) is read back through the API."""

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from htk.processes.v1 import webhook_service_pb2 as pb
from htk.processes.v1 import webhook_service_pb2_grpc as pb_grpc
from server.domain.webhooks import MAX_WEBHOOKS_PER_ORGANIZATION
from tests.e2e.test_rest_contract import PROCESSES, ok, update
from tests.e2e.test_rest_errors import assert_error, assert_invalid_field
from tests.support.stack import Stack, running_stack
from tests.support.tokens import create_token
from tests.support.webhooks import LOCAL_RECEIVERS, Receiver, receiver

Json = dict[str, Any]
WEBHOOKS = "/api/v1/webhooks"
NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION = 5, 7, 9
HUMAN_STEPS: list[Json] = [
    {"key": "build", "label": "Build"},
    {"key": "review", "label": "Review", "human": True},
    {"key": "gate", "label": "Gate", "human": True, "timeout_seconds": 1},
]


@pytest.fixture(scope="module")
def hooks_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose webhooks may call 127.0.0.1, retrying within a second."""
    env = {
        **LOCAL_RECEIVERS,
        "HTK_WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2,0.2",
        "HTK_WEBHOOK_TIMEOUT_SECONDS": "5",
    }
    with running_stack(Path(tmp_path_factory.mktemp("hooks")), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def api(hooks_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hooks_stack.http_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def inbox() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


class Tenant:
    """An organization with a `webhooks:manage` token, a writer and a person."""

    def __init__(self, stack: Stack) -> None:
        self.org = stack.new_org("hooks")
        self.manager = create_token(stack.env, self.org.org_id, "webhooks:manage")
        self.person = create_token(stack.env, self.org.org_id, "tasks:complete")

    @property
    def auth(self) -> dict[str, str]:
        return self.org.auth(self.manager)


@pytest.fixture
def tenant(hooks_stack: Stack) -> Tenant:
    return Tenant(hooks_stack)


_paths = iter(range(1_000_000))


def new_path() -> str:
    return f"hook-{next(_paths)}"


def create_webhook(
    api: httpx.Client, tenant: Tenant, inbox: Receiver, path: str, **fields: Any
) -> Json:
    """A webhook to `path` of the receiver, which verifies with its secret."""
    body = {"url": inbox.url(path), "events": ["*"], **fields}
    created = ok(api.post(WEBHOOKS, headers=tenant.auth, json=body))
    inbox.expect(path, created["secret"])
    return created


def deliveries(api: httpx.Client, tenant: Tenant, webhook_id: str, **params: Any) -> Json:
    return ok(api.get(f"{WEBHOOKS}/{webhook_id}/deliveries", headers=tenant.auth, params=params))


def new_process(api: httpx.Client, tenant: Tenant, namespace: str = "deployments") -> str:
    body = {"namespace": namespace, "name": "Deploy v2.1.0", "step_defs": HUMAN_STEPS}
    return str(ok(api.post(PROCESSES, headers=tenant.org.auth(), json=body))["process_id"])


def send(api: httpx.Client, tenant: Tenant, process_id: str, body: Json) -> None:
    update(api, tenant.org, process_id, body)


def complete_task(api: httpx.Client, tenant: Tenant, task_id: str, outcome: str) -> None:
    ok(
        api.post(
            f"/api/v1/tasks/{task_id}/complete",
            headers=tenant.org.auth(tenant.person),
            json={"outcome": outcome},
        )
    )


def test_create_returns_the_secret_once_and_never_again(
    api: httpx.Client, tenant: Tenant, inbox: Receiver
) -> None:
    created = create_webhook(
        api, tenant, inbox, new_path(), events=["task.opened"], namespace="deployments"
    )

    assert created["enabled"] is True
    assert created["events"] == ["task.opened"]
    assert created["namespace"] == f"{tenant.org.org_id}.deployments"
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) >= 24
    assert "created_at" in created
    webhook_id = created["webhook_id"]
    read = ok(api.get(f"{WEBHOOKS}/{webhook_id}", headers=tenant.auth))
    assert "secret" not in read
    assert read == {key: value for key, value in created.items() if key != "secret"}
    listed = ok(api.get(WEBHOOKS, headers=tenant.auth))["webhooks"]
    assert listed == [read]
    deleted = ok(api.delete(f"{WEBHOOKS}/{webhook_id}", headers=tenant.auth))
    assert deleted == read
    assert_error(api.get(f"{WEBHOOKS}/{webhook_id}", headers=tenant.auth), 404, NOT_FOUND)
    assert ok(api.get(WEBHOOKS, headers=tenant.auth))["webhooks"] == []


def test_every_event_type_arrives_signed_with_its_data(
    api: httpx.Client, tenant: Tenant, inbox: Receiver
) -> None:
    path = new_path()
    webhook_id = create_webhook(api, tenant, inbox, path)["webhook_id"]
    approved = new_process(api, tenant)
    send(api, tenant, approved, {"type": "step_started", "step": "review"})
    process = ok(api.get(f"{PROCESSES}/{approved}", headers=tenant.org.auth()))
    review_task = process["timeline"][1]["task_id"]
    complete_task(api, tenant, review_task, "approved")
    send(api, tenant, approved, {"type": "step_started", "step": "gate"})  # times out in 1 s
    send(api, tenant, approved, {"type": "step_failed", "step": "build", "error": "flaky"})
    failed = new_process(api, tenant)
    send(api, tenant, failed, {"type": "failed", "error": "broken"})
    done = new_process(api, tenant)
    send(api, tenant, done, {"type": "completed"})
    cancelled = new_process(api, tenant)
    ok(api.post(f"{PROCESSES}/{cancelled}/cancel", headers=tenant.org.auth(), json={}))

    expected = {
        "process.created",
        "task.opened",
        "task.completed",
        "step.failed",
        "step.timed_out",
        "task.expired",
        "process.failed",
        "process.completed",
        "process.cancelled",
    }
    arrivals = inbox.wait_for(lambda got: {a.type for a in got} >= expected, path)

    assert all(arrival.verified for arrival in arrivals)
    by_type = {arrival.type: arrival for arrival in arrivals}
    for arrival in arrivals:
        assert arrival.headers["content-type"] == "application/json"
        assert "htk" in arrival.headers["user-agent"]
        assert arrival.message["data"]["process"]["namespace"] == (
            f"{tenant.org.org_id}.deployments"
        )
    (opened,) = [
        arrival.message["data"]
        for arrival in arrivals
        if arrival.type == "task.opened" and arrival.message["data"]["step"]["step"] == "review"
    ]
    assert opened["task"]["task_id"] == review_task
    assert opened["step"]["step"] == "review"
    assert opened["event"]["type"] == "step_started"
    assert by_type["task.completed"].message["data"]["event"]["outcome"] == "approved"
    assert by_type["step.timed_out"].message["data"]["step"]["step"] == "gate"
    assert by_type["task.expired"].message["data"]["task"]["status"] == "expired"
    assert by_type["process.failed"].message["data"]["process"]["process_id"] == failed
    assert by_type["process.cancelled"].message["data"]["process"]["status"] == "cancelled"
    assert "event" not in by_type["process.created"].message["data"]
    logged = deliveries(api, tenant, webhook_id, limit=200)["deliveries"]
    assert {delivery["delivery_id"] for delivery in logged} >= {a.webhook_id for a in arrivals}


def test_namespace_and_event_filters_choose_the_deliveries(
    api: httpx.Client, tenant: Tenant, inbox: Receiver
) -> None:
    openings = create_webhook(
        api, tenant, inbox, new_path(), events=["task.opened"], namespace="deployments"
    )["webhook_id"]
    finishes = create_webhook(
        api, tenant, inbox, new_path(), events=["process.completed", "process.failed"]
    )["webhook_id"]
    inside = new_process(api, tenant, "deployments")
    outside = new_process(api, tenant, "nightly")
    for process_id in (inside, outside):
        send(api, tenant, process_id, {"type": "step_started", "step": "review"})
    send(api, tenant, outside, {"type": "completed"})
    send(api, tenant, inside, {"type": "failed", "error": "broken"})

    # The outbox commits with each change: the log is whole once they returned.
    opened = deliveries(api, tenant, openings)["deliveries"]
    assert [(d["event_type"], d["process_id"]) for d in opened] == [("task.opened", inside)]
    finished = deliveries(api, tenant, finishes)["deliveries"]
    assert [(d["event_type"], d["process_id"]) for d in finished] == [
        ("process.failed", inside),
        ("process.completed", outside),
    ]


def test_a_failing_receiver_is_retried_until_it_recovers(
    api: httpx.Client, tenant: Tenant, inbox: Receiver
) -> None:
    path = new_path()
    webhook_id = create_webhook(api, tenant, inbox, path, events=["process.created"])["webhook_id"]
    inbox.answer = lambda at, number: 503 if at == path and number <= 2 else 200
    try:
        new_process(api, tenant)
        arrivals = inbox.wait_for(lambda got: any(a.status == 200 for a in got), path)
    finally:
        inbox.answer = lambda at, number: 200

    assert [arrival.status for arrival in arrivals] == [503, 503, 200]
    assert len({arrival.webhook_id for arrival in arrivals}) == 1
    assert len({arrival.body for arrival in arrivals}) == 1
    assert all(arrival.verified for arrival in arrivals)
    (delivery,) = wait_for_status(api, tenant, webhook_id, "delivered")
    assert delivery["delivery_id"] == arrivals[0].webhook_id
    assert delivery["attempts"] == 3
    assert delivery["last_status_code"] == 200
    assert "last_error" not in delivery and "next_attempt_at" not in delivery
    assert "delivered_at" in delivery


def test_a_stuck_receiver_holds_up_only_its_own_webhook(
    api: httpx.Client, tenant: Tenant, inbox: Receiver
) -> None:
    stuck, fine = new_path(), new_path()
    inbox.held[stuck] = threading.Event()
    for path in (stuck, fine):
        create_webhook(api, tenant, inbox, path, events=["process.created"])
    try:
        created = {new_process(api, tenant) for _ in range(12)}
        # Every message reaches the other receiver while this one answers nothing.
        arrivals = inbox.wait_for(lambda got: len(got) >= len(created), fine)
        assert {arrival.message["data"]["process"]["process_id"] for arrival in arrivals} == created
        assert inbox.received(stuck) == []
    finally:
        inbox.held.pop(stuck).set()
    delivered = inbox.wait_for(
        lambda got: {a.message["data"]["process"]["process_id"] for a in got} >= created, stuck
    )
    assert all(arrival.verified for arrival in delivered)


def wait_for_status(api: httpx.Client, tenant: Tenant, webhook_id: str, status: str) -> list[Json]:
    """The log once its newest delivery has `status` (recorded just after the reply)."""
    for _ in range(200):
        logged: list[Json] = deliveries(api, tenant, webhook_id)["deliveries"]
        if logged and logged[0]["status"] == status:
            return logged
        time.sleep(0.05)
    raise AssertionError(f"the newest delivery never became {status}: {logged}")


def test_410_disables_the_webhook_and_enable_turns_it_back_on(
    api: httpx.Client, tenant: Tenant, inbox: Receiver
) -> None:
    path = new_path()
    webhook_id = create_webhook(api, tenant, inbox, path, events=["process.created"])["webhook_id"]
    inbox.answer = lambda at, number: 410 if at == path else 200
    try:
        new_process(api, tenant)
        inbox.wait_for(lambda got: len(got) == 1, path)
        (delivery,) = wait_for_status(api, tenant, webhook_id, "failed")
    finally:
        inbox.answer = lambda at, number: 200

    assert delivery["last_status_code"] == 410
    assert "410" in delivery["last_error"]
    assert ok(api.get(f"{WEBHOOKS}/{webhook_id}", headers=tenant.auth))["enabled"] is False
    redelivery = f"{WEBHOOKS}/{webhook_id}/deliveries/{delivery['delivery_id']}/redeliver"
    assert_error(api.post(redelivery, headers=tenant.auth, json={}), 400, FAILED_PRECONDITION)
    new_process(api, tenant)  # while disabled: nothing is queued
    assert len(deliveries(api, tenant, webhook_id)["deliveries"]) == 1
    enabled = ok(api.post(f"{WEBHOOKS}/{webhook_id}/enable", headers=tenant.auth, json={}))
    assert enabled["enabled"] is True
    new_process(api, tenant)
    inbox.wait_for(lambda got: len(got) == 2, path)
    assert len(deliveries(api, tenant, webhook_id)["deliveries"]) == 2


def test_redelivery_sends_the_same_message_with_the_same_id(
    api: httpx.Client, tenant: Tenant, inbox: Receiver
) -> None:
    path = new_path()
    webhook_id = create_webhook(api, tenant, inbox, path, events=["process.created"])["webhook_id"]
    new_process(api, tenant)
    (first,) = inbox.wait_for(lambda got: len(got) == 1, path)
    wait_for_status(api, tenant, webhook_id, "delivered")

    again = ok(
        api.post(
            f"{WEBHOOKS}/{webhook_id}/deliveries/{first.webhook_id}/redeliver",
            headers=tenant.auth,
            json={},
        )
    )

    assert again["delivery_id"] == first.webhook_id
    assert again["status"] == "pending"
    _, second = inbox.wait_for(lambda got: len(got) == 2, path)
    assert (second.webhook_id, second.body, second.verified) == (
        first.webhook_id,
        first.body,
        True,
    )


def test_the_delivery_log_pages_newest_first(
    api: httpx.Client, tenant: Tenant, inbox: Receiver
) -> None:
    webhook_id = create_webhook(api, tenant, inbox, new_path(), events=["process.created"])[
        "webhook_id"
    ]
    created = [new_process(api, tenant) for _ in range(5)]

    seen: list[str] = []
    page = deliveries(api, tenant, webhook_id, limit=2)
    while True:
        assert len(page["deliveries"]) <= 2
        seen += [delivery["process_id"] for delivery in page["deliveries"]]
        if not page["next_page_token"]:
            break
        page = deliveries(api, tenant, webhook_id, limit=2, page_token=page["next_page_token"])
    assert seen == created[::-1]
    assert_invalid_field(
        api.get(
            f"{WEBHOOKS}/{webhook_id}/deliveries",
            headers=tenant.auth,
            params={"page_token": "bogus"},
        ),
        "page_token",
    )


def test_another_organizations_webhooks_are_not_found(
    api: httpx.Client, hooks_stack: Stack, tenant: Tenant, inbox: Receiver
) -> None:
    webhook_id = create_webhook(api, tenant, inbox, new_path())["webhook_id"]
    new_process(api, tenant)
    delivery_id = deliveries(api, tenant, webhook_id)["deliveries"][0]["delivery_id"]
    stranger = Tenant(hooks_stack).auth
    hook = f"{WEBHOOKS}/{webhook_id}"

    for response in (
        api.get(hook, headers=stranger),
        api.delete(hook, headers=stranger),
        api.post(f"{hook}/enable", headers=stranger, json={}),
        api.get(f"{hook}/deliveries", headers=stranger),
        api.post(f"{hook}/deliveries/{delivery_id}/redeliver", headers=stranger, json={}),
        api.get(f"{WEBHOOKS}/not-a-uuid", headers=stranger),
    ):
        assert_error(response, 404, NOT_FOUND)
    assert ok(api.get(WEBHOOKS, headers=stranger))["webhooks"] == []
    assert ok(api.get(hook, headers=tenant.auth))["webhook_id"] == webhook_id


def test_calls_need_the_scope(api: httpx.Client, tenant: Tenant) -> None:
    for token in (tenant.org.writer, tenant.org.reader):
        refused = api.get(WEBHOOKS, headers=tenant.org.auth(token))
        body = assert_error(refused, 403, PERMISSION_DENIED)
        assert "webhooks:manage" in body["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["*"]}, "url"),
        ({"url": "ftp://example.com/hook", "events": ["*"]}, "url"),
        ({"url": "http://user:pw@127.0.0.1/hook", "events": ["*"]}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data", "events": ["*"]}, "url"),
        ({"url": "http://[fe80::1]/hook", "events": ["*"]}, "url"),
        ({"url": "http://224.0.0.1/hook", "events": ["*"]}, "url"),
        ({"url": "http://0.0.0.0/hook", "events": ["*"]}, "url"),
        ({"url": "http://no-such-host.invalid/hook", "events": ["*"]}, "url"),
        ({"url": "http://127.0.0.1/hook"}, "events"),
        ({"url": "http://127.0.0.1/hook", "events": ["process.exploded"]}, "events"),
        ({"url": "http://127.0.0.1/hook", "events": ["*"], "namespace": "other.x"}, "namespace"),
        (
            {"url": "http://127.0.0.1/hook", "events": ["*"], "description": "d" * 501},
            "description",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    api: httpx.Client, tenant: Tenant, body: Json, field: str
) -> None:
    assert_invalid_field(api.post(WEBHOOKS, headers=tenant.auth, json=body), field)


def test_loopback_and_private_urls_are_refused_by_default(rest: httpx.Client, stack: Stack) -> None:
    org = stack.new_org("hooks")
    manager = org.auth(create_token(stack.env, org.org_id, "webhooks:manage"))
    for url in ("http://127.0.0.1:9/hook", "http://10.0.0.1/hook", "http://[::1]/hook"):
        assert_invalid_field(
            rest.post(WEBHOOKS, headers=manager, json={"url": url, "events": ["*"]}), "url"
        )


def test_webhooks_over_native_grpc(hooks_stack: Stack, tenant: Tenant, inbox: Receiver) -> None:
    path = new_path()
    metadata = tenant.org.metadata(tenant.manager)
    with grpc.insecure_channel(hooks_stack.envoy_target) as channel:
        stub = pb_grpc.WebhookServiceStub(channel)
        created = stub.CreateWebhook(
            pb.CreateWebhookRequest(url=inbox.url(path), events=["process.created"]),
            metadata=metadata,
        )
        assert created.secret.startswith("whsec_") and created.enabled
        inbox.expect(path, created.secret)
        read = stub.GetWebhook(
            pb.GetWebhookRequest(webhook_id=created.webhook_id), metadata=metadata
        )
        assert not read.HasField("secret")
        listed = stub.ListWebhooks(pb.ListWebhooksRequest(), metadata=metadata)
        assert [webhook.webhook_id for webhook in listed.webhooks] == [created.webhook_id]
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateWebhook(
                pb.CreateWebhookRequest(url="gopher://x", events=["*"]), metadata=metadata
            )
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "url" in (refused.value.details() or "")
        with pytest.raises(grpc.RpcError) as missing:
            stub.EnableWebhook(
                pb.EnableWebhookRequest(webhook_id=str(created.webhook_id)[::-1]), metadata=metadata
            )
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        with httpx.Client(base_url=hooks_stack.http_url, timeout=30) as api:
            new_process(api, tenant)
        (arrival,) = inbox.wait_for(lambda got: len(got) == 1, path)
        assert arrival.verified
        log = stub.ListWebhookDeliveries(
            pb.ListWebhookDeliveriesRequest(webhook_id=created.webhook_id), metadata=metadata
        )
        assert [delivery.delivery_id for delivery in log.deliveries] == [arrival.webhook_id]
        again = stub.RedeliverWebhookDelivery(
            pb.RedeliverWebhookDeliveryRequest(
                webhook_id=created.webhook_id, delivery_id=arrival.webhook_id
            ),
            metadata=metadata,
        )
        assert again.delivery_id == arrival.webhook_id
        _, second = inbox.wait_for(lambda got: len(got) == 2, path)
        assert second.webhook_id == arrival.webhook_id
        stub.DeleteWebhook(
            pb.DeleteWebhookRequest(webhook_id=created.webhook_id), metadata=metadata
        )


def test_an_organization_may_have_only_so_many_webhooks(
    api: httpx.Client, hooks_stack: Stack, tenant: Tenant, inbox: Receiver
) -> None:
    url, events = inbox.url(new_path()), ["task.expired"]
    body = {"url": url, "events": events}
    held = [
        ok(api.post(WEBHOOKS, headers=tenant.auth, json=body))["webhook_id"]
        for _ in range(MAX_WEBHOOKS_PER_ORGANIZATION)
    ]
    refused = assert_error(api.post(WEBHOOKS, headers=tenant.auth, json=body), 429, 8)
    assert f"({MAX_WEBHOOKS_PER_ORGANIZATION})" in refused["message"]
    with (
        grpc.insecure_channel(hooks_stack.envoy_target) as channel,
        pytest.raises(grpc.RpcError) as over,
    ):
        pb_grpc.WebhookServiceStub(channel).CreateWebhook(
            pb.CreateWebhookRequest(url=url, events=events),
            metadata=tenant.org.metadata(tenant.manager),
        )
    assert over.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(ok(api.get(WEBHOOKS, headers=tenant.auth))["webhooks"]) == len(held)
    # Another organization's count is its own; a deleted webhook makes room.
    ok(api.post(WEBHOOKS, headers=Tenant(hooks_stack).auth, json=body))
    ok(api.delete(f"{WEBHOOKS}/{held[0]}", headers=tenant.auth))
    ok(api.post(WEBHOOKS, headers=tenant.auth, json=body))
