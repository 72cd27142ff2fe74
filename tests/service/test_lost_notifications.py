"""A write's notification follows its commit, so it can be lost (its server
process dies in between), and notifications of one process's changes can
arrive out of order: watchers must get each change all the same, in order
and once, from the log and the hub's timer (HTK_WATCH_POLL_SECONDS)."""

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage.notifications import CHANNEL, Notification, notify
from tests.service.calls import Stub, create, update
from tests.service.test_watch import (
    HANG_SECONDS,
    changes,
    named,
    read,
    read_until,
    seqs,
    watch,
    watch_org,
)
from tests.support.in_process import InProcessServer
from tests.support.orgs import Org


@dataclass
class Lost:
    """Drops the notifications of processes' changes while `dropping`, as if
    each writer died right after its commit."""

    dropping: bool = True
    dropped: list[uuid.UUID] = field(default_factory=list)


@pytest.fixture
def lost(monkeypatch: pytest.MonkeyPatch) -> Lost:
    lost = Lost()

    def dropping(connection: AsyncConnection, notification: Notification) -> None:
        if lost.dropping:
            lost.dropped.append(notification.process_id)
        else:
            notify(connection, notification)

    # Where storage's writes look it up.
    monkeypatch.setattr("server.storage.processes.notify", dropping)
    return lost


async def test_a_change_whose_notification_is_lost_still_reaches_process_watchers(
    processes: Stub, org: Org, lost: Lost
) -> None:
    process = await create(processes, org, "build")
    await update(processes, org, process.process_id, "step_started", step="build")
    # One watcher caught up and waiting, one replaying from the start.
    waiting = watch(processes, org, process.process_id, after_seq=1)
    assert (await read(waiting)).HasField("heartbeat")
    replaying = watch(processes, org, process.process_id, after_seq=0)
    assert seqs(await read_until(replaying, lambda got: len(got) == 1)) == [1]

    for percent in (10, 20):
        await update(processes, org, process.process_id, "progress", step="build", percent=percent)
    await update(processes, org, process.process_id, "completed", summary="done")
    assert lost.dropped.count(uuid.UUID(process.process_id)) == 5  # every one of its changes

    # Each stream ends with the finishing event, having sent each event once.
    # (Bounded as a whole: without the timer, heartbeats would go on forever.)
    async with asyncio.timeout(HANG_SECONDS):
        assert seqs(await read_until(waiting, lambda _: False)) == [2, 3, 4]
        assert seqs(await read_until(replaying, lambda _: False)) == [2, 3, 4]


async def test_a_change_whose_notification_is_lost_still_reaches_the_organization_stream(
    processes: Stub, org: Org, lost: Lost
) -> None:
    call = await watch_org(processes, org)
    lost.dropping = False
    process_id = await named(processes, org, "heard")
    lost.dropping = True
    await update(processes, org, process_id, "step_started", step="build")
    await update(processes, org, process_id, "completed")
    assert lost.dropped == [uuid.UUID(process_id)] * 2

    async with asyncio.timeout(HANG_SECONDS):
        received = await read_until(call, lambda got: len(got) == 3)
    call.cancel()
    assert changes(received) == [("heard", None), ("heard", "step_started"), ("heard", "completed")]


async def test_notifications_out_of_order_give_the_organization_stream_each_change_once_in_order(
    server: InProcessServer, processes: Stub, org: Org, lost: Lost
) -> None:
    call = await watch_org(processes, org)
    lost.dropping = False
    process_id = await named(processes, org, "shuffled")
    lost.dropping = True
    await update(processes, org, process_id, "step_started", step="build")
    await update(processes, org, process_id, "progress", step="build", percent=50)
    # Their notifications arrive late, the second before the first.
    async with server.database.transaction(isolation="AUTOCOMMIT") as connection:
        for seq in (2, 1):
            late = Notification(org.org_id, uuid.UUID(process_id), seq)
            await connection.exec_driver_sql("SELECT pg_notify(%s, %s)", (CHANNEL, late.encode()))
    lost.dropping = False
    await update(processes, org, process_id, "completed")

    async with asyncio.timeout(HANG_SECONDS):
        received = await read_until(
            call, lambda got: changes(got)[-1:] == [("shuffled", "completed")]
        )
    call.cancel()
    assert [message.event.seq for message in received] == [0, 1, 2, 3]
