"""The delivery workers' claims on real PostgreSQL: two claiming at once never
take the same attempt, a claim stops at each webhook's share, a lease that
runs out (a killed worker) hands the delivery over, and the late worker's
outcome is not recorded over the new attempt's.

The deliveries are due in the year 2100, so the server's own worker (on the
real clock) leaves them to the test's claims."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from server.domain.processes import StepDef, new_process
from server.domain.tokens import Caller
from server.domain.webhooks import DeliveryStatus, Webhook, WebhookEvent, delivery_query
from server.storage import processes
from server.storage import webhooks as rows
from tests.support.in_process import InProcessServer

FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=25)


async def _webhook_with_deliveries(server: InProcessServer, count: int) -> uuid.UUID:
    org = await server.new_org("claims")
    webhook = Webhook(
        webhook_id=uuid.uuid4(),
        org_id=org.org_id,
        url="http://127.0.0.1:9/never",
        events=("*",),
        namespace=None,
        description=None,
        enabled=True,
        created_at=FUTURE,
    )
    caller = Caller(org.org_id, frozenset(), "claims", uuid.uuid4())
    async with server.database.transaction() as connection:
        await rows.add(connection, webhook, b"k" * 32)
        for index in range(count):
            process = new_process(
                org_id=org.org_id,
                namespace="claims",
                name=f"claimed {index}",
                step_defs=[StepDef("build", "Build", human=False)],
                now=FUTURE,
                created_by=caller,
            )
            processes.add(connection, process)
            rows.queue(
                connection,
                org_id=org.org_id,
                namespace=process.namespace,
                process_id=process.process_id,
                seq=0,
                messages=(WebhookEvent.PROCESS_CREATED,),
                now=FUTURE + timedelta(microseconds=index),
            )
    return webhook.webhook_id


async def _claim(
    server: InProcessServer, now: datetime, hold: asyncio.Event | None = None
) -> list[rows.Claimed]:
    async with server.database.transaction() as connection:
        claimed = await rows.claim(
            connection, now=now, lease_until=now + LEASE, sending={}, per_webhook=4, limit=50
        )
        if hold is not None:
            await hold.wait()  # the other claim runs while this one holds its locks
        return claimed


async def test_concurrent_claims_never_take_the_same_attempt(server: InProcessServer) -> None:
    webhook_id = await _webhook_with_deliveries(server, 6)
    now = FUTURE + timedelta(seconds=1)
    hold = asyncio.Event()
    first = asyncio.create_task(_claim(server, now, hold))
    await asyncio.sleep(0)  # let it take its locks first (if it has not, it still cannot overlap)
    second = await _claim(server, now)
    hold.set()
    taken = [*(await first), *second]

    mine = [claimed for claimed in taken if claimed.webhook_id == webhook_id]
    assert len({claimed.delivery_id for claimed in mine}) == len(mine)
    assert all(claimed.attempts == 1 for claimed in mine)
    # Each claim takes at most the webhook's share; together, never more than there are.
    assert len(mine) <= 6
    rest = [c for c in await _claim(server, now) if c.webhook_id == webhook_id]
    assert {c.delivery_id for c in rest}.isdisjoint(c.delivery_id for c in mine)
    assert len(mine) + len(rest) <= 6


async def test_a_claim_takes_a_webhooks_share_counting_what_is_under_way(
    server: InProcessServer,
) -> None:
    webhook_id = await _webhook_with_deliveries(server, 6)
    now = FUTURE + timedelta(seconds=2)
    async with server.database.transaction() as connection:
        claimed = await rows.claim(
            connection,
            now=now,
            lease_until=now + LEASE,
            sending={webhook_id: 3},
            per_webhook=4,
            limit=50,
        )
    assert len([c for c in claimed if c.webhook_id == webhook_id]) == 1


async def test_a_lapsed_lease_hands_the_delivery_over_and_the_late_outcome_is_dropped(
    server: InProcessServer,
) -> None:
    webhook_id = await _webhook_with_deliveries(server, 1)
    now = FUTURE + timedelta(seconds=3)
    (dead,) = [c for c in await _claim(server, now) if c.webhook_id == webhook_id]
    assert [c for c in await _claim(server, now + LEASE / 2) if c.webhook_id == webhook_id] == []

    (taken_over,) = [c for c in await _claim(server, now + LEASE * 2) if c.webhook_id == webhook_id]
    assert (taken_over.delivery_id, taken_over.attempts) == (dead.delivery_id, 2)
    for claimed, status, code in (
        (taken_over, DeliveryStatus.DELIVERED, 200),
        (dead, DeliveryStatus.FAILED, 500),
    ):
        async with server.database.transaction() as connection:
            rows.finish(
                connection,
                claimed,
                status=status,
                next_attempt_at=None,
                status_code=code,
                error=None,
                delivered_at=now,
                body=b"{}",
                disable_webhook=False,
            )
    async with server.database.transaction() as connection:
        query = delivery_query(taken_over.org_id, webhook_id, limit=None, page_token="")
        (logged,) = await rows.deliveries(connection, query)
    assert (logged.status, logged.attempts, logged.last_status_code) == (
        DeliveryStatus.DELIVERED,
        2,
        200,
    )


async def test_queued_deliveries_wake_the_workers_once_committed(
    server: InProcessServer,
) -> None:
    listening = await server.database.dedicated_connection("test webhook wake-ups")
    try:
        await listening.execute(f"LISTEN {rows.CHANNEL}")
        await _webhook_with_deliveries(server, 1)
        heard = listening.notifies(timeout=10, stop_after=1)
        woken = [notification.channel async for notification in heard]
    finally:
        await listening.close()
    assert rows.CHANNEL in woken
