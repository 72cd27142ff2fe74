"""Webhooks and their deliveries: the subscriptions, the outbox that changes
write into, the workers' claims and what their attempts came to.

Functions on the connection of a transaction that the service layer opened.
"""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.webhooks import (
    Delivery,
    DeliveryQuery,
    DeliveryStatus,
    Webhook,
    WebhookEvent,
)
from server.storage.database import after_commit, in_one_round_trip, write_later
from server.storage.tables import WebhookDeliveryRow, WebhookRow

# The delivery workers listen here: a transaction that queued deliveries
# wakes them at its commit.
CHANNEL = "htk_webhook_deliveries"

_WEBHOOK_COLUMNS = [
    column for column in WebhookRow.__table__.columns if column.name != "signing_key"
]
_DELIVERY_COLUMNS = [
    column for column in WebhookDeliveryRow.__table__.columns if column.name not in ("body", "seq")
]

# The outbox: one delivery per message and enabled webhook of the
# organization that subscribed to it, written with the change that caused it.
_QUEUE = """
INSERT INTO webhook_deliveries (delivery_id, webhook_id, event_type, process_id, seq,
                                status, attempts, next_attempt_at, created_at)
SELECT gen_random_uuid(), w.webhook_id, m.type, %(process_id)s, %(seq)s,
       'pending', 0, %(now)s, %(now)s
FROM webhooks AS w CROSS JOIN unnest(%(types)s::text[]) WITH ORDINALITY AS m(type, position)
WHERE w.org_id = %(org_id)s AND w.enabled
  AND (w.namespace IS NULL OR w.namespace = %(namespace)s)
  AND w.events && ARRAY[m.type, '*']
ORDER BY m.position
"""
# Wakes the workers once the change has committed, if it queued anything:
# a NOTIFY inside the transaction would hold PostgreSQL's global
# notification lock through the commit's WAL flush (see `after_commit`).
# A wake-up lost to a crash right after the commit costs a worker's poll.
_WAKE = """
SELECT pg_notify(%(channel)s, '')
WHERE EXISTS (SELECT FROM webhook_deliveries WHERE process_id = %(process_id)s AND seq = %(seq)s)
"""

# Takes the due deliveries, the oldest of each webhook first, up to
# `per_webhook` in flight per webhook with those this worker is already
# sending (so that a slow receiver holds up its own webhook only), and
# leases them until `lease_until`: a worker that dies mid-attempt leaves its
# deliveries to be taken over then. SKIP LOCKED: a delivery that another
# worker is claiming is its.
_CLAIM = """
UPDATE webhook_deliveries AS d
SET attempts = d.attempts + 1, next_attempt_at = %(lease_until)s
FROM webhooks AS w
WHERE w.webhook_id = d.webhook_id AND d.delivery_id IN (
  SELECT delivery_id FROM webhook_deliveries
  WHERE delivery_id IN (
    SELECT delivery_id FROM (
      SELECT due.delivery_id, coalesce(busy.sending, 0)
          + row_number() OVER (PARTITION BY due.webhook_id
                               ORDER BY due.next_attempt_at, due.created_at) AS position
      FROM webhook_deliveries AS due
      LEFT JOIN unnest(%(busy)s::uuid[], %(sending)s::int[]) AS busy(webhook_id, sending)
        USING (webhook_id)
      WHERE due.status = 'pending' AND due.next_attempt_at <= %(now)s
    ) AS ranked
    WHERE position <= %(per_webhook)s
  ) AND status = 'pending' AND next_attempt_at <= %(now)s
  ORDER BY next_attempt_at
  LIMIT %(limit)s
  FOR UPDATE SKIP LOCKED
)
RETURNING d.delivery_id, d.webhook_id, w.org_id, w.url, w.signing_key, d.event_type,
  d.process_id, d.seq, d.attempts, d.created_at, d.body
"""

# An attempt's outcome, unless the delivery was taken over meanwhile (its
# lease ran out and another worker made a later attempt) or deleted.
_FINISH = """
UPDATE webhook_deliveries
SET status = %(status)s, next_attempt_at = %(next_attempt_at)s,
  last_status_code = %(status_code)s, last_error = %(error)s,
  delivered_at = coalesce(delivered_at, %(delivered_at)s),
  body = coalesce(body, %(body)s)
WHERE delivery_id = %(delivery_id)s AND attempts = %(attempts)s
"""

# A 410: the webhook is turned off, and its pending deliveries end.
_DISABLE = """
WITH webhook AS (
  UPDATE webhooks SET enabled = false WHERE webhook_id = %(webhook_id)s
)
UPDATE webhook_deliveries
SET status = 'failed', next_attempt_at = NULL,
  last_error = coalesce(last_error, 'not sent: the webhook was disabled by a 410 Gone')
WHERE webhook_id = %(webhook_id)s AND status = 'pending' AND delivery_id <> %(delivery_id)s
"""


def queue(
    connection: AsyncConnection,
    *,
    org_id: str,
    namespace: str,
    process_id: uuid.UUID,
    seq: int,
    messages: Sequence[WebhookEvent],
    now: datetime,
) -> None:
    """Queues the messages of a change (or a creation, seq 0) for the
    organization's webhooks that want them; the deliveries commit with the
    change, and the workers are woken once it has committed. Travels with
    the transaction's next round trip."""
    if messages:
        parameters = {
            "org_id": org_id,
            "namespace": namespace,
            "process_id": process_id,
            "seq": seq,
            "types": [message.value for message in messages],
            "now": now,
        }
        write_later(connection, (_QUEUE, parameters))
        wake = {"channel": CHANNEL, "process_id": process_id, "seq": seq}
        after_commit(connection, (_WAKE, wake))


