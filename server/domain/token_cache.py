"""The callers of recently used tokens, so that a call need not look its token up.

A server process keeps what it looked up while it is told of every change to
tokens (`trust`, by its listening connection); it forgets a token as soon as
it hears the token changed (`forget`), and everything when it may have
missed a change (`distrust`) or tokens were wiped (`forget_all`). Entries also
expire after a while, a backstop should a change go unheard all the same.

Valid tokens are kept as callers. Tokens found neither active nor at all are
kept apart, briefly (`unknown_ttl_seconds`) and in a bounded number, so that
one repeated over and over costs a lookup now and then, not every time; the
entries are short because creating a token notifies no one, and a token
created after a lookup refused it must work soon. A made-up token per request
gains nothing here: Envoy's per-address budget stands in front of that.

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
        unknown_ttl_seconds: float = 0.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._ttl_seconds = ttl_seconds
        self._unknown_ttl_seconds = unknown_ttl_seconds
        self._now = now
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        # Digests of refused tokens, and until when they are refused unasked.
        self._unknown: OrderedDict[bytes, float] = OrderedDict()
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

    def is_unknown(self, digest: bytes) -> bool:
        """Whether a lookup refused the token with this digest a moment ago."""
        if not self._trusted:
            return False
        expires_at = self._unknown.get(digest)
        if expires_at is None:
            return False
        if expires_at <= self._now():
            del self._unknown[digest]
            return False
        return True

    def put_unknown(self, digest: bytes, generation: int) -> None:
        """Keeps, briefly, that a lookup begun in `generation` found no active
        token with this digest; ignored if anything changed since."""
        if (
            not self._trusted
            or generation != self.generation
            or self._max_entries == 0
            or self._unknown_ttl_seconds <= 0
        ):
            return
        self._unknown.pop(digest, None)
        self._unknown[digest] = self._now() + self._unknown_ttl_seconds
        while len(self._unknown) > self._max_entries:
            self._unknown.popitem(last=False)

    def forget(self, token_id: uuid.UUID) -> None:
        """The token changed (revoked, deleted, its scopes altered...). Which
        refused digest is its own is unknown here (a token revived by an
        update), so every refusal is forgotten: changes are rare."""
        self.generation += 1
        self._unknown.clear()
        if (digest := self._digests.get(token_id)) is not None:
            self._drop(digest)

    def forget_all(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._digests.clear()
        self._unknown.clear()

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
