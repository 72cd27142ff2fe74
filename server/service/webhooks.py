"""Webhooks: managing them, and the delivery worker every server process runs.

Deliveries are queued by the changes themselves, in their transactions
(storage.webhooks.queue, called where changes are recorded). The worker
claims the due ones, sends each in a task of its own and records what came
of it; sending is never on a call's path.
"""

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from server.domain.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from server.domain.processes import Event, Process
from server.domain.webhooks import (
    SECRET_BYTES,
    USER_AGENT,
    Delivery,
    DeliveryPage,
    DeliveryQuery,
    NewWebhook,
    Webhook,
    after_attempt,
    check_addresses,
    check_room_for_webhook,
    delivery_page,
    new_secret,
    signature,
)
from server.service.webhook_http import SendFailed, port_of, post, resolve
from server.service.writes import Clock
from server.storage import organizations, processes
from server.storage import webhooks as rows
from server.storage.database import Database
from server.storage.notifications import Subscription

log = logging.getLogger(__name__)

# The message of a delivery, as the API's JSON prints its parts: transport's.
# (event type, when it happened, the process, its event: None for a creation)
Render = Callable[[str, datetime, Process, Event | None], bytes]

# Due deliveries are looked for this often besides when a change wakes the
# worker: retries come due with time, and a wake-up can be missed.
POLL_SECONDS = 1.0
# Attempts one worker makes at once, over all webhooks, and to one webhook:
# a slow receiver ties up PER_WEBHOOK of them at most.
MAX_IN_FLIGHT = 64
PER_WEBHOOK = 4


@dataclass(frozen=True)
class DeliverySettings:
    timeout_seconds: float
    retry_schedule: tuple[float, ...]
    allow_private: bool

    @property
    def lease(self) -> timedelta:
        """How long a claimed attempt is a worker's: past it (the worker
        died), another takes the delivery over. Well past the timeout, so
        that a live worker's attempt is never made twice."""
        return timedelta(seconds=2 * self.timeout_seconds + 5)


class WebhookService:
    def __init__(self, database: Database, clock: Clock, settings: DeliverySettings) -> None:
        self._database = database
        self._clock = clock
        self._settings = settings

    async def create(self, org_id: str, new: NewWebhook) -> Webhook:
        """Stores the webhook; the answer, alone, carries its secret."""
        addresses = await _resolve_for_create(new.host, port_of(new.url))
        check_addresses(addresses, allow_private=self._settings.allow_private)
        key = secrets.token_bytes(SECRET_BYTES)
        webhook = Webhook(
            webhook_id=uuid.uuid4(),
            org_id=org_id,
            url=new.url,
            events=new.events,
            namespace=new.namespace,
            description=new.description,
            enabled=True,
            created_at=self._clock(),
        )
        async with self._database.transaction() as connection:
            check_room_for_webhook(await organizations.count_locked(connection, org_id, "webhooks"))
            await rows.add(connection, webhook, key)
        return Webhook(**vars(webhook) | {"secret": new_secret(key)})

    async def list(self, org_id: str) -> list[Webhook]:
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            return await rows.list_webhooks(connection, org_id)

    async def get(self, org_id: str, webhook_id: uuid.UUID) -> Webhook:
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            return _found(await rows.get(connection, org_id, webhook_id), webhook_id)

    async def delete(self, org_id: str, webhook_id: uuid.UUID) -> Webhook:
        async with self._database.transaction() as connection:
            return _found(await rows.remove(connection, org_id, webhook_id), webhook_id)

    async def enable(self, org_id: str, webhook_id: uuid.UUID) -> Webhook:
        async with self._database.transaction() as connection:
            return _found(await rows.enable(connection, org_id, webhook_id), webhook_id)

    async def deliveries(self, query: DeliveryQuery) -> DeliveryPage:
        async with self._database.transaction(isolation="REPEATABLE READ") as connection:
            _found(await rows.get(connection, query.org_id, query.webhook_id), query.webhook_id)
            return delivery_page(query, await rows.deliveries(connection, query))

    async def redeliver(
        self, org_id: str, webhook_id: uuid.UUID, delivery_id: uuid.UUID
    ) -> Delivery:
        async with self._database.transaction() as connection:
            webhook = _found(await rows.get(connection, org_id, webhook_id), webhook_id)
            if not webhook.enabled:
                raise FailedPrecondition(
                    f"webhook {webhook_id} is disabled; enable it before redelivering"
                )
            delivery = await rows.redeliver(connection, webhook_id, delivery_id, self._clock())
            if delivery is None:
                raise NotFound(f"delivery {delivery_id} not found")
            # No wake-up: the workers' next poll finds it due.
            return delivery


def _found(webhook: Webhook | None, webhook_id: uuid.UUID) -> Webhook:
    if webhook is None:
        raise NotFound(f"webhook {webhook_id} not found")
    return webhook


