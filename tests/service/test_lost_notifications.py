"""A write's notification follows its commit, so it can be lost (its server
process dies in between): watchers must get the change all the same, from
the hub's timer (HTK_WATCH_POLL_SECONDS), in order and once."""

import asyncio
import uuid

import pytest

from server.storage import processes as process_rows
from server.storage.notifications import Notification
from tests.service.calls import Stub, create, update
from tests.service.test_watch import HANG_SECONDS, read, read_until, seqs, watch
from tests.support.orgs import Org


@pytest.fixture
def lost(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """Drops every notification of a process's change, as if each writer
    died right after its commit; gives the processes whose were dropped."""
    dropped: list[uuid.UUID] = []

    def dropping(connection: object, notification: Notification) -> None:
        dropped.append(notification.process_id)

    monkeypatch.setattr(process_rows, "notify", dropping)
    return dropped


async def test_a_change_whose_notification_is_lost_still_reaches_its_watchers(
    processes: Stub, org: Org, lost: list[uuid.UUID]
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
    assert lost.count(uuid.UUID(process.process_id)) == 5  # every one of its changes

    # Each stream ends with the finishing event, having sent each event once.
    # (Bounded as a whole: without the timer, heartbeats would go on forever.)
    async with asyncio.timeout(HANG_SECONDS):
        assert seqs(await read_until(waiting, lambda _: False)) == [2, 3, 4]
        assert seqs(await read_until(replaying, lambda _: False)) == [2, 3, 4]
