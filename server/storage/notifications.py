"""PostgreSQL LISTEN/NOTIFY: a wake-up for every change, heard by every server process.

A transaction that creates a process or appends an event notifies CHANNEL
with the change's (organization, process, seq), and nothing else: watchers
read the change itself from the tables, so a notification that PostgreSQL
folds into another, or that a listener misses, costs a delay, never an
event. The notification is sent right after the commit, in the same round
trip (`notify`), so a watcher woken by one always finds its rows; it is not
part of the transaction, whose commit it would otherwise serialize with
every other notifying commit. It can therefore be lost (its server process
dies between the two): listeners also read what they follow on a timer.

Each server process listens on one dedicated connection of its own
(`Listener`), which it reopens when it is lost, to this channel and to any
other a part of the server subscribes to (tokens' changes, for one).
"""

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from sqlalchemy.ext.asyncio import AsyncConnection

from server.storage.database import after_commit

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "htk_process_events"
_NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

# A quiet connection is checked this often: a peer that vanished without
# closing it (a network cut) would otherwise never be noticed.
CHECK_INTERVAL_SECONDS = 5.0
CHECK_TIMEOUT_SECONDS = 5.0
# Reconnecting: at once, then waiting twice as long after each failure.
FIRST_RETRY_SECONDS = 0.1
MAX_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Notification:
    """That a process of an organization changed: its event `seq` was
    appended, or it was created (seq 0)."""

    org_id: str
    process_id: uuid.UUID
    seq: int

    def encode(self) -> str:
        return json.dumps([self.org_id, str(self.process_id), self.seq])

    @classmethod
    def decode(cls, payload: str) -> "Notification":
        org_id, process_id, seq = json.loads(payload)
        return cls(str(org_id), uuid.UUID(process_id), int(seq))


def notify(connection: AsyncConnection, notification: Notification) -> None:
    """Notifies CHANNEL of the change once the connection's transaction has committed."""
    after_commit(connection, (_NOTIFY, {"channel": CHANNEL, "payload": notification.encode()}))


Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


@dataclass(frozen=True)
class Subscription(Generic[T]):
    """What one part of the server hears on `channel`.

    `heard` gets each notification, decoded; `listening` is called each time
    the connection is (re)established and listens, after which every
    notification arrives; `deaf` is called when it is lost, after which
    notifications may have been missed until `listening` is called again;
    `missed` when a notification could not be decoded, or `heard` failed on
    it: it may have been one that mattered.
    """

    channel: str
    decode: Callable[[str], T]
    heard: Callable[[T], None]
    listening: Callable[[], None]
    deaf: Callable[[], None]
    missed: Callable[[], None]


class Listener:
    """Listens on the subscriptions' channels over one connection, and tells
    each subscription what it hears."""

    def __init__(self, connect: Connect, subscriptions: Sequence[Subscription[Any]]) -> None:
        self._connect = connect
        self._subscriptions = {subscription.channel: subscription for subscription in subscriptions}
        self.first_attempt = asyncio.Event()
        # The backend serving the connection, while there is one (tests end it).
        self.backend_pid: int | None = None

    @property
    def listening(self) -> bool:
        """Whether the connection is up and listening on every channel."""
        return self.backend_pid is not None

    async def run(self) -> None:
        """Listens until cancelled, reconnecting whenever the connection is lost."""
        retry = FIRST_RETRY_SECONDS
        while True:
            try:
                async with self._connection() as connection:
                    retry = FIRST_RETRY_SECONDS
                    await self._receive(connection)
            except (psycopg.Error, OSError, TimeoutError) as error:
                log.warning("listening for changes failed (%s); retrying in %.1f s", error, retry)
            except Exception:
                # A bug, not the connection; listening again all the same, as
                # without a listener watch streams are refused and every call
                # looks its token up.
                log.exception("listening for changes failed; retrying in %.1f s", retry)
            self.first_attempt.set()
            await asyncio.sleep(retry)
            retry = min(retry * 2, MAX_RETRY_SECONDS)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        connection = await self._connect()
        try:
            for channel in self._subscriptions:
                await connection.execute(f"LISTEN {channel}")
            self.backend_pid = connection.info.backend_pid
            for subscription in self._subscriptions.values():
                subscription.listening()
            self.first_attempt.set()
            try:
                yield connection
            finally:
                self.backend_pid = None
                for subscription in self._subscriptions.values():
                    subscription.deaf()
        finally:
            await connection.close()

    async def _receive(self, connection: psycopg.AsyncConnection[Any]) -> None:
        while True:
            async for notify in connection.notifies(timeout=CHECK_INTERVAL_SECONDS):
                self._tell(self._subscriptions[notify.channel], notify.payload)
            # notifies() holds the connection; between its rounds it is free.
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await connection.execute("SELECT 1")

    @staticmethod
    def _tell(subscription: Subscription[Any], payload: str) -> None:
        """Tells the subscription what it heard, or that it missed something."""
        try:
            notification = subscription.decode(payload)
        except Exception as error:  # not only ValueError: uuid.UUID(1) raises AttributeError
            log.warning("malformed notification on %s %r: %s", subscription.channel, payload, error)
            subscription.missed()
            return
        try:
            subscription.heard(notification)
        except Exception:
            log.exception("handling a notification on %s failed", subscription.channel)
            subscription.missed()