async def _resolve_for_create(host: str, port: int) -> list[str]:
    try:
        return await resolve(host, port)
    except SendFailed as error:
        raise InvalidArgument("url", str(error)) from None


class DeliveryWorker:
    """Sends the due deliveries of every organization; one per server
    process, any number on one database."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        settings: DeliverySettings,
        render: Render,
    ) -> None:
        self._database = database
        self._clock = clock
        self._settings = settings
        self._render = render
        self._woken = asyncio.Event()
        # The attempts under way, by webhook.
        self._sending: dict[uuid.UUID, set[asyncio.Task[None]]] = {}
        self.subscription = Subscription[str](
            channel=rows.CHANNEL,
            decode=str,
            heard=lambda _: self._woken.set(),
            listening=self._woken.set,
            deaf=lambda: None,
            missed=self._woken.set,
        )

    async def run(self) -> None:
        """Sends deliveries until cancelled."""
        try:
            while True:
                try:
                    await self._claim_and_send()
                except DomainError as error:  # the database away: the poll tries again
                    log.warning("could not claim webhook deliveries: %s", error)
                except Exception:
                    log.exception("could not claim webhook deliveries")
                try:
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._woken.wait()
                except TimeoutError:
                    pass
        finally:
            for tasks in self._sending.values():
                for task in tasks:
                    task.cancel()

    async def _claim_and_send(self) -> None:
        self._woken.clear()
        room = MAX_IN_FLIGHT - sum(map(len, self._sending.values()))
        if room <= 0:
            return
        now = self._clock()
        async with self._database.transaction() as connection:
            claimed = await rows.claim(
                connection,
                now=now,
                lease_until=now + self._settings.lease,
                sending={webhook: len(tasks) for webhook, tasks in self._sending.items()},
                per_webhook=PER_WEBHOOK,
                limit=room,
            )
            # The first attempts' messages, read in the claim's transaction:
            # two statements for the batch, not two a delivery.
            bodies = await self._messages(connection, claimed)
        for delivery in claimed:
            body = delivery.body if delivery.body is not None else bodies[delivery.delivery_id]
            task = asyncio.create_task(self._attempt(delivery, body))
            self._sending.setdefault(delivery.webhook_id, set()).add(task)

    async def _attempt(self, claimed: rows.Claimed, body: bytes) -> None:
        try:
            await self._attempt_once(claimed, body)
        finally:
            tasks = self._sending[claimed.webhook_id]
            tasks.discard(asyncio.current_task())
            if not tasks:
                del self._sending[claimed.webhook_id]
            # The webhook's next delivery may be due already.
            self._woken.set()

    async def _attempt_once(self, claimed: rows.Claimed, body: bytes) -> None:
        """Sends the delivery's message and records what came of it."""
        try:
            status_code, error = await self._send(claimed, body)
            result = after_attempt(
                claimed.attempts, status_code, error, self._clock(), self._settings.retry_schedule
            )
            async with self._database.transaction() as connection:
                rows.finish(
                    connection,
                    claimed,
                    status=result.status,
                    next_attempt_at=result.next_attempt_at,
                    status_code=status_code,
                    error=result.error,
                    delivered_at=self._clock() if result.error is None else None,
                    body=body,
                    disable_webhook=result.disable_webhook,
                )
        except Exception as error:
            # The lease runs out and another attempt is made: at least once.
            log.warning("webhook delivery %s: attempt not recorded: %s", claimed.delivery_id, error)

    async def _messages(
        self, connection: AsyncConnection, claimed: list[rows.Claimed]
    ) -> dict[uuid.UUID, bytes]:
        """The messages of the deliveries' first attempts, by delivery, made
        from their processes and events as they are now (every later attempt
        sends the same bytes). The claim's locks keep the processes: deleting
        one deletes its deliveries, which waits for them."""
        first = [delivery for delivery in claimed if delivery.body is None]
        if not first:
            return {}
        found = await processes.load_many(connection, [d.process_id for d in first])
        events = await processes.events(connection, [(d.process_id, d.seq) for d in first])
        return {
            delivery.delivery_id: self._render(
                delivery.event_type,
                delivery.created_at,
                found[delivery.process_id],
                events.get((delivery.process_id, delivery.seq)),
            )
            for delivery in first
        }

    async def _send(self, claimed: rows.Claimed, body: bytes) -> tuple[int | None, str | None]:
        """The reply's status code, or None and why there was none."""
        message_id = str(claimed.delivery_id)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(claimed.signing_key, message_id, timestamp, body),
        }
        try:
            status_code = await post(
                claimed.url,
                headers,
                body,
                timeout_seconds=self._settings.timeout_seconds,
                allow_private=self._settings.allow_private,
            )
        except SendFailed as error:
            return None, str(error)
        except InvalidArgument as error:
            return None, f"refused: {error.problem}"
        return status_code, None
