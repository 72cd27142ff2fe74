"""The listening connection against real PostgreSQL: a notification its
subscription cannot decode, or fails to handle, is reported to it as missed,
and the listener goes on hearing the next ones."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import suppress

import pytest

from server.storage.database import Database
from server.storage.notifications import Listener, Subscription
from tests.service.test_watch import HANG_SECONDS

GARBLED = "garbled"
FAILS = "fails"


class Recorder:
    """A subscription's calls, in order: a payload heard, or the callback's name."""

    def __init__(self, channel: str) -> None:
        self.calls: list[str] = []
        self.subscription = Subscription(
            channel=channel,
            decode=self.decode,
            heard=self.heard,
            listening=lambda: self.calls.append("listening"),
            deaf=lambda: self.calls.append("deaf"),
            missed=lambda: self.calls.append("missed"),
        )

    @staticmethod
    def decode(payload: str) -> str:
        if payload == GARBLED:
            # Not only ValueError: uuid.UUID(1), for one, raises AttributeError.
            raise AttributeError("not a payload of this channel")
        return payload

    def heard(self, payload: str) -> None:
        if payload == FAILS:
            raise RuntimeError("a bug in the subscriber")
        self.calls.append(payload)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    opened = Database(database_url, pool_size=1)
    yield opened
    await opened.close()


async def test_a_notification_not_decoded_or_not_handled_is_missed_and_listening_goes_on(
    database: Database,
) -> None:
    recorder = Recorder(f"htk_test_{uuid.uuid4().hex[:12]}")
    listener = Listener(
        lambda: database.dedicated_connection("test listener"), [recorder.subscription]
    )
    listening = asyncio.create_task(listener.run())
    try:
        async with asyncio.timeout(HANG_SECONDS):
            await listener.first_attempt.wait()
        async with database.transaction(isolation="AUTOCOMMIT") as connection:
            for payload in (GARBLED, FAILS, "heard"):
                await connection.exec_driver_sql(
                    "SELECT pg_notify(%s, %s)", (recorder.subscription.channel, payload)
                )
        async with asyncio.timeout(HANG_SECONDS):
            while "heard" not in recorder.calls:
                assert not listening.done(), "the listener stopped"
                await asyncio.sleep(0.01)
        assert recorder.calls == ["listening", "missed", "missed", "heard"]
    finally:
        listening.cancel()
        with suppress(asyncio.CancelledError):
            await listening
