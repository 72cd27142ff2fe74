"""Idempotency keys: a client's name for one write, so that retrying it is safe.

A retry with the same key and the same request gets the first response
again; the key reused for a different request is a conflict.
"""

import re
from dataclasses import dataclass
from datetime import timedelta

from server.domain.errors import AlreadyExists, InvalidArgument

MAX_KEY_LENGTH = 200
# Printable ASCII without spaces, as in HTTP header values people copy around.
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")


@dataclass(frozen=True)
class IdempotencyKey:
    org_id: str
    key: str
    # A digest of the method and the request, telling a retry from a reuse.
    request_fingerprint: bytes


def idempotency_key(org_id: str, key: str, request_fingerprint: bytes) -> IdempotencyKey:
    if not _KEY.fullmatch(key):
        raise InvalidArgument(
            "idempotency-key",
            f"must be 1-{MAX_KEY_LENGTH} printable ASCII characters without spaces",
        )
    return IdempotencyKey(org_id, key, request_fingerprint)


@dataclass(frozen=True)
class RememberedRequest:
    """What is stored under a key: the first request's fingerprint and response."""

    request_fingerprint: bytes
    response: bytes
    age: timedelta


def replay(
    key: IdempotencyKey, remembered: RememberedRequest, retention: timedelta
) -> bytes | None:
    """The response to repeat for a retry, or None when the key has expired and is free again."""
    if remembered.age >= retention:
        return None
    if remembered.request_fingerprint != key.request_fingerprint:
        raise AlreadyExists(
            f"idempotency key {key.key!r} was already used for a different request;"
            " use a new key for a new request"
        )
    return remembered.response
