"""Paging, the same for every list: page sizes, offsets and page tokens.

A page token holds the position of a page's last item in the list's order
(a time and an id, which breaks ties in time) and a fingerprint of the
filters it was issued for, as base64url JSON. It is not signed: a forged
token can only choose where a listing of the caller's own organization
starts.
"""

import base64
import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from server.domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_TOKEN_LENGTH = 200

T = TypeVar("T")


def split_page(matches: Sequence[T], limit: int) -> tuple[list[T], T | None]:
    """The items to show from up to `limit + 1` matches read in order, and the
    last shown item if another page follows (the extra match says so)."""
    shown = list(matches[:limit])
    return shown, (shown[-1] if len(matches) > limit else None)


def check_window(limit: int | None, offset: int | None, max_limit: int) -> tuple[int, int]:
    """The page size (1 to `max_limit`) and offset of a list request; None
    means "not given"."""
    if limit is None:
        limit = DEFAULT_PAGE_SIZE
    elif not 1 <= limit <= max_limit:
        raise InvalidArgument("limit", f"must be between 1 and {max_limit}, got {limit}")
    if offset is None:
        offset = 0
    elif offset < 0:
        raise InvalidArgument("offset", f"must be 0 or more, got {offset}")
    return limit, offset


def fingerprint(filters: list[str | None]) -> str:
    """Identifies a listing's filters, which its page tokens must not change."""
    return hashlib.sha256(json.dumps(filters).encode()).hexdigest()[:16]


def make_page_token(filters_fingerprint: str, moment: datetime, item_id: uuid.UUID) -> str:
    """The token for the page after the item at (`moment`, `item_id`)."""
    position = [filters_fingerprint, moment.isoformat(), str(item_id)]
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def read_page_token(
    token: str, *, offset: int, filters_fingerprint: str, filters: str
) -> tuple[datetime, uuid.UUID]:
    """The position a page token continues after, if it was issued for these
    filters (described as `filters` in the error) and comes without an offset."""
    if offset:
        raise InvalidArgument("offset", "cannot be combined with page_token; leave it out")
    malformed = InvalidArgument("page_token", "malformed; pass a next_page_token unchanged")
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise malformed
    try:
        padded = token + "=" * (-len(token) % 4)
        issued_for, moment_text, item_id = json.loads(base64.urlsafe_b64decode(padded))
        moment, item = datetime.fromisoformat(moment_text), uuid.UUID(item_id)
    except (ValueError, TypeError, AttributeError):
        raise malformed from None
    if moment.tzinfo is None:
        raise malformed
    if issued_for != filters_fingerprint:
        raise InvalidArgument("page_token", f"was issued for other {filters}; keep them unchanged")
    return moment, item