async def add(connection: AsyncConnection, webhook: Webhook, signing_key: bytes) -> None:
    values = {column.name: getattr(webhook, column.name) for column in _WEBHOOK_COLUMNS}
    await connection.execute(
        insert(WebhookRow), values | {"events": list(webhook.events), "signing_key": signing_key}
    )


async def list_webhooks(connection: AsyncConnection, org_id: str) -> list[Webhook]:
    statement = (
        select(*_WEBHOOK_COLUMNS)
        .where(WebhookRow.org_id == org_id)
        .order_by(WebhookRow.created_at.desc(), WebhookRow.webhook_id.desc())
    )
    return [_webhook(row) for row in await connection.execute(statement)]


async def get(connection: AsyncConnection, org_id: str, webhook_id: uuid.UUID) -> Webhook | None:
    statement = select(*_WEBHOOK_COLUMNS).where(*_mine(org_id, webhook_id))
    row = (await connection.execute(statement)).one_or_none()
    return _webhook(row) if row is not None else None


async def remove(connection: AsyncConnection, org_id: str, webhook_id: uuid.UUID) -> Webhook | None:
    """Deletes the webhook (its deliveries go with it); returns it, if it was one."""
    statement = delete(WebhookRow).where(*_mine(org_id, webhook_id)).returning(*_WEBHOOK_COLUMNS)
    row = (await connection.execute(statement)).one_or_none()
    return _webhook(row) if row is not None else None


async def enable(connection: AsyncConnection, org_id: str, webhook_id: uuid.UUID) -> Webhook | None:
    statement = (
        update(WebhookRow)
        .where(*_mine(org_id, webhook_id))
        .values(enabled=True)
        .returning(*_WEBHOOK_COLUMNS)
    )
    row = (await connection.execute(statement)).one_or_none()
    return _webhook(row) if row is not None else None


def _mine(org_id: str, webhook_id: uuid.UUID) -> tuple[Any, ...]:
    return (WebhookRow.org_id == org_id, WebhookRow.webhook_id == webhook_id)


def _webhook(row: Row[Any]) -> Webhook:
    values = row._asdict()
    return Webhook(**values | {"events": tuple(values["events"])})


async def deliveries(connection: AsyncConnection, query: DeliveryQuery) -> list[Delivery]:
    """A page of a webhook's deliveries, newest first, and one more to tell if
    another page follows. (The webhook's organization is checked by the caller.)"""
    row = WebhookDeliveryRow
    statement = (
        select(*_DELIVERY_COLUMNS)
        .where(row.webhook_id == query.webhook_id)
        .order_by(row.created_at.desc(), row.delivery_id.desc())
        .limit(query.limit + 1)
    )
    if query.after is not None:
        statement = statement.where(tuple_(row.created_at, row.delivery_id) < tuple_(*query.after))
    return [_delivery(found) for found in await connection.execute(statement)]


async def redeliver(
    connection: AsyncConnection, webhook_id: uuid.UUID, delivery_id: uuid.UUID, now: datetime
) -> Delivery | None:
    """Makes the delivery pending and due now, if the webhook has it."""
    row = WebhookDeliveryRow
    statement = (
        update(row)
        .where(row.webhook_id == webhook_id, row.delivery_id == delivery_id)
        .values(
            status=DeliveryStatus.PENDING.value,
            next_attempt_at=now,
        )
        .returning(*_DELIVERY_COLUMNS)
    )
    found = (await connection.execute(statement)).one_or_none()
    return _delivery(found) if found is not None else None


def _delivery(row: Row[Any]) -> Delivery:
    values = row._asdict()
    return Delivery(**values | {"status": DeliveryStatus(values["status"])})


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker leased for one attempt, with what it needs to send it."""

    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    org_id: str
    url: str
    signing_key: bytes
    event_type: str
    process_id: uuid.UUID
    seq: int
    # This attempt's number: 1 for the first.
    attempts: int
    created_at: datetime
    # None until the first attempt made the message.
    body: bytes | None


async def claim(
    connection: AsyncConnection,
    *,
    now: datetime,
    lease_until: datetime,
    sending: Mapping[uuid.UUID, int],
    per_webhook: int,
    limit: int,
) -> list[Claimed]:
    """Leases up to `limit` due deliveries; `sending` counts the attempts
    this worker has under way, by webhook."""
    parameters = {
        "now": now,
        "lease_until": lease_until,
        "busy": list(sending),
        "sending": list(sending.values()),
        "per_webhook": per_webhook,
        "limit": limit,
    }
    rows = await in_one_round_trip(connection, (_CLAIM, parameters))
    return [Claimed(*row) for row in rows]


def finish(
    connection: AsyncConnection,
    claimed: Claimed,
    *,
    status: DeliveryStatus,
    next_attempt_at: datetime | None,
    status_code: int | None,
    error: str | None,
    delivered_at: datetime | None,
    body: bytes,
    disable_webhook: bool,
) -> None:
    """Records what the attempt came to (with the COMMIT's round trip)."""
    parameters = {
        "delivery_id": claimed.delivery_id,
        "attempts": claimed.attempts,
        "status": status.value,
        "next_attempt_at": next_attempt_at,
        "status_code": status_code,
        "error": error,
        "delivered_at": delivered_at,
        "body": body,
    }
    write_later(connection, (_FINISH, parameters))
    if disable_webhook:
        keys = {"webhook_id": claimed.webhook_id, "delivery_id": claimed.delivery_id}
        write_later(connection, (_DISABLE, keys))
