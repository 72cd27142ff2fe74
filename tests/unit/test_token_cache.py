"""Unit tests for server.domain.token_cache: what the cache answers, keeps and
forgets; and what the token subscription makes it forget."""

import uuid

import pytest

from server.domain.token_cache import CallerCache
from server.domain.tokens import Caller, Scope
from server.service.tokens import token_changes

TTL = 60.0


class FakeTime:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def caller(name: str = "deployer") -> Caller:
    return Caller("acme", frozenset({Scope.PROCESSES_WRITE}), name, uuid.uuid4())


def digest_of(name: str) -> bytes:
    return name.encode().ljust(32, b".")


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def cache(time: FakeTime) -> CallerCache:
    trusted = CallerCache(max_entries=3, ttl_seconds=TTL, now=time)
    trusted.trust()
    return trusted


def kept(cache: CallerCache, name: str) -> Caller:
    """Stores a new caller under `name`'s digest, read in the current generation."""
    stored = caller(name)
    cache.put(digest_of(name), stored, cache.generation)
    return stored


def test_a_kept_caller_is_answered(cache: CallerCache) -> None:
    stored = kept(cache, "a")
    assert cache.get(digest_of("a")) == stored
    assert cache.get(digest_of("b")) is None


def test_a_forgotten_token_is_looked_up_again(cache: CallerCache) -> None:
    stored = kept(cache, "a")
    other = kept(cache, "b")
    cache.forget(stored.token_id)
    assert cache.get(digest_of("a")) is None
    assert cache.get(digest_of("b")) == other


def test_forgetting_an_unknown_token_keeps_the_others(cache: CallerCache) -> None:
    stored = kept(cache, "a")
    cache.forget(uuid.uuid4())
    assert cache.get(digest_of("a")) == stored


def test_forget_all_empties_it(cache: CallerCache) -> None:
    kept(cache, "a")
    kept(cache, "b")
    cache.forget_all()
    assert len(cache) == 0
    assert cache.get(digest_of("a")) is None


def test_a_lookup_that_crossed_a_change_is_not_kept(cache: CallerCache) -> None:
    # The lookup began, read the token as active; then a change was heard.
    began = cache.generation
    cache.forget(uuid.uuid4())
    cache.put(digest_of("a"), caller("a"), began)
    assert cache.get(digest_of("a")) is None
    assert len(cache) == 0


def test_an_untrusted_cache_answers_and_keeps_nothing(time: FakeTime) -> None:
    untrusted = CallerCache(max_entries=3, ttl_seconds=TTL, now=time)
    untrusted.put(digest_of("a"), caller("a"), untrusted.generation)
    assert len(untrusted) == 0
    untrusted.trust()
    kept(untrusted, "a")
    untrusted.distrust()
    assert untrusted.get(digest_of("a")) is None
    untrusted.put(digest_of("b"), caller("b"), untrusted.generation)
    assert len(untrusted) == 0


def test_trusting_again_forgets_what_was_kept_before(cache: CallerCache) -> None:
    """Reconnected, changes made while deaf may have gone unheard."""
    kept(cache, "a")
    cache.trust()
    assert cache.get(digest_of("a")) is None


def test_an_entry_expires(cache: CallerCache, time: FakeTime) -> None:
    stored = kept(cache, "a")
    time.seconds += TTL - 1
    assert cache.get(digest_of("a")) == stored
    time.seconds += 1
    assert cache.get(digest_of("a")) is None
    assert len(cache) == 0


def test_the_least_recently_used_goes_first(cache: CallerCache) -> None:
    a, _, c = kept(cache, "a"), kept(cache, "b"), kept(cache, "c")
    assert cache.get(digest_of("a")) == a  # b is now the least recently used
    d = kept(cache, "d")
    assert len(cache) == 3
    assert cache.get(digest_of("b")) is None
    assert [cache.get(digest_of(name)) for name in "acd"] == [a, c, d]


