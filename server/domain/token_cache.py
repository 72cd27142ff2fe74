"""The callers of recently used tokens, so that a call need not look its token up.

A server process keeps what it looked up while it is told of every change to
tokens (`trust`, by its listening connection); it forgets a token as soon as
it hears the token changed (`forget`), and everything when it may have
missed a change (`distrust`) or tokens were wiped (`forget_all`). Entries also
expire after a while, a backstop should a change go unheard all the same.

Only valid tokens are kept: a caller presenting a made-up token cannot grow
the cache, and gets no answer faster than a lookup.

A lookup and a change can cross: a lookup that read a token as active,
then a revocation heard before the lookup stores its result. Each change
moves the cache to a new generation, and a result read in an older
generation is not stored.
"""

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from server.domain.tokens import Caller


@dataclass(frozen=True)
class _Entry:
    caller: Caller
    expires_at: float


class CallerCache:
    """Up to `max_entries` callers by token digest, least recently used
    dropped first, each kept at most `ttl_seconds` (by `now`, in seconds)."""

    def __init__(
        self,
        *,
        max_entries: int,
        ttl_seconds: float,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._ttl_seconds = ttl_seconds
        self._now = now
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._digests: dict[uuid.UUID, bytes] = {}
        self._trusted = False
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Caller | None:
        """The caller of the token with this digest, if kept and trusted."""
        if not self._trusted:
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.expires_at <= self._now():
            self._drop(digest)
            return None
        self._entries.move_to_end(digest)
        return entry.caller

    def put(self, digest: bytes, caller: Caller, generation: int) -> None:
        """Keeps the caller of an active token, as read in `generation` (the
        cache's generation when the lookup began); ignored if anything
        changed since, or while untrusted."""
        if not self._trusted or generation != self.generation or self._max_entries == 0:
            return
        self._drop(digest)
        self._entries[digest] = _Entry(caller, self._now() + self._ttl_seconds)
        self._digests[caller.token_id] = digest
        while len(self._entries) > self._max_entries:
            self._drop(next(iter(self._entries)))

    def forget(self, token_id: uuid.UUID) -> None:
        """The token changed (revoked, deleted, its scopes altered...)."""
        self.generation += 1
        if (digest := self._digests.get(token_id)) is not None:
            self._drop(digest)

    def forget_all(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._digests.clear()

    def trust(self) -> None:
        """Every change is heard from now on; what was kept before may be stale."""
        self.forget_all()
        self._trusted = True

    def distrust(self) -> None:
        """Changes may go unheard from now on: nothing is kept or answered."""
        self.forget_all()
        self._trusted = False

    def _drop(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        if entry is not None and self._digests.get(entry.caller.token_id) == digest:
            del self._digests[entry.caller.token_id]
