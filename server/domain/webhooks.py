"""Webhooks: which events a URL is sent, the messages and their signatures,
when a failed attempt is tried again, and which addresses are never called.

Plain Python: resolving a host and sending a message are the service's; what
an address or a reply means is decided here.
"""

import base64
import enum
import hashlib
import hmac
import ipaddress
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from server.domain.checks import check_text, one_of, qualify_namespace
from server.domain.declared import (
    CREATE_WEBHOOK_REQUEST_DESCRIPTION_MAX_LENGTH,
    CREATE_WEBHOOK_REQUEST_EVENTS_MAX_ITEMS,
    CREATE_WEBHOOK_REQUEST_URL_MAX_LENGTH,
    LIST_WEBHOOK_DELIVERIES_REQUEST_LIMIT_MAXIMUM,
    EventType,
    Outcome,
    UpdateType,
)

# The words of a delivery's status, declared by the protos; offered here
# beside the delivery they describe.
from server.domain.declared import DeliveryStatus as DeliveryStatus
from server.domain.errors import InvalidArgument, ResourceExhausted
from server.domain.paging import (
    DEFAULT_PAGE_SIZE,
    check_window,
    fingerprint,
    make_page_token,
    read_page_token,
    split_page,
)
from server.domain.processes.lifecycle import Change
from server.domain.tasks import TaskStatus

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix Standard Webhooks gives secrets
# Standard Webhooks asks for 24 to 64 bytes of key.
SECRET_BYTES = 32
# Every change of a process reads its organization's webhooks, and each one
# an organization adds is another delivery of each event to sign and send.
MAX_WEBHOOKS_PER_ORGANIZATION = 50
USER_AGENT = "htk-webhooks/1"
ALL_EVENTS = "*"


class WebhookEvent(enum.StrEnum):
    """The event types a webhook subscribes to, and a message's `type`."""

    PROCESS_CREATED = "process.created"
    PROCESS_COMPLETED = "process.completed"
    PROCESS_FAILED = "process.failed"
    PROCESS_CANCELLED = "process.cancelled"
    STEP_FAILED = "step.failed"
    STEP_TIMED_OUT = "step.timed_out"
    TASK_OPENED = "task.opened"
    TASK_COMPLETED = "task.completed"
    TASK_EXPIRED = "task.expired"


# The message each logged event is, where it is one by its type alone.
_EVENT_MESSAGES: dict[UpdateType | EventType, WebhookEvent] = {
    UpdateType.COMPLETED: WebhookEvent.PROCESS_COMPLETED,
    UpdateType.FAILED: WebhookEvent.PROCESS_FAILED,
    EventType.CANCELLED: WebhookEvent.PROCESS_CANCELLED,
    UpdateType.STEP_FAILED: WebhookEvent.STEP_FAILED,
    EventType.STEP_TIMED_OUT: WebhookEvent.STEP_TIMED_OUT,
    EventType.TASK_COMPLETED: WebhookEvent.TASK_COMPLETED,
}


def messages_of(change: Change) -> tuple[WebhookEvent, ...]:
    """The messages a change to a process sends, in the order they happened:
    none for most updates (progress, a step started or completed)."""
    event = change.event
    found = []
    if (message := _EVENT_MESSAGES.get(event.type)) is not None:
        found.append(message)
    # A rejection fails the step, which a step.failed subscriber wants to hear of.
    if event.type is EventType.TASK_COMPLETED and event.payload.get("outcome") == Outcome.REJECTED:
        found.append(WebhookEvent.STEP_FAILED)
    for task in change.tasks:
        if task.status is TaskStatus.OPEN:
            found.append(WebhookEvent.TASK_OPENED)
        elif task.status is TaskStatus.EXPIRED:
            found.append(WebhookEvent.TASK_EXPIRED)
    return tuple(found)


@dataclass(frozen=True)
class NewWebhook:
    """A validated CreateWebhook request (the host not yet resolved)."""

    url: str
    host: str
    events: tuple[str, ...]
    namespace: str | None
    description: str | None


def new_webhook(
    org_id: str,
    *,
    url: str,
    events: Sequence[str],
    namespace: str | None,
    description: str | None,
) -> NewWebhook:
    """Checks a CreateWebhook request's fields; a bare namespace gets the
    organization's prefix."""
    return NewWebhook(
        url=url,
        host=url_host(url),
        events=_check_events(events),
        namespace=qualify_namespace(org_id, namespace) if namespace is not None else None,
        description=_check_description(description),
    )


