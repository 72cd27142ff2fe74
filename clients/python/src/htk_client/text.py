"""Text from the server, made safe for a terminal, and the few formats the
views share."""

import unicodedata
from datetime import UTC, datetime
from typing import Any

# Characters that reorder what a terminal shows (bidirectional overrides and
# isolates, as in "Trojan Source"), and the line and paragraph separators,
# which break lines like a newline in many terminals and viewers, besides
# the control characters.
_ESCAPED = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)


def safe(value: Any) -> str:
    """`value` as text that prints as itself: control characters (escape
    sequences start with one), and bidirectional controls, are shown as
    escapes (`\\x1b`, `\\u202e`) instead of acting on the terminal. Line
    breaks too (U+2028 and U+2029 included): one value, one line."""
    text = "" if value is None else str(value)
    return "".join(
        ascii(char)[1:-1] if unicodedata.category(char) == "Cc" or char in _ESCAPED else char
        for char in text
    )


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp as the API prints it (`2026-02-24T12:01:00.5Z`)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def show_time(value: str | None) -> str:
    """A timestamp to the second, in UTC."""
    if not value:
        return ""
    return parse_time(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def show_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h01m`."""
    whole = max(int(seconds), 0)
    if whole < 60:
        return f"{whole}s"
    minutes, seconds_left = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{seconds_left:02d}s"
    hours, minutes_left = divmod(minutes, 60)
    return f"{hours}h{minutes_left:02d}m"