def test_a_dropped_entry_is_no_longer_found_by_its_token(cache: CallerCache) -> None:
    first = kept(cache, "a")
    for name in "bcd":
        kept(cache, name)
    cache.forget(first.token_id)  # nothing left to drop: no error
    assert len(cache) == 3


def test_a_size_of_zero_keeps_nothing(time: FakeTime) -> None:
    disabled = CallerCache(max_entries=0, ttl_seconds=TTL, now=time)
    disabled.trust()
    kept(disabled, "a")
    assert len(disabled) == 0
    assert disabled.get(digest_of("a")) is None


def test_a_token_stored_again_under_a_new_digest_is_forgotten_by_its_id(
    cache: CallerCache,
) -> None:
    stored = kept(cache, "a")
    cache.put(digest_of("b"), stored, cache.generation)
    cache.put(digest_of("a"), caller("other"), cache.generation)
    cache.forget(stored.token_id)
    assert cache.get(digest_of("b")) is None


def test_a_token_notification_not_understood_forgets_every_token_and_checks_the_streams(
    cache: CallerCache,
) -> None:
    """It might have been a revocation."""
    checks: list[None] = []
    subscription = token_changes(
        cache, revoked=lambda _: None, check_tokens=lambda: checks.append(None)
    )
    kept(cache, "a")
    subscription.missed()
    assert len(cache) == 0
    assert len(checks) == 1


UNKNOWN_TTL = 2.0


@pytest.fixture
def refusing(time: FakeTime) -> CallerCache:
    """A cache that remembers refused tokens for UNKNOWN_TTL seconds."""
    trusted = CallerCache(max_entries=3, ttl_seconds=TTL, unknown_ttl_seconds=UNKNOWN_TTL, now=time)
    trusted.trust()
    return trusted


def test_a_refused_token_is_refused_unasked_briefly(refusing: CallerCache, time: FakeTime) -> None:
    refusing.put_unknown(digest_of("made-up"), refusing.generation)
    assert refusing.is_unknown(digest_of("made-up"))
    assert not refusing.is_unknown(digest_of("other"))
    # A token created meanwhile notifies no one: it works once the entry expires.
    time.seconds += UNKNOWN_TTL
    assert not refusing.is_unknown(digest_of("made-up"))


def test_refused_tokens_are_bounded_oldest_dropped_first(refusing: CallerCache) -> None:
    for name in ("a", "b", "c", "d"):
        refusing.put_unknown(digest_of(name), refusing.generation)
    assert not refusing.is_unknown(digest_of("a"))
    assert all(refusing.is_unknown(digest_of(name)) for name in ("b", "c", "d"))


def test_any_token_change_forgets_every_refusal(refusing: CallerCache) -> None:
    """A revoked token made active again by an update must work at once."""
    refusing.put_unknown(digest_of("revoked"), refusing.generation)
    refusing.forget(uuid.uuid4())
    assert not refusing.is_unknown(digest_of("revoked"))


def test_a_refusal_read_before_a_change_is_not_kept(refusing: CallerCache) -> None:
    generation = refusing.generation
    refusing.forget(uuid.uuid4())
    refusing.put_unknown(digest_of("revived"), generation)
    assert not refusing.is_unknown(digest_of("revived"))


@pytest.mark.parametrize("unknown_ttl", [0.0, UNKNOWN_TTL])
def test_refusals_are_kept_only_when_asked_and_trusted(time: FakeTime, unknown_ttl: float) -> None:
    cache = CallerCache(max_entries=3, ttl_seconds=TTL, unknown_ttl_seconds=unknown_ttl, now=time)
    cache.put_unknown(digest_of("x"), cache.generation)
    assert not cache.is_unknown(digest_of("x"))  # untrusted: nothing kept
    cache.trust()
    cache.put_unknown(digest_of("x"), cache.generation)
    assert cache.is_unknown(digest_of("x")) == (unknown_ttl > 0)
    cache.distrust()
    assert not cache.is_unknown(digest_of("x"))