def check_room_for_webhook(count: int) -> None:
    """Refuses a new webhook to an organization that has `count` already, if that is the most."""
    if count >= MAX_WEBHOOKS_PER_ORGANIZATION:
        raise ResourceExhausted(
            f"the organization has {count} webhooks, the most it may have"
            f" ({MAX_WEBHOOKS_PER_ORGANIZATION}); delete one it no longer needs"
        )


def url_host(url: str) -> str:
    """The host of a webhook URL: http(s), with a host, no credentials."""
    if not url:
        raise InvalidArgument("url", "is required")
    check_text("url", url, CREATE_WEBHOOK_REQUEST_URL_MAX_LENGTH)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is no number or out of range
    except ValueError as error:
        raise InvalidArgument("url", f"is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument("url", "must start with https:// or http://")
    if not parts.hostname:
        raise InvalidArgument("url", "names no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("url", "must not carry credentials; sign with the secret instead")
    if any(char.isspace() or ord(char) < 0x20 for char in url):
        raise InvalidArgument("url", "must not contain spaces or control characters")
    # The request line and Host header are sent as they are written: other
    # characters would be no HTTP, or fail every attempt without a record.
    if not url.isascii():
        raise InvalidArgument(
            "url", "must be ASCII: percent-encode the path, and write the host in IDNA (xn--)"
        )
    return parts.hostname


def _check_events(events: Sequence[str]) -> tuple[str, ...]:
    if not events:
        raise InvalidArgument("events", f"is required: {ALL_EVENTS!r} or some of {_known()}")
    if len(events) > CREATE_WEBHOOK_REQUEST_EVENTS_MAX_ITEMS:
        raise InvalidArgument(
            "events", f"must list at most {CREATE_WEBHOOK_REQUEST_EVENTS_MAX_ITEMS} types"
        )
    for name in events:
        if name != ALL_EVENTS and name not in WebhookEvent.__members__.values():
            raise InvalidArgument("events", f"unknown event type {name!r}; expected {_known()}")
    return tuple(sorted(set(events)))


def _known() -> str:
    return f"{ALL_EVENTS!r} or one of: {one_of(WebhookEvent)}"


def _check_description(description: str | None) -> str | None:
    check_text("description", description, CREATE_WEBHOOK_REQUEST_DESCRIPTION_MAX_LENGTH)
    return description


def new_secret(key: bytes) -> str:
    """The secret a webhook signs with, as its creator gets it once."""
    return SECRET_PREFIX + base64.b64encode(key).decode()


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header of one attempt (Standard Webhooks, `v1`)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Webhook:
    webhook_id: uuid.UUID
    org_id: str
    url: str
    events: tuple[str, ...]
    namespace: str | None
    description: str | None
    enabled: bool
    created_at: datetime
    # Only in CreateWebhook's answer: never read back.
    secret: str | None = None


@dataclass(frozen=True)
class Delivery:
    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    event_type: str
    process_id: uuid.UUID
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class DeliveryQuery:
    """A validated ListWebhookDeliveries request: newest first."""

    org_id: str
    webhook_id: uuid.UUID
    limit: int = DEFAULT_PAGE_SIZE
    # Set by a page token: the page starts right after this (created_at, delivery_id).
    after: tuple[datetime, uuid.UUID] | None = None


def delivery_query(
    org_id: str, webhook_id: uuid.UUID, *, limit: int | None, page_token: str
) -> DeliveryQuery:
    limit, _ = check_window(limit, None, LIST_WEBHOOK_DELIVERIES_REQUEST_LIMIT_MAXIMUM)
    after = (
        read_page_token(
            page_token,
            offset=0,
            filters_fingerprint=_fingerprint(webhook_id),
            filters="webhook",
        )
        if page_token
        else None
    )
    return DeliveryQuery(org_id, webhook_id, limit, after)


def _fingerprint(webhook_id: uuid.UUID) -> str:
    return fingerprint([str(webhook_id)])


@dataclass(frozen=True)
class DeliveryPage:
    deliveries: list[Delivery]
    next_page_token: str | None


def delivery_page(query: DeliveryQuery, matches: list[Delivery]) -> DeliveryPage:
    """The page to return from up to `query.limit + 1` deliveries read newest first."""
    shown, last = split_page(matches, query.limit)
    token = (
        make_page_token(_fingerprint(query.webhook_id), last.created_at, last.delivery_id)
        if last is not None
        else None
    )
    return DeliveryPage(shown, token)


# A retry comes up to this share of its delay earlier or later, so that the
# retries of many deliveries that failed together do not arrive together.
JITTER = 0.2


def retry_delay(
    attempts: int, schedule: Sequence[float], rng: random.Random | None = None
) -> timedelta | None:
    """How long after its `attempts`-th failed attempt a delivery is tried
    again, or None when the schedule is spent (the delivery has failed)."""
    if attempts > len(schedule):
        return None
    spread = (rng or random).uniform(1.0 - JITTER, 1.0 + JITTER)
    return timedelta(seconds=schedule[attempts - 1] * spread)


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt leaves a delivery with."""

    status: DeliveryStatus
    # When to try again; None unless still pending.
    next_attempt_at: datetime | None
    # The delivery log's `last_error`: None if it was delivered.
    error: str | None
    # A 410 Gone: the receiver says the webhook is no more.
    disable_webhook: bool = False


def after_attempt(
    attempts: int,
    status_code: int | None,
    error: str | None,
    now: datetime,
    schedule: Sequence[float],
    rng: random.Random | None = None,
) -> AttemptResult:
    """Decides a delivery's fate after its `attempts`-th attempt, which got
    the reply `status_code` (None: no reply, for `error`)."""
    if status_code is not None:
        if 200 <= status_code < 300:
            return AttemptResult(DeliveryStatus.DELIVERED, None, None)
        if status_code == 410:
            error = "410 Gone: the webhook was disabled"
            return AttemptResult(DeliveryStatus.FAILED, None, error, disable_webhook=True)
        error = f"the receiver answered {status_code}"
    delay = retry_delay(attempts, schedule, rng)
    if delay is None:
        return AttemptResult(DeliveryStatus.FAILED, None, error)
    return AttemptResult(DeliveryStatus.PENDING, now + delay, error)


def refused_address(address: str, *, allow_private: bool) -> str | None:
    """Why a webhook may not connect to `address`, or None if it may.

    Link-local addresses (IPv4 169.254/16, which holds the clouds' metadata
    services, and IPv6 fe80::/10) are refused even where private ones are
    allowed: no receiver of webhooks lives there, and the metadata service
    hands out credentials.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
        ip = embedded
    if ip.is_link_local or ip in _METADATA:
        return f"{ip} is link-local (cloud metadata)"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    # Loopback, the private ranges, and the others that are not public
    # (shared, reserved, documentation): an on-premises receiver's at most.
    if not allow_private and (ip.is_loopback or ip.is_private or not ip.is_global):
        return f"{ip} is loopback or private (HTK_WEBHOOK_ALLOW_PRIVATE permits it)"
    return None


# Metadata addresses outside link-local ranges: AWS's IPv6 one, and
# Alibaba Cloud's (in the shared range 100.64/10, which private allows).
_METADATA = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
# IPv6 prefixes whose last 32 bits are an IPv4 address the packets reach:
# NAT64's well-known and local-use ones (RFC 6052, RFC 8215), and the
# deprecated IPv4-compatible one (::/96), which some stacks still route.
_IPV4_TRANSLATED = tuple(
    ipaddress.ip_network(prefix) for prefix in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96")
)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to, if any: judged as that one, so
    that `::ffff:127.0.0.1`, `64:ff9b::a9fe:a9fe` (NAT64) or `2002:7f00:1::`
    (6to4) are no way around the IPv4 checks."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in network for network in _IPV4_TRANSLATED) and int(ip) > 1:
        # `::` and `::1` are IPv6's own, judged as such.
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def check_addresses(addresses: Iterable[str], *, allow_private: bool) -> list[str]:
    """The addresses a host resolved to, if every one may be called; else
    InvalidArgument naming `url`. All of them, not the first: a name that
    resolves to a public and a private address must not be a way in."""
    allowed = list(dict.fromkeys(addresses))
    if not allowed:
        raise InvalidArgument("url", "its host resolves to no address")
    for address in allowed:
        if (why := refused_address(address, allow_private=allow_private)) is not None:
            raise InvalidArgument("url", f"its host resolves to a refused address: {why}")
    return allowed
