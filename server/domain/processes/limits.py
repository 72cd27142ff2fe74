"""Validation and limits of what a process holds: the bounds the protos
declare (server/domain/declared.py, generated from their options), and those
only the server knows, which keep every accepted process servable."""

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from server.domain import declared
from server.domain.checks import check_text
from server.domain.errors import InvalidArgument

# Text lengths count characters (Unicode code points); byte sizes count UTF-8.
MAX_NAME_LENGTH = declared.CREATE_PROCESS_REQUEST_NAME_MAX_LENGTH
MAX_SEARCH_LENGTH = declared.LIST_PROCESSES_REQUEST_SEARCH_MAX_LENGTH
MAX_LABEL_LENGTH = declared.STEP_DEF_LABEL_MAX_LENGTH
MAX_STEP_KEY_LENGTH = declared.STEP_DEF_KEY_MAX_LENGTH
MAX_STEPS = declared.CREATE_PROCESS_REQUEST_STEP_DEFS_MAX_ITEMS
MIN_TIMEOUT_SECONDS = declared.STEP_DEF_TIMEOUT_SECONDS_MINIMUM
MAX_TIMEOUT_SECONDS = declared.STEP_DEF_TIMEOUT_SECONDS_MAXIMUM
# The texts an update may carry, by field.
MAX_UPDATE_TEXT_LENGTH = {
    "step": declared.UPDATE_PROCESS_REQUEST_STEP_MAX_LENGTH,
    "detail": declared.UPDATE_PROCESS_REQUEST_DETAIL_MAX_LENGTH,
    "error": declared.UPDATE_PROCESS_REQUEST_ERROR_MAX_LENGTH,
    "message": declared.UPDATE_PROCESS_REQUEST_MESSAGE_MAX_LENGTH,
    "summary": declared.UPDATE_PROCESS_REQUEST_SUMMARY_MAX_LENGTH,
}
MAX_REASON_LENGTH = declared.CANCEL_PROCESS_REQUEST_REASON_MAX_LENGTH
MAX_LIST_LIMIT = declared.LIST_PROCESSES_REQUEST_LIMIT_MAXIMUM
MIN_PERCENT = declared.UPDATE_PROCESS_REQUEST_PERCENT_MINIMUM
MAX_PERCENT = declared.UPDATE_PROCESS_REQUEST_PERCENT_MAXIMUM
MAX_DATA_BYTES = 64 * 1024  # `data` as compact JSON
# Levels of objects and arrays in `data`, itself included. Protobuf decoders
# stop at 100 levels of messages by default, and each level of JSON costs up
# to three of them in a google.protobuf.Struct (Struct, map entry, Value):
# 20 levels stay well clear of that in a request and in a Process alike.
MAX_DATA_DEPTH = 20
# All the text and data one process holds (see `stored_bytes`). Whatever is
# accepted must be served: as JSON Envoy escapes a character into at most 6
# bytes, and protobuf encodes a one-byte JSON number in at most 11, so a
# process within this budget reads back in about 3 MiB either way, inside
# gRPC's default 4 MiB message limit and Envoy's response buffer
# (server/edge/envoy.yaml, max_response_body_size).
MAX_PROCESS_BYTES = 512 * 1024
STEP_KEY = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_STEP_KEY_LENGTH - 1}}}")
_ORG_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
DEFAULT_EVENTS_PAGE_SIZE = 100
MAX_EVENTS_PAGE_SIZE = declared.LIST_PROCESS_EVENTS_REQUEST_LIMIT_MAXIMUM
# What one read of the event log returns at most, besides its first event
# (which always comes, so that paging makes progress): the events' payloads
# as PostgreSQL writes them in JSON, plus EVENT_OVERHEAD_BYTES each. JSON
# through Envoy escapes a character into at most 6 bytes, and protobuf
# encodes a one-byte JSON number in at most 11, so a page reads back in
# under 3 MiB either way: inside gRPC's default 4 MiB message limit and
# Envoy's response buffer (server/edge/envoy.yaml, max_response_body_size). A
# single event holds far less (its texts and `data` are bounded).
MAX_EVENTS_PAGE_BYTES = 256 * 1024
# An event's own fields beside its payload (seq, type, step, timestamp), as
# the page's byte budget counts them.
EVENT_OVERHEAD_BYTES = 128

JsonObject = dict[str, Any]


def validate_org_id(org_id: str) -> str:
    if not _ORG_ID.fullmatch(org_id):
        raise InvalidArgument(
            "org", "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )
    return org_id


def check_data(data: JsonObject) -> None:
    if _nests_deeper(data, MAX_DATA_DEPTH):
        raise InvalidArgument("data", DATA_TOO_DEEP)
    for text in _strings_in(data):
        check_text("data", text, max_length=MAX_DATA_BYTES)
    try:
        size = json_bytes(data)
    except ValueError:
        raise InvalidArgument("data", "numbers must be finite (no NaN or Infinity)") from None
    if size > MAX_DATA_BYTES:
        raise InvalidArgument(
            "data", f"must be at most {MAX_DATA_BYTES} bytes of JSON (UTF-8), got {size}"
        )


DATA_TOO_DEEP = f"must nest at most {MAX_DATA_DEPTH} levels of objects and arrays"


def _nests_deeper(value: Any, levels: int) -> bool:
    """Whether `value` holds more than `levels` levels of objects and arrays."""
    if isinstance(value, dict):
        children: Iterable[Any] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels == 0 or any(_nests_deeper(child, levels - 1) for child in children)


def json_bytes(value: Any) -> int:
    """The size of `value` as compact JSON in UTF-8, as `data` is measured."""
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return len(compact.encode())


def _strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON value, object keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings_in(item)


def text_bytes(*texts: str | None) -> int:
    """The size of the texts in UTF-8, as MAX_PROCESS_BYTES counts them."""
    return sum(len(text.encode()) for text in texts if text is not None)
