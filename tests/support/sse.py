"""Reading Server-Sent Events as Envoy's transcoder frames them: each message
one `data: <JSON>` line, then a blank line, and nothing else."""

import json
from collections.abc import Iterator
from typing import Any

import httpx

DATA = "data: "


def messages(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Each event's JSON as it arrives, until the stream ends; fails on any
    line that is not an event's data or the blank line after it."""
    for line in response.iter_lines():
        if line.startswith(DATA):
            yield json.loads(line.removeprefix(DATA))
        elif line:
            raise AssertionError(f"not Server-Sent Events framing: {line!r}")


def kind(message: dict[str, Any]) -> str:
    """What a watch message carries: `process`, `event`, `heartbeat` or
    `error`, or `change` for an organization stream's process and event."""
    return next(iter(message)) if len(message) == 1 else "change"
