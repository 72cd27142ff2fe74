"""Webhooks' rules, without I/O: which messages a change sends, what an
attempt's reply leads to, the signature, and the addresses never called."""

import base64
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from server.domain.declared import EventType, UpdateType
from server.domain.errors import InvalidArgument, ResourceExhausted
from server.domain.processes import Event
from server.domain.processes.lifecycle import Change
from server.domain.tasks import Task, TaskStatus
from server.domain.webhooks import (
    MAX_WEBHOOKS_PER_ORGANIZATION,
    Delivery,
    DeliveryStatus,
    WebhookEvent,
    after_attempt,
    check_addresses,
    check_room_for_webhook,
    delivery_page,
    delivery_query,
    messages_of,
    new_secret,
    new_webhook,
    refused_address,
    retry_delay,
    signature,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SCHEDULE = (5.0, 300.0)


def change(
    event_type: UpdateType | EventType, payload: dict[str, str] | None = None, *tasks: Task
) -> Change:
    event = Event(1, event_type, "review", payload or {}, NOW, actor="ci")
    return Change(event=event, tasks=tasks)


def task(status: TaskStatus) -> Task:
    return Task(
        task_id=uuid.uuid4(),
        process_id=uuid.uuid4(),
        org_id="acme",
        namespace="acme.deployments",
        process_name="Deploy",
        step="review",
        label="Review",
        created_at=NOW,
        status=status,
    )


@pytest.mark.parametrize(
    ("made", "messages"),
    [
        (change(UpdateType.PROGRESS), ()),
        (change(UpdateType.STEP_STARTED), ()),
        (change(UpdateType.STEP_COMPLETED), ()),
        (change(UpdateType.STEP_STARTED, None, task(TaskStatus.OPEN)), ("task.opened",)),
        (change(UpdateType.STEP_FAILED), ("step.failed",)),
        (change(UpdateType.COMPLETED), ("process.completed",)),
        (change(UpdateType.FAILED), ("process.failed",)),
        (change(EventType.CANCELLED), ("process.cancelled",)),
        (
            change(EventType.STEP_TIMED_OUT, None, task(TaskStatus.EXPIRED)),
            ("step.timed_out", "task.expired"),
        ),
        (
            change(EventType.TASK_COMPLETED, {"outcome": "approved"}, task(TaskStatus.COMPLETED)),
            ("task.completed",),
        ),
        (
            change(EventType.TASK_COMPLETED, {"outcome": "rejected"}, task(TaskStatus.COMPLETED)),
            ("task.completed", "step.failed"),
        ),
    ],
)
def test_each_change_sends_its_messages(made: Change, messages: tuple[str, ...]) -> None:
    assert messages_of(made) == tuple(WebhookEvent(message) for message in messages)


def test_the_signature_verifies_with_standardwebhooks() -> None:
    key = bytes(range(32))
    secret = new_secret(key)
    body = b'{"type":"process.created"}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, "msg_1", timestamp, body),
    }
    assert secret.startswith("whsec_") and base64.b64decode(secret[6:]) == key
    assert Verifier(secret).verify(body, headers) == {"type": "process.created"}


def test_a_2xx_delivers_and_a_410_disables() -> None:
    delivered = after_attempt(1, 204, None, NOW, SCHEDULE)
    assert (delivered.status, delivered.error, delivered.disable_webhook) == (
        DeliveryStatus.DELIVERED,
        None,
        False,
    )
    gone = after_attempt(1, 410, None, NOW, SCHEDULE)
    assert (gone.status, gone.next_attempt_at, gone.disable_webhook) == (
        DeliveryStatus.FAILED,
        None,
        True,
    )


@pytest.mark.parametrize(("status_code", "error"), [(500, None), (302, None), (None, "timeout")])
def test_anything_else_is_retried_on_the_schedule_then_fails(
    status_code: int | None, error: str | None
) -> None:
    rng = random.Random(1)  # noqa: S311 - jitter, not a secret
    first = after_attempt(1, status_code, error, NOW, SCHEDULE, rng)
    assert first.status is DeliveryStatus.PENDING
    assert first.next_attempt_at is not None
    assert timedelta(seconds=4) <= first.next_attempt_at - NOW <= timedelta(seconds=6)
    assert first.error == (error or f"the receiver answered {status_code}")
    second = after_attempt(2, status_code, error, NOW, SCHEDULE, rng)
    assert second.next_attempt_at is not None
    assert timedelta(seconds=240) <= second.next_attempt_at - NOW <= timedelta(seconds=360)
    last = after_attempt(3, status_code, error, NOW, SCHEDULE, rng)
    assert (last.status, last.next_attempt_at) == (DeliveryStatus.FAILED, None)


