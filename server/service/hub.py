"""The watchers one server process serves, and waking them when their processes change.

Every server process (of every instance on the database) hears every change
through its own listening connection (storage.notifications), to which the
hub subscribes. A watcher of one process is only woken: it reads the events
after the last one it has from the log, so it never depends on which
notifications arrived. Since a notification can be lost (it follows its
write's commit), the hub also reads, every `poll_seconds`, how far the logs
of the watched processes go, and wakes the watchers behind. The watchers
of one process in a server process share what it reads (service.feed). The
organization-wide watchers get the changes themselves, read once per
batch of notifications for all of them. The hub remembers the last change
of each process it gave them, so that a change is given once and a
process's changes in order, whatever order their notifications came in
(each follows its own commit): one heard past the last fills the gap from
the log. The timer covers these processes too; a lost notification of a
process not heard of since the stream opened stays unseen, as one missed
by a lost connection would (reading every running process of the
organization each second would cost more than the streams).

A stream ends as soon as the token that opened it expires (a timer set
when it is registered) or is revoked: when the revocation is heard, and
when it may have gone unheard, since the tokens of the open streams are
then checked again (`check_tokens`). So is a stream's
token once the stream is registered: a revocation heard before that found
no stream to end.
"""

import asyncio
import logging
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Collection, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

from server.domain.errors import DomainError, ResourceExhausted, Unauthenticated, Unavailable
from server.domain.processes import utc_now
from server.domain.tokens import Caller
from server.domain.watch import ChangeFilter, ProcessChange
from server.service.feed import ProcessFeed
from server.service.tokens import EXPIRED
from server.service.writes import Clock
from server.storage import processes
from server.storage import tokens as token_rows
from server.storage.database import Database
from server.storage.notifications import CHANNEL, Notification, Subscription

log = logging.getLogger(__name__)

K = TypeVar("K")

# How many changes an organization-wide watcher may have waiting to be sent:
# one that falls further behind is ended rather than let memory grow.
MAX_PENDING_CHANGES = 1000

REVOKED = "invalid token: revoked"

# The processes of an organization whose last change given to its watchers
# the hub remembers: the latest this many heard of.
MAX_TRACKED_PROCESSES = 10_000


class ProcessWatcher:
    """A stream watching one process: woken when events after `seen_seq` may be logged."""

    def __init__(self, feed: ProcessFeed, caller: Caller) -> None:
        self.process_id = feed.process_id
        # Who opened the stream.
        self.token_id = caller.token_id
        self.org_id = caller.org_id
        # Where the server process's watchers of the process find its latest events.
        self.feed = feed
        # The last event the stream has read; wake-ups for it or earlier ones are moot.
        self.seen_seq = 0
        self._woken = asyncio.Event()
        self._ended: DomainError | None = None

    def wake(self) -> None:
        self._woken.set()

    def end(self, error: DomainError) -> None:
        """Ends the stream with `error` the next time it waits."""
        self._ended = self._ended or error
        self._woken.set()

    async def wait(self, seconds: float) -> bool:
        """Waits until woken (True) or for `seconds` (False); raises the error
        that ended the stream, if one did."""
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._woken.wait()
        woken = self._woken.is_set()
        self._woken.clear()
        if self._ended is not None:
            raise self._ended
        return woken


class OrganizationWatcher:
    """A stream watching an organization: the matching changes, queued for it."""

    def __init__(self, change_filter: ChangeFilter, caller: Caller) -> None:
        self.filter = change_filter
        # Who opened the stream.
        self.token_id = caller.token_id
        self.org_id = caller.org_id
        self._pending: deque[ProcessChange] = deque()
        self._arrived = asyncio.Event()
        self._ended: DomainError | None = None

    def offer(self, change: ProcessChange) -> None:
        if self._ended is not None or not self.filter.matches(change):
            return
        if len(self._pending) >= MAX_PENDING_CHANGES:
            self.end(
                ResourceExhausted(
                    f"the stream fell more than {MAX_PENDING_CHANGES} changes behind;"
                    " list again, then watch"
                )
            )
            return
        self._pending.append(change)
        self._arrived.set()

    def end(self, error: DomainError) -> None:
        """Ends the stream with `error` once the changes before it are sent."""
        self._ended = self._ended or error
        self._arrived.set()

    async def next(self, seconds: float) -> ProcessChange | None:
        """The next change; None if none came within `seconds`. Raises the
        error that ended the stream once the changes before it are taken."""
        if not self._pending and self._ended is None:
            self._arrived.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._arrived.wait()
        if self._pending:
            return self._pending.popleft()
        if self._ended is not None:
            raise self._ended
        return None


Watcher = ProcessWatcher | OrganizationWatcher
W = TypeVar("W", bound=Watcher)


@dataclass(frozen=True)
class WatchLimits:
    """How many streams one server process serves at once: in all, and of
    one token and of one organization, so that neither can take every slot
    and leave none to the others."""

    total: int
    per_token: int
    per_org: int


class WatchHub:
    """The watch streams of one server process, within its `limits`."""

    def __init__(
        self,
        database: Database,
        *,
        limits: WatchLimits,
        poll_seconds: float,
        clock: Clock = utc_now,
    ) -> None:
        self._database = database
        self._clock = clock
        self._limits = limits
        self._poll_seconds = poll_seconds
        self._per_org: Counter[str] = Counter()
        self._by_process: dict[uuid.UUID, set[ProcessWatcher]] = {}
        self._feeds: dict[uuid.UUID, ProcessFeed] = {}
        self._by_org: dict[str, set[OrganizationWatcher]] = {}
        self._by_token: dict[uuid.UUID, set[Watcher]] = {}
        self._watchers = 0
        self._closed = False
        self._listening = False
        self._org_notifications: asyncio.Queue[Notification] = asyncio.Queue()
        # Of each organization with watchers: the seq of the last change of
        # each of its processes given to them (0: its creation), while it runs.
        self._delivered: dict[str, dict[uuid.UUID, int]] = {}
        # What the server process's listening connection tells the hub.
        self.subscription = Subscription(
            channel=CHANNEL,
            decode=Notification.decode,
            heard=self._heard,
            listening=self._now_listening,
            deaf=self._now_deaf,
            missed=self._missed,
        )
        self._delivering: asyncio.Task[None] | None = None
        self._polling: asyncio.Task[None] | None = None
        self._checking_tokens: asyncio.Task[None] | None = None

    @property
    def streams(self) -> int:
        """How many watch streams are open."""
        return self._watchers

    def start(self) -> None:
        self._delivering = asyncio.create_task(self._deliver_org_changes())
        self._polling = asyncio.create_task(self._poll_logs())

    async def close(self) -> None:
        """Ends every stream (they tell their clients to resume)."""
        self._closed = True
        resume = Unavailable("the server is shutting down; watch again with after_seq to resume")
        for by_process in self._by_process.values():
            for process_watcher in by_process:
                process_watcher.end(resume)
        relist = Unavailable("the server is shutting down; list again, then watch")
        for by_org in self._by_org.values():
            for org_watcher in by_org:
                org_watcher.end(relist)
        for task in (self._delivering, self._polling, self._checking_tokens):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    def end_streams_of(self, token_id: uuid.UUID | None) -> None:
        """Ends the streams the token opened (None: every stream): it was revoked."""
        error = Unauthenticated(REVOKED)
        for token, watchers in self._by_token.items():
            if token_id is None or token == token_id:
                for watcher in watchers:
                    watcher.end(error)

    def check_tokens(self) -> None:
        """Checks the tokens of the open streams again, in the background,
        ending those no longer active: a revocation may have gone unheard.

        Called once listening again, so a revocation after the check's read
        is heard."""
        if self._checking_tokens is not None:
            # The new check covers every stream the running one does.
            self._checking_tokens.cancel()
        if self._by_token:
            self._checking_tokens = asyncio.create_task(self._end_streams_of_revoked_tokens())

    async def _end_streams_of_revoked_tokens(self) -> None:
        token_ids = set(self._by_token)
        try:
            revoked = await self._revoked_among(token_ids)
        except Exception as error:
            # Failing closed: their clients watch again, authenticating anew.
            log.warning("could not check the tokens of watch streams", exc_info=error)
            unchecked = Unavailable("the server could not check the stream's token; watch again")
            for token_id in token_ids:
                for watcher in self._by_token.get(token_id, ()):
                    watcher.end(unchecked)
            return
        for token_id in revoked:
            self.end_streams_of(token_id)

    async def _revoked_among(self, token_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            return set(token_ids) - await token_rows.active_among(
                connection, token_ids, self._clock()
            )

    @asynccontextmanager
    async def watch_process(
        self, process_id: uuid.UUID, caller: Caller
    ) -> AsyncIterator[ProcessWatcher]:
        """Registers a watcher of the process, opened by the caller, for the block's duration."""
        feed = self._feeds.setdefault(process_id, ProcessFeed(self._database, process_id))
        try:
            watcher = ProcessWatcher(feed, caller)
            with self._registered(self._by_process, process_id, watcher, caller):
                await self._refuse_if_revoked(caller.token_id)
                yield watcher
        finally:
            if process_id not in self._by_process:
                del self._feeds[process_id]

    @asynccontextmanager
    async def watch_organization(
        self, change_filter: ChangeFilter, caller: Caller
    ) -> AsyncIterator[OrganizationWatcher]:
        """Registers a watcher of the organization's changes, opened by the
        caller, for the block's duration.

        Refused while not listening: it would miss changes without knowing.
        """
        if not self._listening:
            raise Unavailable("the server cannot follow changes right now; retry later")
        watcher = OrganizationWatcher(change_filter, caller)
        org_id = change_filter.org_id
        try:
            with self._registered(self._by_org, org_id, watcher, caller):
                self._delivered.setdefault(org_id, {})
                await self._refuse_if_revoked(caller.token_id)
                yield watcher
        finally:
            if org_id not in self._by_org:
                self._delivered.pop(org_id, None)

    async def _refuse_if_revoked(self, token_id: uuid.UUID) -> None:
        """Raises if the token of a stream just registered was revoked since
        it was authenticated: its revocation, heard before the stream was
        registered, ended no stream. One revoked later ends it when heard."""
        if await self._revoked_among([token_id]):
            raise Unauthenticated(REVOKED)

    @contextmanager
    def _registered(
        self, registry: dict[K, set[W]], key: K, watcher: W, caller: Caller
    ) -> Iterator[None]:
        """Counts the watcher against the limits and files it under `key` (and
        its token and organization) while it lasts, and ends it when the
        caller's token expires."""
        if self._closed:
            raise Unavailable("the server is shutting down; retry")
        limits = self._limits
        if len(self._by_token.get(watcher.token_id, ())) >= limits.per_token:
            raise ResourceExhausted(
                f"this token has its maximum of {limits.per_token} streams on this server"
                " process (the limit per token); end one, or retry later"
            )
        if self._per_org[watcher.org_id] >= limits.per_org:
            raise ResourceExhausted(
                f"this organization has its maximum of {limits.per_org} streams on this server"
                " process (the limit per organization); end one, or retry later"
            )
        if self._watchers >= limits.total:
            raise ResourceExhausted(
                f"this server process serves its maximum of {limits.total} streams; retry later"
            )
        self._watchers += 1
        self._per_org[watcher.org_id] += 1
        registry.setdefault(key, set()).add(watcher)
        self._by_token.setdefault(watcher.token_id, set()).add(watcher)
        expiry = None
        if caller.expires_at is not None:
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, (caller.expires_at - self._clock()).total_seconds()),
                watcher.end,
                Unauthenticated(EXPIRED),
            )
        try:
            yield
        finally:
            if expiry is not None:
                expiry.cancel()
            self._watchers -= 1
            self._per_org[watcher.org_id] -= 1
            if not self._per_org[watcher.org_id]:
                del self._per_org[watcher.org_id]
            _unfile(registry, key, watcher)
            _unfile(self._by_token, watcher.token_id, watcher)

    # What the listener tells.

    def _heard(self, notification: Notification) -> None:
        self._announce(notification.process_id, notification.seq)
        if notification.org_id in self._by_org:
            self._org_notifications.put_nowait(notification)

    def _announce(self, process_id: uuid.UUID, seq: int) -> None:
        """The process's event `seq` is logged: its watchers behind it read on."""
        if feed := self._feeds.get(process_id):
            feed.announce(seq)
        for watcher in self._by_process.get(process_id, ()):
            if seq > watcher.seen_seq:
                watcher.wake()

    async def _poll_logs(self) -> None:
        """Hears, every `poll_seconds`, the last change of each watched
        process and of each the organization-wide watchers were given one of,
        as if notified: one whose notification was lost reaches its watchers
        that much later, never not at all. One indexed read for all of them."""
        while True:
            await asyncio.sleep(self._poll_seconds)
            org_of = {
                process_id: org_id
                for org_id, delivered in self._delivered.items()
                for process_id in delivered
            }
            if not (self._by_process or org_of):
                continue
            try:
                async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
                    last = await processes.last_seqs(
                        connection, list(self._by_process.keys() | org_of.keys())
                    )
            except Exception as error:
                # The next round tries again; notifications still wake them meanwhile.
                log.warning("could not read how far the watched logs go", exc_info=error)
                continue
            for process_id, seq in last.items():
                self._announce(process_id, seq)
                if (org_id := org_of.get(process_id)) is None:
                    continue
                # Behind what was given: handed over as heard, which fills the gap.
                if seq > self._delivered.get(org_id, {}).get(process_id, seq):
                    self._org_notifications.put_nowait(Notification(org_id, process_id, seq))

    def _now_listening(self) -> None:
        """Notifications may have been missed while the connection was lost."""
        self._listening = True
        self._read_logs_again()

    def _now_deaf(self) -> None:
        self._listening = False
        self._end_org_streams()

    def _missed(self) -> None:
        """A notification could not be read or handled: it is as if missed."""
        self._end_org_streams()
        self._read_logs_again()

    def _read_logs_again(self) -> None:
        """Every watcher of a process reads its log again."""
        for feed in self._feeds.values():
            feed.doubt()
        for watchers in self._by_process.values():
            for watcher in watchers:
                watcher.wake()

    def _end_org_streams(self) -> None:
        """Organization-wide streams cannot read again what they missed: they end."""
        error = Unavailable("the server lost track of changes; list again, then watch")
        for watchers in self._by_org.values():
            for watcher in watchers:
                watcher.end(error)

    async def _deliver_org_changes(self) -> None:
        """Reads the changes of organizations with watchers, in batches, and
        hands each to the watchers whose filters it matches."""
        while True:
            batch = [await self._org_notifications.get()]
            while not self._org_notifications.empty():
                batch.append(self._org_notifications.get_nowait())
            by_org: defaultdict[str, list[Notification]] = defaultdict(list)
            for notification in batch:
                by_org[notification.org_id].append(notification)
            for org_id, notifications in by_org.items():
                if org_id not in self._by_org:
                    continue
                try:
                    changes = await self._read_changes(org_id, notifications)
                except Exception as error:
                    # Its watchers miss these changes: they end, and list again.
                    log.warning("could not read changes for watchers", exc_info=error)
                    if not isinstance(error, DomainError):
                        error = Unavailable("the server could not read the latest changes")
                    for watcher in list(self._by_org.get(org_id, ())):
                        watcher.end(error)
                    continue
                for change in changes:
                    for watcher in list(self._by_org.get(org_id, ())):
                        watcher.offer(change)

    async def _read_changes(
        self, org_id: str, notifications: Iterable[Notification]
    ) -> list[ProcessChange]:
        keys = self._undelivered(org_id, notifications)
        if not keys:
            return []
        async with self._database.transaction(isolation="AUTOCOMMIT") as connection:
            found = await processes.summaries(connection, org_id, {key[0] for key in keys})
            events = await processes.events(connection, [key for key in keys if key[1] > 0])
        changes = []
        for process_id, seq in keys:
            summary = found.get(process_id)
            event = events.get((process_id, seq))
            if summary is not None and (seq == 0 or event is not None):
                changes.append(ProcessChange(summary, event))
        delivered = self._delivered.get(org_id, {})
        for change in changes:
            if change.event is not None and change.event.finishes_process:
                # It changes no more: the timer need not ask.
                delivered.pop(change.process.process_id, None)
        return changes

    def _undelivered(
        self, org_id: str, notifications: Iterable[Notification]
    ) -> list[tuple[uuid.UUID, int]]:
        """The (process, seq) of each change announced and not yet given to
        the organization's watchers, in order: a notification past the last
        change given also brings those between. Counts them as given."""
        delivered = self._delivered.setdefault(org_id, {})
        keys = []
        for notification in notifications:
            process_id, seq = notification.process_id, notification.seq
            last = delivered.get(process_id)
            if last is not None and seq <= last:
                continue
            first = seq if last is None else last + 1
            keys += [(process_id, between) for between in range(first, seq + 1)]
            delivered.pop(process_id, None)  # re-filed as the latest heard of
            delivered[process_id] = seq
            if len(delivered) > MAX_TRACKED_PROCESSES:
                del delivered[next(iter(delivered))]
        return keys


def _unfile(registry: dict[K, set[W]], key: K, watcher: W) -> None:
    watchers = registry[key]
    watchers.discard(watcher)
    if not watchers:
        del registry[key]