def test_jitter_spreads_retries() -> None:
    rng = random.Random(7)  # noqa: S311 - jitter, not a secret
    delays = {retry_delay(1, SCHEDULE, rng) for _ in range(50)}
    assert len(delays) > 40


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "fe80::1",
        "::ffff:169.254.169.254",
        "224.0.0.1",
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "::",
        "ff02::1",
        "fe80::1%1",
        "fd00:ec2::254",
        "100.100.100.200",
        # IPv6 addresses that lead to an IPv4 one: NAT64, 6to4, IPv4-compatible.
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "::a9fe:a9fe",
        "::ffff:0.0.0.0",
    ],
)
def test_link_local_multicast_and_unspecified_are_always_refused(address: str) -> None:
    assert refused_address(address, allow_private=True) is not None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.1.1",
        "::1",
        "fd12::1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "::7f00:1",
        "100.64.0.1",
    ],
)
def test_loopback_and_private_need_the_setting(address: str) -> None:
    assert refused_address(address, allow_private=False) is not None
    assert refused_address(address, allow_private=True) is None


def test_public_addresses_are_allowed() -> None:
    assert refused_address("93.184.216.34", allow_private=False) is None
    assert refused_address("2606:2800:220:1::1", allow_private=False) is None


def test_one_refused_address_refuses_the_host() -> None:
    with pytest.raises(InvalidArgument) as refused:
        check_addresses(["93.184.216.34", "10.0.0.1"], allow_private=False)
    assert refused.value.field == "url"
    with pytest.raises(InvalidArgument):
        check_addresses([], allow_private=True)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": ""}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://a:b@example.com"}, "url"),
        ({"url": "https://example.com:99999/"}, "url"),
        ({"url": "https://example.com/a b"}, "url"),
        ({"url": "https://example.com/\u20ac"}, "url"),
        ({"url": "https://b\u00fccher.example/"}, "url"),
        ({"url": "https://example.com/" + "a" * 2048}, "url"),
        ({"events": []}, "events"),
        ({"events": ["task.opened", "task.closed"]}, "events"),
        ({"events": ["*"] * 17}, "events"),
        ({"namespace": "other.deployments"}, "namespace"),
        ({"description": "x\x00"}, "description"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, object], field: str) -> None:
    request: dict[str, object] = {
        "url": "https://example.com/hook",
        "events": ["*"],
        "namespace": None,
        "description": None,
    }
    with pytest.raises(InvalidArgument) as refused:
        new_webhook("acme", **(request | fields))  # type: ignore[arg-type]
    assert refused.value.field == field


def test_a_bare_namespace_gets_the_organization() -> None:
    created = new_webhook(
        "acme",
        url="https://example.com/hook",
        events=["task.opened", "task.opened"],
        namespace="deployments",
        description=None,
    )
    assert (created.namespace, created.events, created.host) == (
        "acme.deployments",
        ("task.opened",),
        "example.com",
    )


def test_a_page_token_belongs_to_its_webhook() -> None:
    webhook_id = uuid.uuid4()
    query = delivery_query("acme", webhook_id, limit=1, page_token="")
    logged = [
        Delivery(
            uuid.uuid4(),
            webhook_id,
            "task.opened",
            uuid.uuid4(),
            DeliveryStatus.PENDING,
            0,
            None,
            None,
            NOW,
            NOW - timedelta(seconds=age),
            None,
        )
        for age in (1, 2)
    ]
    token = delivery_page(query, logged).next_page_token
    assert token is not None
    after = delivery_query("acme", webhook_id, limit=None, page_token=token).after
    assert after == (logged[0].created_at, logged[0].delivery_id)
    with pytest.raises(InvalidArgument) as refused:
        delivery_query("acme", uuid.uuid4(), limit=None, page_token=token)
    assert refused.value.field == "page_token"


def test_an_organization_may_add_webhooks_up_to_the_most_it_may_have() -> None:
    check_room_for_webhook(MAX_WEBHOOKS_PER_ORGANIZATION - 1)
    with pytest.raises(ResourceExhausted, match=f"has {MAX_WEBHOOKS_PER_ORGANIZATION} webhooks"):
        check_room_for_webhook(MAX_WEBHOOKS_PER_ORGANIZATION)
